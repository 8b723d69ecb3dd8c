"""Accuracy against thinking tokens and latency for every exit method, over its own knob.

    python tools/sweep_demo.py [--limit 100] [--temperature 1.0] [--out runs/sweep.json --plot runs/sweep.png]

On the demo task (held-out problems) with the bundled models: `ar` and `spec` once, then
`specexit` with EWMA smoothing over confidence thresholds and smoothing rates, `specexit` with
boundary judging and the surprise veto over confidence thresholds, `budget` over thinking limits
and `deer` over answer-confidence thresholds, all in one run on the same problems (batch 1,
warmed up; every setting of a problem runs before the next problem, so latencies compare
fairly on a shared machine). Comparing methods at equal accuracy needs these curves, not one setting each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from tqdm import tqdm

from specexit_jax.checkpoint import load_checkpoint
from specexit_jax.demo import demo_checkpoints
from specexit_jax.eval import harness as H
from specexit_jax.exit import ExitConfig
from specexit_jax.tokenizer import Tokenizer

SPECEXIT = [(0.8, 0.1), (0.7, 0.2), (0.6, 0.3), (0.5, 0.5)]  # (confidence threshold, ewma)
BOUNDARY = [0.95, 0.9, 0.6]  # confidence thresholds with smoothing="boundary", surprise=SURPRISE
SURPRISE = 0.2
BUDGETS = [24, 32, 48, 64, 96]
DEER = [0.95, 0.99, 0.999]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--plot", help="write the PNG here")
    args = ap.parse_args(argv)
    tpath, dpath = demo_checkpoints()
    target, draft, tok = load_checkpoint(tpath), load_checkpoint(dpath), Tokenizer(tpath)
    problems = H.demo_problems(tok, args.limit, args.seed)
    base = ExitConfig(think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                      step_split_ids=tok.step_split_ids)
    runs = [("ar", "ar", "ar", H.ModeSettings(base)), ("spec", "spec", "spec", H.ModeSettings(base))]
    runs += [(f"specexit c>{c} a={a}", "specexit", "specexit (EWMA)",
              H.ModeSettings(dataclasses.replace(base, confidence=c, ewma=a))) for c, a in SPECEXIT]
    runs += [(f"specexit boundary c>{c} P={SURPRISE}", "specexit", "specexit (boundary, veto)",
              H.ModeSettings(dataclasses.replace(base, smoothing="boundary", confidence=c, surprise=SURPRISE)))
             for c in BOUNDARY]
    runs += [(f"budget {b}", "budget", "budget", H.ModeSettings(base, budget_tokens=b)) for b in BUDGETS]
    probe = tuple(tok.encode("\n\nanswer:"))
    runs += [(f"deer {t}", "deer", "deer", H.ModeSettings(base, deer_threshold=t, deer_probe_ids=probe))
             for t in DEER]
    bar = tqdm(total=len(runs) * len(problems), file=sys.stderr)
    records = H.run_arms({name: (mode, settings) for name, mode, _, settings in runs}, problems, target, draft,
                         tok.decode, max_new_tokens=args.max_new_tokens, num_draft_tokens=4,
                         eos_ids=tok.eos_ids, temperature=args.temperature, seed=args.seed, progress=bar.update)
    bar.close()
    result = {"n": len(problems), "temperature": args.temperature,
              "runs": {name: dict(H.summarize(records[name]), mode=mode, method=method)
                       for name, mode, method, _ in runs}}
    H.add_speedups(result["runs"])
    for name, r in result["runs"].items():
        print(f"{name:<34} acc {r['accuracy']:.2f}  think {r['think_tokens']:6.1f}  "
              f"latency {1000 * r['latency_s']:6.1f} ms  x{r['speedup_vs_ar']:.2f} vs ar  x{r['speedup_vs_spec']:.2f} vs spec")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    return 0


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"ar": "ks", "spec": "k^", "specexit (EWMA)": "o-", "specexit (boundary, veto)": "o-",
              "budget": "s--", "deer": "d:"}
    for method, style in styles.items():
        rs = [r for r in result["runs"].values() if r["method"] == method]
        for ax, x in zip(axes, ("think_tokens", "latency_s")):
            xs = [r[x] * (1000 if x == "latency_s" else 1) for r in rs]
            ax.plot(xs, [100 * r["accuracy"] for r in rs], style, label=method)
    axes[0].set_xlabel("mean thinking tokens")
    axes[1].set_xlabel("mean latency per problem (ms)")
    for ax in axes:
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"demo task, {result['n']} held-out problems, temperature {result['temperature']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
