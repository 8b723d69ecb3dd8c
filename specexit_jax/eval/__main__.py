"""`python -m specexit_jax.eval`: accuracy, thinking tokens and latency of every decode mode.

    python -m specexit_jax.eval                               # the bundled demo model and task
    python -m specexit_jax.eval --benchmark gsm8k --target CKPT --draft CKPT --limit 50
"""

from __future__ import annotations

import argparse
import json
import sys

from specexit_jax.draft import SIGNALS
from specexit_jax.engine import MODES
from specexit_jax.exit import SMOOTHING

BENCHMARK_CHOICES = ("demo", "gsm8k", "math500", "aime24", "aime25", "aime")


def _parse(argv):
    ap = argparse.ArgumentParser(
        prog="python -m specexit_jax.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--benchmark", default="demo", choices=BENCHMARK_CHOICES)
    ap.add_argument("--target", help="target checkpoint (default: the bundled demo)")
    ap.add_argument("--draft", help="draft checkpoint (default: the bundled demo)")
    ap.add_argument("--modes", default="ar,spec,specexit,budget,deer", help="comma-separated modes")
    ap.add_argument("--limit", type=int, default=50, help="number of problems (default 50)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed and demo problem seed")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each problem N times and keep the fastest run (steadier latencies on a busy machine)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 512 (demo), 4096")
    ap.add_argument("--num-draft-tokens", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    ap.add_argument("--exit-confidence", type=float, default=None,
                    help="default 0.8; the bundled demo model: its tuned policy (specexit_jax.demo.EXIT)")
    ap.add_argument("--exit-progress", type=float, default=0.3)
    ap.add_argument("--exit-remain", type=float, default=200.0)
    ap.add_argument("--exit-signals", default=",".join(SIGNALS), help="signals that must pass")
    ap.add_argument("--exit-surprise", type=float, default=None, metavar="P",
                    help="veto signal exits after a thinking token with target probability < P "
                    "(default off; 0 is off; the bundled demo model: 0.2)")
    ap.add_argument("--smoothing", choices=SMOOTHING, default=None, help="default ewma; the bundled demo model: boundary")
    ap.add_argument("--ewma", type=float, default=0.1)
    ap.add_argument("--smooth-window", type=int, default=8, help="positions with --smoothing window")
    ap.add_argument("--min-think-tokens", type=int, default=0, help="no exit before N thinking tokens")
    ap.add_argument("--budget-tokens", type=int, default=None, help="budget mode's thinking limit")
    ap.add_argument("--deer-threshold", type=float, default=0.95, help="DEER answer confidence")
    ap.add_argument("--oracle", action="store_true", help="probe AR traces for the oracle exit")
    ap.add_argument("--plot", help="write accuracy/thinking/latency plots to this PNG")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        ap.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.temperature < 0:
        ap.error("--temperature must be >= 0")
    args.modes = modes
    args.exit_signals = tuple(n for n in args.exit_signals.split(",") if n)
    return args


def _problems(args, tok):
    from specexit_jax.eval.harness import EvalProblem, demo_problems

    if args.benchmark == "demo":
        return demo_problems(tok, args.limit, args.seed)
    from specexit_jax.eval import benchmarks as bm

    return [
        EvalProblem(
            p.id,
            tok.chat_prompt(bm.format_question(p)),
            lambda text, p=p: bm.grade(args.benchmark, text, p.answer),
        )
        for p in bm.load_benchmark(args.benchmark, limit=args.limit)
    ]


def _table(result: dict) -> str:
    cols = ("accuracy", "think_tokens", "total_tokens", "latency_ms", "tau", "speedup_vs_ar", "speedup_vs_spec")
    lines = [f"{'mode':<9}" + "".join(f"{c:>16}" for c in cols)]
    for name, m in result["modes"].items():
        m = {**m, "latency_ms": 1e3 * m["latency_s"]}
        cells = "".join(f"{m[c]:>16.3f}" if c in m else f"{'-':>16}" for c in cols)
        lines.append(f"{name:<9}{cells}")
    o = result.get("oracle")
    if o:
        lines.append(
            f"oracle: {o['oracle_think_tokens']:.1f} thinking tokens (AR {o['ar_think_tokens']:.1f}); "
            f"{o['post_answer_fraction']:.1%} of AR thinking comes after the settled answer; "
            f"first boundary wrong in {o['first_boundary_wrong']:.1%}"
        )
        lines.append(
            "share of oracle savings captured: "
            + ", ".join(f"{k} {v:.1%}" for k, v in o["captured"].items())
        )
    return "\n".join(lines)


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["modes"])
    ms = [result["modes"][n] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for n, m in zip(names, ms):
        a.scatter(m["think_tokens"], 100 * m["accuracy"], s=60)
        a.annotate(n, (m["think_tokens"], 100 * m["accuracy"]), textcoords="offset points", xytext=(5, 5))
    if result.get("oracle"):
        a.axvline(result["oracle"]["oracle_think_tokens"], ls="--", c="grey", label="oracle exit")
        a.legend()
    a.set_xlabel("mean thinking tokens")
    a.set_ylabel("accuracy (%)")
    a.set_title(f"{result['benchmark']}: accuracy vs thinking")
    b.bar(names, [1000 * m["latency_s"] for m in ms], color="tab:blue")
    b.set_ylabel("mean latency per problem (ms)")
    b.set_title("latency per mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        from tqdm import tqdm

        from specexit_jax.checkpoint import load_checkpoint
        from specexit_jax.demo import exit_policy
        from specexit_jax.eval import harness as H
        from specexit_jax.exit import ExitConfig
        from specexit_jax.tokenizer import Tokenizer

        if args.target is None:
            from specexit_jax.demo import demo_checkpoints

            tpath, dpath = demo_checkpoints()
            dpath = args.draft or dpath
        else:
            tpath, dpath = args.target, args.draft
        if dpath is None and any(m in ("spec", "specexit") for m in args.modes):
            raise ValueError("modes spec/specexit need --draft")
        target = load_checkpoint(tpath)
        draft = load_checkpoint(dpath) if dpath else None
        tok = Tokenizer(tpath)
        problems = _problems(args, tok)
        demo = args.benchmark == "demo"
        max_new = args.max_new_tokens or (512 if demo else 4096)
        policy = exit_policy(args.target is None, args.smoothing, args.exit_confidence, args.exit_surprise)
        ex = ExitConfig(
            confidence=policy["confidence"],
            progress=args.exit_progress,
            remain=args.exit_remain,
            signals=args.exit_signals,
            smoothing=policy["smoothing"],
            ewma=args.ewma,
            window=args.smooth_window,
            surprise=policy["surprise"],
            min_think_tokens=args.min_think_tokens,
            think_start_id=tok.think_start_id,
            think_end_id=tok.think_end_id,
            step_split_ids=tok.step_split_ids,
        )
        settings = H.ModeSettings(
            exit=ex,
            budget_tokens=args.budget_tokens or (48 if demo else 2048),
            deer_threshold=args.deer_threshold,
            deer_probe_ids=tuple(tok.encode("\n\nanswer:" if demo else "\n\n**Final Answer**\n\\boxed{")),
        )
        bar = tqdm(total=len(problems) * len(args.modes), desc="eval", file=sys.stderr, disable=args.json)
        records = H.run_modes(
            args.modes, problems, target, draft, tok.decode, settings,
            max_new_tokens=max_new, num_draft_tokens=args.num_draft_tokens,
            eos_ids=tok.eos_ids, temperature=args.temperature, seed=args.seed, repeats=args.repeats,
            progress=bar.update,
        )
        bar.close()
        modes = {mode: H.summarize(recs) for mode, recs in records.items()}
        H.add_speedups(modes)
        result = {"benchmark": args.benchmark, "n": len(problems), "temperature": args.temperature, "modes": modes}
        if args.oracle:
            ar = records.get("ar") or H.run_mode(
                "ar", problems, target, None, tok.decode, settings,
                max_new_tokens=max_new, num_draft_tokens=args.num_draft_tokens, eos_ids=tok.eos_ids,
                temperature=args.temperature, seed=args.seed,
            )
            oracle = H.oracle_exits(
                problems, ar, target, tok.decode, think_end_id=tok.think_end_id,
                step_split_ids=tok.step_split_ids, eos_ids=tok.eos_ids,
            )
            result["oracle"] = H.oracle_summary(ar, oracle, modes)
        if args.plot:
            _plot(result, args.plot)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
