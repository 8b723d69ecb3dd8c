"""The speculative-exit policy: settings and the pure per-round functions the decode loop uses.

The signals come from the draft's `fc` rows, so they cost nothing extra. How they are judged
(`smoothing`):

    ewma, window  the signals of the newly accepted positions are averaged and smoothed per row
                  across rounds; when a step-split token is among the newly accepted tokens and
                  every active smoothed signal passes its threshold, exit at the first such token
    boundary      each step-split token is judged by the signals of the feature that read it
                  (the target's feature at the boundary token, which carries that boundary's
                  training label, see `specexit_jax.train.labels`): no smoothing across steps;
                  exit at the first boundary that passes

An exit cuts the round right after the boundary token and forces `</think>` (after an optional
closing text) next.

Surprise veto (`surprise=P`): the draft cannot tell that the reasoning has slipped (its
confidence reads the text, which looks as fluent after a slip), but the target can: a slip is a
sampled token to which the target gave a low probability. Once an accepted thinking token had
target probability below `P` (at the sampling temperature, from the verify logits the round
already has), signal exits are off for the rest of that row's thinking. The veto only moves
where thinking may end; the tokens decoded are unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from specexit_jax.draft import SIGNALS
from specexit_jax.layers import take_rows
from specexit_jax.sampling import first_false

SMOOTHING = ("ewma", "window", "boundary")


@dataclasses.dataclass(frozen=True)
class ExitConfig:
    """How and when thinking may end early, and the thinking budgets.

    Token ids (`think_end_id`, `step_split_ids`, ...) come from the tokenizer (see
    `specexit_jax.tokenizer`) or, for tokenizer-less checkpoints, from the command line.
    Thresholds, smoothing rate and budgets are traced: changing them does not recompile.
    """

    signals: tuple[str, ...] = SIGNALS
    confidence: float = 0.8  # exit needs smoothed confidence > this
    progress: float = 0.3  # ... and progress > this
    remain: float = 200.0  # ... and predicted remaining thinking tokens < this
    smoothing: str = "ewma"  # one of SMOOTHING
    ewma: float = 0.1
    window: int = 8  # positions averaged with smoothing="window"
    surprise: float | None = None  # veto signal exits after a thinking token with target prob < this
    think_start_id: int | None = None
    think_end_id: int | None = None
    step_split_ids: tuple[int, ...] = ()
    min_think_tokens: int = 0
    max_think_tokens: int | None = None
    continue_below_min: bool = False  # replace a natural `</think>` before the minimum
    continue_id: int | None = None  # ... by this token (default: the first step-split id)
    closing_ids: tuple[int, ...] = ()  # inserted before a forced `</think>`
    record_signals: bool = False
    # DEER baseline (mode "deer"): at each step boundary, force `</think>` + `probe_ids`, decode
    # `probe_tokens` answer tokens greedily and exit when their mean probability passes.
    probe_ids: tuple[int, ...] = ()
    probe_tokens: int = 8
    probe_threshold: float = 0.95

    def __post_init__(self):
        bad = set(self.signals) - set(SIGNALS)
        if bad:
            raise ValueError(f"unknown exit signal(s) {sorted(bad)}; choose from {SIGNALS}")
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {self.smoothing!r}")
        if not 0.0 < self.ewma <= 1.0:
            raise ValueError(f"ewma must be in (0, 1], got {self.ewma}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.surprise is not None and not 0.0 < self.surprise < 1.0:
            raise ValueError(f"surprise must be in (0, 1) or None (off), got {self.surprise}")
        if self.min_think_tokens < 0:
            raise ValueError(f"min_think_tokens must be >= 0, got {self.min_think_tokens}")
        if self.probe_tokens < 1:
            raise ValueError(f"probe_tokens must be >= 1, got {self.probe_tokens}")
        if self.max_think_tokens is not None and self.max_think_tokens <= len(self.closing_ids):
            raise ValueError(
                f"max_think_tokens={self.max_think_tokens} leaves no room for "
                f"{len(self.closing_ids)} closing tokens"
            )

    @property
    def forced_ids(self) -> tuple[int, ...]:
        """What is forced when thinking is cut: the closing text, then `</think>`."""
        return tuple(self.closing_ids) + (self.think_end_id,)

    def traced(self) -> "ExitParams":
        return ExitParams(
            thresholds=np.asarray([self.confidence, self.progress, self.remain], np.float32),
            active=np.asarray([s in self.signals for s in SIGNALS]),
            ewma=np.float32(self.ewma),
            surprise=np.float32(self.surprise or 0.0),
            min_think=np.int32(self.min_think_tokens),
            max_think=np.int32(2**30 if self.max_think_tokens is None else self.max_think_tokens),
            probe_threshold=np.float32(self.probe_threshold),
        )


@struct.dataclass
class ExitParams:
    """The traced part of `ExitConfig`."""

    thresholds: jax.Array  # [3] confidence, progress, remain
    active: jax.Array  # [3] bool
    ewma: jax.Array
    surprise: jax.Array  # veto threshold on target token probabilities (0 when off)
    min_think: jax.Array
    max_think: jax.Array
    probe_threshold: jax.Array


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of `x [B,T,C]` over the positions where `valid [B,T]`; zero for rows with none."""
    n = jnp.sum(valid, axis=1, keepdims=True)
    return jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1) / jnp.maximum(n, 1)


def ewma_update(s: jax.Array, started: jax.Array, x: jax.Array, alpha, update: jax.Array):
    """`s <- alpha*x + (1-alpha)*s`, started at the first value, for rows where `update [B]`."""
    new = jnp.where(started[:, None], alpha * x + (1.0 - alpha) * s, x)
    return jnp.where(update[:, None], new, s), started | update


def window_update(buf: jax.Array, count: jax.Array, x: jax.Array, n: jax.Array):
    """Push the first `n[b]` rows of `x [B,T,C]` into a window `buf [B,W,C]` holding `count[b]`.

    Returns the new window, its count and its mean: the last `W` signals seen, oldest first.
    """
    W = buf.shape[1]
    both = jnp.concatenate([buf, x], axis=1)
    idx = n[:, None] + jnp.arange(W)  # the last W of buf ++ x[:n]
    buf = take_rows(both, idx)
    count = jnp.minimum(count + n, W)
    valid = jnp.arange(W)[None, :] >= W - count[:, None]
    return buf, count, masked_mean(buf, valid)


def signals_pass(s: jax.Array, p: ExitParams) -> jax.Array:
    """Every active signal of `s [...,3]` passes: conf > c, progress > p, remain < r."""
    t = p.thresholds
    ok = jnp.stack([s[..., 0] > t[0], s[..., 1] > t[1], s[..., 2] < t[2]], axis=-1)
    return jnp.all(ok | ~p.active, axis=-1)


def surprised(token_p: jax.Array, valid: jax.Array, threshold) -> jax.Array:
    """`[B,T]` bool: some valid token at or before each position had probability < `threshold`.

    `token_p [B,T]` the target's probabilities of the emitted tokens, `valid [B,T]` which count.
    """
    T = token_p.shape[1]
    return jnp.arange(T)[None, :] >= first_true(valid & (token_p < threshold))[:, None]


def first_passing_boundary(
    sig: jax.Array, is_boundary: jax.Array, vetoed: jax.Array, p: ExitParams
) -> jax.Array:
    """Index of the first boundary (`is_boundary [B,T]`) whose own signals `sig [B,T,3]` pass
    and that is not `vetoed [B,T]`; T when none."""
    return first_true(is_boundary & ~vetoed & signals_pass(sig, p))


def is_in(tokens: jax.Array, ids: jax.Array) -> jax.Array:
    """Whether each of `tokens [...]` is one of `ids [M]`."""
    return jnp.any(tokens[..., None] == ids, axis=-1)


def first_true(mask: jax.Array) -> jax.Array:
    """Index of the first True of each row of `mask [B,T]` (T when none)."""
    return first_false(~mask)


def first_match(tokens: jax.Array, ids: jax.Array, valid: jax.Array) -> jax.Array:
    """Index of the first valid token of `tokens [B,T]` that is in `ids [M]` (T when none)."""
    return first_true(is_in(tokens, ids) & valid)
