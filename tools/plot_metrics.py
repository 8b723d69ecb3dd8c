"""Plot training curves from a run's `metrics.jsonl` (written by `python -m specexit_jax.train`).

One panel per metric, train and eval curves on the same axes, steps on x. By default the panels
are the losses, the per-step top-1 agreement, the signal errors and the confidence AUROC that the
file holds; `--metrics` picks others (comma-separated names, as in the file).

    python tools/plot_metrics.py --metrics-file runs/tiny_draft/metrics.jsonl --out curves.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_PATTERNS = ("loss", "top1_step", "_mae", "auroc", "accuracy")


def read_metrics(path: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{split: {metric: [(step, value), ...]}}` from a metrics JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step, split = int(row["step"]), str(row["split"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path}:{i}: not a metrics line (needs step and split)") from None
        for k, v in row.items():
            if k not in ("step", "split") and isinstance(v, (int, float)) and math.isfinite(v):
                curves.setdefault(split, {}).setdefault(k, []).append((step, float(v)))
    if not curves:
        raise ValueError(f"{path}: no metrics")
    return curves


def pick_metrics(curves: dict, wanted: list[str] | None) -> list[str]:
    """The metrics to draw: `wanted` (each must exist) or the default families, sorted."""
    names = sorted({m for split in curves.values() for m in split})
    if wanted:
        missing = [m for m in wanted if m not in names]
        if missing:
            raise ValueError(f"no metric {missing[0]!r} in the file (has: {', '.join(names)})")
        return wanted
    return [m for m in names if any(p in m for p in DEFAULT_PATTERNS)] or names


def plot(curves: dict, metrics: list[str], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        for split, style in (("train", "-"), ("eval", "o--")):
            points = curves.get(split, {}).get(name)
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plot loss and metric curves of a training run to PNG.")
    p.add_argument("--metrics-file", required=True, help="the run's metrics.jsonl")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--metrics", help="comma-separated metric names (default: losses, top-1, errors, AUROC)")
    args = p.parse_args(argv)
    path = Path(args.metrics_file)
    try:
        curves = read_metrics(path)
        metrics = pick_metrics(curves, [m for m in (args.metrics or "").split(",") if m])
        plot(curves, metrics, Path(args.out), str(path))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(metrics)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
