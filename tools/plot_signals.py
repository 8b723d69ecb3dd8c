"""Render a SpecExit trace: the generated text coloured by the draft's exit signals.

Input is the JSON printed by `python -m specexit_jax.decode --json --record-signals`. Each token
is drawn on a background whose colour is its (smoothed) signal: progress by default, or
confidence / remain. The place where thinking was cut is marked. Writes HTML and/or PNG.

    python tools/plot_signals.py --trace out.json --tokenizer CKPT --html t.html --png t.png
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

SIGNALS = ("confidence", "progress", "remain")


def load_trace(path: str, row: int) -> tuple[list[int], dict]:
    """Tokens and stats of one row of a `decode --json --record-signals` output."""
    obj = json.loads(Path(path).read_text())
    try:
        tokens, stats = obj["tokens"][row], obj["stats"][row]
    except (KeyError, IndexError):
        raise ValueError(f"{path}: no row {row} with tokens and stats") from None
    if "signals" not in stats:
        raise ValueError(f"{path}: row {row} has no per-token signals (decode with --record-signals)")
    return tokens, stats


def token_texts(tokens: list[int], tokenizer_dir: str | None) -> list[str]:
    """The text of each token (ids in brackets without a tokenizer)."""
    if tokenizer_dir is None:
        return [f"[{t}]" for t in tokens]
    from specexit_jax.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer_dir)
    return [tok.decode([t]) for t in tokens]


def normalise(values: list[float], signal: str) -> list[float]:
    """Map a signal to [0, 1] for colouring (remain on a log scale, fewer tokens = warmer)."""
    if signal != "remain":
        return [min(max(v, 0.0), 1.0) for v in values]
    import math

    logs = [math.log1p(max(v, 0.0)) for v in values]
    hi = max(logs) or 1.0
    return [1.0 - x / hi for x in logs]


def render_html(texts, shades, values, signal, exit_at) -> str:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    spans = []
    for i, (t, s, v) in enumerate(zip(texts, shades, values)):
        r, g, b, _ = cmap(s)
        fg = "#000" if s > 0.5 else "#fff"
        mark = ' style="outline:2px solid red"' if i == exit_at else ""
        body = html.escape(t).replace("\n", "↵<br>")
        spans.append(
            f'<span title="{signal}={v:.3f}"{mark}><span style="background:rgb({r*255:.0f},'
            f'{g*255:.0f},{b*255:.0f});color:{fg}">{body}</span></span>'
        )
    return (
        "<!doctype html><meta charset=utf-8><title>SpecExit signals</title>"
        f"<p>colour = smoothed {signal} (viridis; red outline = forced exit)</p>"
        '<div style="font-family:monospace;line-height:1.6">' + "".join(spans) + "</div>"
    )


def render_png(texts, shades, signal, exit_at, path: str, width: int = 100) -> None:
    """Lay the tokens out in lines of about `width` characters on a coloured grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    lines, col, row = [], 0, 0
    for i, t in enumerate(texts):
        for j, part in enumerate(t.split("\n")):
            if j:
                row, col = row + 1, 0
            if part:
                lines.append((row, col, part, shades[i], i == exit_at))
                col += len(part)
                if col > width:
                    row, col = row + 1, 0
    n_rows = row + 1
    fig, ax = plt.subplots(figsize=(width * 0.1 + 1, n_rows * 0.22 + 1))
    for r, c, text, s, is_exit in lines:
        ax.text(
            c, -r, text, family="monospace", fontsize=8, va="top",
            color="black" if s > 0.5 else "white",
            bbox=dict(facecolor=cmap(s), edgecolor="red" if is_exit else "none", pad=0.6),
        )
    ax.set_xlim(0, width + 10)
    ax.set_ylim(-n_rows - 1, 1)
    ax.axis("off")
    ax.set_title(f"smoothed {signal} per token (viridis){'; red box = forced exit' if exit_at >= 0 else ''}")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", required=True, help="JSON from `decode --json --record-signals`")
    ap.add_argument("--tokenizer", help="folder with the tokenizer (e.g. the target checkpoint)")
    ap.add_argument("--row", type=int, default=0, help="which prompt of the batch (default 0)")
    ap.add_argument("--signal", choices=SIGNALS, default="progress")
    ap.add_argument("--raw", action="store_true", help="colour by raw, not smoothed, signals")
    ap.add_argument("--html", help="write an HTML page here")
    ap.add_argument("--png", help="write a PNG image here")
    args = ap.parse_args(argv)
    if not (args.html or args.png):
        ap.error("give --html and/or --png")
    try:
        tokens, stats = load_trace(args.trace, args.row)
        texts = token_texts(tokens, args.tokenizer)
    except (ValueError, FileNotFoundError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    k = SIGNALS.index(args.signal)
    per_token = stats["signals"]["raw" if args.raw else "smoothed"]
    values = [v[k] for v in per_token]
    shades = normalise(values, args.signal)
    exit_at = stats.get("exit_position", -1) if stats.get("exit_reason") in ("signal", "budget") else -1
    if args.html:
        Path(args.html).write_text(render_html(texts, shades, values, args.signal, exit_at))
    if args.png:
        render_png(texts, shades, args.signal, exit_at, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
