"""Token sampling and lossless speculative verification, as pure functions of arrays.

`verify` takes the target's logits over the `K+1` verified positions and the `K` draft tokens and
returns how many drafts each row accepts and the token that follows them:

- greedy: a draft is accepted while it equals the target's argmax; the next token is the target's
  argmax at the first mismatch (or after the last draft), so the output is token-for-token the
  target's greedy output.
- sampling: draft `i` is accepted with probability `min(1, p_i(d_i) / q_i(d_i))`; at the first
  rejection the next token is drawn from `max(p_i - q_i, 0)` (normalised), and when every draft
  passes, from `p_K` (the bonus token). The output is distributed exactly as the target's
  `p` (after temperature / top-k / top-p), whatever the draft proposes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)  # a dropped id's logit: exp() gives 0


@struct.dataclass
class SamplingParams:
    """Sampling settings. The values are traced: changing them does not recompile. `top_k = 0`,
    `top_p = 1` are off; `filtered` (static) says whether either is on, so that plain
    temperature sampling skips the sort and cumulative sum (switching it compiles once more)."""

    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    filtered: bool = struct.field(pytree_node=False, default=True)

    @classmethod
    def make(cls, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0) -> "SamplingParams":
        return cls(
            temperature=np.float32(temperature), top_k=np.int32(top_k), top_p=np.float32(top_p),
            filtered=bool(top_k > 0 or top_p < 1.0),
        )


def probs(logits: jax.Array, sp: SamplingParams) -> jax.Array:
    """The sampling distribution `[...,V]`: softmax(logits / T) restricted to top-k, then top-p.

    Dropped ids get a large finite negative logit rather than `-inf` (on GPU, XLA's fusion of a
    peaked row with `-inf` masks came out all NaN, which sampled id 0). The kept set is decided on
    the logits themselves, against a threshold taken from their sorted copy, so it always holds
    the top id.
    """
    V = logits.shape[-1]
    x = logits.astype(jnp.float32)
    t = jnp.maximum(sp.temperature, 1e-6)
    if not sp.filtered:
        return jax.nn.softmax(x / t, axis=-1)
    srt = -jnp.sort(-x, axis=-1)
    rank = jnp.arange(V)
    k = jnp.where(sp.top_k > 0, jnp.minimum(sp.top_k, V), V)
    in_k = rank < k
    ps = jax.nn.softmax(jnp.where(in_k, srt / t, _MASKED), axis=-1)
    keep = in_k & ((jnp.cumsum(ps, axis=-1) - ps) < sp.top_p)
    n_keep = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(srt, n_keep - 1, axis=-1)
    return jax.nn.softmax(jnp.where(x >= threshold, x / t, _MASKED), axis=-1)


def token_probs(logits: jax.Array, tokens: jax.Array, sp: SamplingParams) -> jax.Array:
    """Probability `[...]` of `tokens [...]` under softmax(`logits [...,V]` / temperature).

    Top-k / top-p are not applied (they only raise the probability of the tokens they keep).
    At temperature 0 this is 1 for the argmax token and about 0 for every other one.
    """
    scaled = logits.astype(jnp.float32) / jnp.maximum(sp.temperature, 1e-6)
    picked = jnp.take_along_axis(scaled, tokens[..., None], axis=-1)[..., 0]
    return jnp.exp(picked - jax.nn.logsumexp(scaled, axis=-1))


def sample(key: jax.Array, p: jax.Array) -> jax.Array:
    """Draw one id per row from probabilities `p [...,V]`."""
    return jax.random.categorical(key, jnp.log(p), axis=-1).astype(jnp.int32)


def gumbel_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The noise `sample(key, p)` adds for `p` of this shape (drawn ahead, e.g. many at once)."""
    return jax.random.gumbel(key, shape, jnp.float32)


def sample_with(noise: jax.Array, p: jax.Array) -> jax.Array:
    """`sample(key, p)` given `noise = gumbel_noise(key, p.shape)`: the same ids."""
    return jnp.argmax(jnp.log(p) + noise, axis=-1).astype(jnp.int32)


def first_false(ok: jax.Array) -> jax.Array:
    """Index of the first False along the last axis (its length when all are True)."""
    K = ok.shape[-1]
    return jnp.min(jnp.where(ok, K, jnp.arange(K, dtype=jnp.int32)), axis=-1, initial=K)


def verify(
    target_logits: jax.Array,
    draft_ids: jax.Array,
    draft_probs: jax.Array | None,
    sp: SamplingParams,
    key: jax.Array,
    forced: jax.Array,
    *,
    sampling: bool,
) -> tuple[jax.Array, jax.Array]:
    """Accept drafts against the target.

    Args:
      target_logits: `[B,K+1,V]` target logits at the positions of `[last, d_1 .. d_K]`.
      draft_ids: `[B,K]` proposed target ids.
      draft_probs: `[B,K,V]` the draft distributions they were drawn from (sampling only).
      sp: sampling settings; `key`: PRNG key.
      forced: `[B,K]` bool, drafts that are accepted unconditionally (forced text, e.g. `</think>`).
      sampling: static; False is greedy.

    Returns:
      `n [B]` accepted drafts and `next [B]`, the target's token after them.
    """
    B, K1, V = target_logits.shape
    K = K1 - 1
    if not sampling:
        best = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)
        n = first_false((draft_ids == best[:, :K]) | forced)
        return n, jnp.take_along_axis(best, n[:, None], axis=1)[:, 0]
    noise = gumbel_noise(key, (B, V + K))  # one PRNG call: the next token's noise, then K uniforms
    p = probs(target_logits, sp)  # [B,K+1,V]
    if K:
        px = jnp.take_along_axis(p[:, :K], draft_ids[..., None], axis=-1)[..., 0]
        qx = jnp.take_along_axis(draft_probs, draft_ids[..., None], axis=-1)[..., 0]
        u = jnp.exp(-jnp.exp(-noise[:, V:]))  # Gumbel -> uniform on (0, 1)
        n = first_false((u * qx < px) | forced)
        q = jnp.concatenate([draft_probs, jnp.zeros_like(p[:, :1])], axis=1)
    else:
        n = jnp.zeros((B,), jnp.int32)
        q = jnp.zeros_like(p)
    p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
    q_n = jnp.take_along_axis(q, n[:, None, None], axis=1)[:, 0]
    resid = jnp.maximum(p_n - q_n, 0.0)
    total = jnp.sum(resid, axis=-1, keepdims=True)
    resid = jnp.where(total > 0, resid / jnp.where(total > 0, total, 1.0), p_n)
    return n, sample_with(noise[:, :V], resid)
