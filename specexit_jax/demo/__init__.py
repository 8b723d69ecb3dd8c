"""Tiny synthetic reasoning task, its tokenizer, and the demo model built on them.

The demo checkpoints ship inside the package (`assets/target`, with the tokenizer, and
`assets/draft`); `tools/build_demo.py` rebuilds them from nothing.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

EXIT = {"smoothing": "boundary", "confidence": 0.6, "surprise": 0.2}
"""The exit policy picked for the demo model on held-out problems (`tools/exit_sweep.py`):
`python -m specexit_jax.decode` and `python -m specexit_jax.eval` use it with the bundled model
unless flags say otherwise."""

GENERIC_EXIT = {"smoothing": "ewma", "confidence": 0.8, "surprise": None}
"""The defaults for any other model."""


def exit_policy(demo: bool, smoothing=None, confidence=None, surprise=None) -> dict:
    """Smoothing, confidence threshold and surprise veto: the given values (None: not given), else
    the demo's tuned policy (`demo=True`, the bundled model) or the generic defaults. A surprise
    of 0 turns the veto off."""
    default = EXIT if demo else GENERIC_EXIT
    given = {"smoothing": smoothing, "confidence": confidence, "surprise": surprise}
    policy = {k: default[k] if v is None else v for k, v in given.items()}
    if policy["surprise"] == 0:
        policy["surprise"] = None
    return policy


def demo_checkpoints() -> tuple[Path, Path]:
    """Paths of the bundled demo target and draft checkpoints."""
    target, draft = ASSETS / "target", ASSETS / "draft"
    if not (target / "config.json").is_file() or not (draft / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled demo model is missing under {ASSETS}; rebuild it with tools/build_demo.py"
        )
    return target, draft
