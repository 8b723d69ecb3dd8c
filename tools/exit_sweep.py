"""Pick the exit thresholds on one set of held-out demo problems, confirm them on another.

    python tools/exit_sweep.py [--tune-seed 0 --tune-limit 150] [--confirm-seed 3 --confirm-limit 300]
                               [--out runs/exit_sweep.json]

Tuning: `ar`, then `specexit` with `smoothing="boundary"` over confidence thresholds and surprise
vetoes (off, or the target-probability floor P), at temperature 1. The pick is the setting with
the fewest thinking tokens whose accuracy is within `--max-drop` of `ar`. Confirmation runs
`python -m specexit_jax.eval` on other problems with the pick: ar, spec, specexit, budget and
deer, with the oracle exit (the share of its savings each mode captures).
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
from specexit_jax.eval.__main__ import main as eval_main
from specexit_jax.exit import ExitConfig
from specexit_jax.tokenizer import Tokenizer

CONFIDENCE = (0.5, 0.6, 0.7, 0.8, 0.9)
SURPRISE = (None, 0.05, 0.1, 0.2, 0.3)


def tune(args) -> dict:
    """`ar` and every (confidence, surprise) setting on the tuning problems; returns the summaries."""
    tpath, dpath = demo_checkpoints()
    target, draft, tok = load_checkpoint(tpath), load_checkpoint(dpath), Tokenizer(tpath)
    problems = H.demo_problems(tok, args.tune_limit, args.tune_seed)
    base = ExitConfig(think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                      step_split_ids=tok.step_split_ids, smoothing="boundary")
    runs = [("ar", "ar", base, None)]
    runs += [(f"c>{c} P={p}", "specexit", dataclasses.replace(base, confidence=c, surprise=p), (c, p))
             for p in SURPRISE for c in CONFIDENCE]
    bar = tqdm(total=len(runs) * len(problems), file=sys.stderr)
    records = H.run_arms({name: (mode, H.ModeSettings(ex)) for name, mode, ex, _ in runs}, problems, target, draft,
                         tok.decode, max_new_tokens=args.max_new_tokens, num_draft_tokens=4,
                         eos_ids=tok.eos_ids, temperature=args.temperature, seed=args.tune_seed, progress=bar.update)
    bar.close()
    out = {name: dict(H.summarize(records[name]), setting=setting) for name, _, _, setting in runs}
    H.add_speedups(out)
    return out


def pick(runs: dict, max_drop: float) -> tuple[float, float | None]:
    """The setting with the fewest thinking tokens within `max_drop` accuracy of `ar`."""
    floor = runs["ar"]["accuracy"] - max_drop
    ok = [r for r in runs.values() if r["setting"] is not None and r["accuracy"] >= floor - 1e-9]
    if not ok:
        raise SystemExit(f"no setting keeps accuracy >= {floor:.3f}; widen the grid or --max-drop")
    return min(ok, key=lambda r: r["think_tokens"])["setting"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--tune-limit", type=int, default=150)
    ap.add_argument("--confirm-seed", type=int, default=3)
    ap.add_argument("--confirm-limit", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--max-drop", type=float, default=0.01, help="accuracy below ar allowed when picking")
    ap.add_argument("--budget-tokens", type=int, default=64)
    ap.add_argument("--out", help="write the tuning JSON here")
    args = ap.parse_args(argv)
    if args.tune_seed == args.confirm_seed:
        ap.error("--tune-seed and --confirm-seed must differ (the confirmation must be held out)")
    runs = tune(args)
    for name, r in runs.items():
        print(f"{name:<16} acc {r['accuracy']:.3f}  think {r['think_tokens']:6.1f}  "
              f"latency {1000 * r['latency_s']:6.1f} ms  x{r['speedup_vs_ar']:.2f} vs ar")
    conf, surprise = pick(runs, args.max_drop)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tune_seed": args.tune_seed, "runs": runs, "pick": [conf, surprise]}, f, indent=1)
    confirm = ["--temperature", str(args.temperature), "--oracle", "--seed", str(args.confirm_seed),
               "--limit", str(args.confirm_limit), "--max-new-tokens", str(args.max_new_tokens),
               "--modes", "ar,spec,specexit,budget,deer", "--smoothing", "boundary",
               "--exit-confidence", str(conf), "--budget-tokens", str(args.budget_tokens)]
    confirm += ["--exit-surprise", str(0 if surprise is None else surprise)]  # 0: off (not the demo's default)
    print("confirming: python -m specexit_jax.eval " + " ".join(confirm), flush=True)
    return eval_main(confirm)


if __name__ == "__main__":
    sys.exit(main())
