"""Tiny synthetic reasoning task, its tokenizer, and the demo model built on them.

The demo checkpoints ship inside the package (`assets/target`, with the tokenizer, and
`assets/draft`); `tools/build_demo.py` rebuilds them from nothing.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

EXIT = {"smoothing": "boundary", "confidence": 0.6, "surprise": 0.2}
"""The exit policy picked for the demo model on held-out problems (`tools/exit_sweep.py`):
`python -m specexit_jax.decode` uses it with the bundled model unless flags say otherwise."""


def demo_checkpoints() -> tuple[Path, Path]:
    """Paths of the bundled demo target and draft checkpoints."""
    target, draft = ASSETS / "target", ASSETS / "draft"
    if not (target / "config.json").is_file() or not (draft / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled demo model is missing under {ASSETS}; rebuild it with tools/build_demo.py"
        )
    return target, draft
