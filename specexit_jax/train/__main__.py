"""`python -m specexit_jax.train --config configs/NAME.yaml [--resume] [--set key=value ...]`."""

from __future__ import annotations

import argparse
import json
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(
        prog="python -m specexit_jax.train",
        description="Train an EAGLE-3 draft with SpecExit signal heads on traces (mode: draft), or a "
        "target language model from scratch (mode: lm). The YAML schema is in specexit_jax/train/config.py.",
    )
    p.add_argument("--config", required=True, help="YAML training config (e.g. configs/tiny_draft.yaml)")
    p.add_argument("--traces", help="training data file (sets data.train)")
    p.add_argument("--target", help="target checkpoint (sets target)")
    p.add_argument("--out", help="output folder (sets run.out)")
    p.add_argument("--steps", type=int, help="stop after this step (the schedule still spans optim.total_steps)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. optim.lr=3e-4"
    )
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 0:
        p.error("--steps must be >= 0")
    overrides = list(args.set)  # flags after --set; paths quoted so YAML keeps them strings
    if args.traces:
        overrides.append(f"data.train={json.dumps(args.traces)}")
    if args.out:
        overrides.append(f"run.out={json.dumps(args.out)}")
    if args.target:
        overrides += [f"target={json.dumps(args.target)}", "model=null"]

    from specexit_jax.train import config

    try:
        cfg = config.load(args.config, overrides)
    except (OSError, ValueError) as e:
        return _fail(e)

    from specexit_jax.train import trainer

    from specexit_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()
    try:
        trainer.train(cfg, stop=args.steps, resume=args.resume)
    except (OSError, ValueError) as e:
        return _fail(e)
    return 0


def _fail(e: Exception) -> int:
    text = str(e).strip()
    print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
