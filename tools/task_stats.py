"""Print calibration statistics of the demo task (a small table, then one JSON line).

Usage: ``python tools/task_stats.py --n 2000 --seed 0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from specexit_jax.demo.task import (
    FIRST_PASS_WRONG_TARGET,
    POST_ANSWER_TARGET,
    calibration_stats,
    make_dataset,
)
from specexit_jax.demo.tokenizer_build import build_backend

TARGETS = {
    "post_answer_token_fraction": POST_ANSWER_TARGET,
    "first_pass_wrong_fraction": FIRST_PASS_WRONG_TARGET,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Calibration statistics of the demo reasoning task.")
    parser.add_argument("--n", type=int, default=2000, help="number of samples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    args = parser.parse_args(argv)

    backend = build_backend()
    stats = calibration_stats(
        make_dataset(args.n, args.seed),
        lambda text: len(backend.encode(text, add_special_tokens=False).ids),
    )
    row = dataclasses.asdict(stats)
    print(f"{'statistic':<30} {'value':>10}  target")
    for name, value in row.items():
        low_high = TARGETS.get(name)
        target = f"{low_high[0]:.2f}-{low_high[1]:.2f}" if low_high else ""
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name:<30} {shown:>10}  {target}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
