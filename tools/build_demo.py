"""Rebuild the bundled demo model from nothing: target LM, traces with probes, SpecExit draft.

    python tools/build_demo.py [--work runs/demo] [--install] [--quick]

1. train the demo target from scratch on the synthetic task (configs/demo_target.yaml; about 2
   minutes on an H200 at 1.15M tokens/s; far longer on a CPU);
2. sample its own thinking traces (temperature 1, so slips and re-checks occur as in the task) and
   probe every step boundary: force `</think>`, decode the answer, grade it;
3. train the draft with signal heads on those traces (configs/demo_draft.yaml);
4. with `--install`, write both checkpoints into specexit_jax/demo/assets/ (what the package ships)
   with their params stored in bfloat16 (`--store-dtype`): they load as float32, the dtype their
   configs name, and the package stays small.

Each step is the project's own command line, so this script is also a worked example of the
pipeline for a real model. `--quick` runs every step at toy size to check the pipeline (minutes on
a CPU; the result is not a useful model). `--skip-target CKPT` starts from an existing target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT / "specexit_jax" / "demo" / "assets"


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/demo", help="working folder (default runs/demo)")
    ap.add_argument("--skip-target", metavar="CKPT", help="use this target checkpoint instead of training one")
    ap.add_argument("--train-traces", type=int, default=6144, help="training traces (default 6144)")
    ap.add_argument("--eval-traces", type=int, default=128, help="evaluation traces (default 128)")
    ap.add_argument("--trace-batch", type=int, default=256, help="rows per trace generate call (default 256)")
    ap.add_argument("--draft-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of configs/demo_draft.yaml (repeatable)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, to check the pipeline")
    ap.add_argument("--install", action="store_true", help="write the result into the package")
    ap.add_argument("--store-dtype", default="bfloat16",
                    help="dtype the installed params are stored in (default bfloat16; they load as float32)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if not work.is_absolute():
        work = ROOT / work
    n_train, n_eval = (64, 16) if args.quick else (args.train_traces, args.eval_traces)
    quick_target = ["--steps", "20", "--set", "data.train=demo:2000:0"] if args.quick else []
    quick_draft = ["--steps", "10", "--set", "data.batch_size=8"] if args.quick else []

    if args.skip_target:
        target = Path(args.skip_target)
    else:
        run("specexit_jax.train", "--config", "configs/demo_target.yaml", "--out", str(work / "target"),
            *quick_target)
        target = work / "target" / "final"
    traces = work / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 7), ("eval", n_eval, 8)):
        run("specexit_jax.traces", "--target", str(target), "--prompts", f"demo:{n}:{seed}",
            "--out", str(traces / f"{name}.jsonl"), "--max-new-tokens", "384", "--batch-size", str(args.trace_batch),
            "--temperature", "1.0", "--probe-answer-tokens", "8", "--overwrite")
    sets = [x for kv in args.draft_set for x in ("--set", kv)]
    run("specexit_jax.train", "--config", "configs/demo_draft.yaml", "--target", str(target),
        "--traces", str(traces / "train.jsonl"), "--set", f'data.eval="{traces / "eval.jsonl"}"',
        "--out", str(work / "draft"), *sets, *quick_draft)
    draft = work / "draft" / "final"
    if args.install:
        reused = target.resolve() == (ASSETS / "target").resolve()  # the shipped target stays as it is
        for src, name in ((draft, "draft"),) if reused else ((target, "target"), (draft, "draft")):
            install(src, ASSETS / name, args.store_dtype)
        print(f"installed into {ASSETS}")
    return 0


def install(src: Path, dst: Path, store_dtype: str) -> None:
    """Copy checkpoint `src` to `dst` with its floating params stored in `store_dtype`; its config
    keeps its own dtype, which loading casts them back to."""
    import jax.numpy as jnp

    from specexit_jax.checkpoint import TOKENIZER_FILES, load_checkpoint, save_checkpoint
    from specexit_jax.model import cast_params

    cfg, params = load_checkpoint(src)
    files = [src / f for f in TOKENIZER_FILES if (src / f).is_file()]
    save_checkpoint(dst, cfg, cast_params(params, jnp.dtype(store_dtype)), files, overwrite=True)


if __name__ == "__main__":
    sys.exit(main())
