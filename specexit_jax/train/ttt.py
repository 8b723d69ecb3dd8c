"""EAGLE-3 "training-time test": the draft unrolled over whole rows, as the decode chain runs it.

Shapes: `B` rows, `T` positions, `Hd` draft hidden, `N`/`Kv` heads, `D` head dim, `G = N // Kv`.

Step 0 is the draft over real pairs: at index `t`, hidden = `fc(aux_t)`, token `x[t+1]`, RoPE
position `t`; its output predicts `x[t+2]`. Step `i > 0` at index `t` is the chain's `i`-th draft
step after the real position `t`: hidden = the step `i-1` output at index `t`, token `x[t+1+i]`
(ground truth, as in EAGLE-3), RoPE position `t+i`; it predicts `x[t+2+i]`.

Attention is exactly the decode chain's (engine.py `_draft_chain`). There, the step at
position `L+i-1` reads the cache written by real pairs at positions `0..L-1` and the chain's own
entries at `L..L+i-1`. Here, with `L = t+1`: step `i` at index `t` attends to the step-0 keys at
indices `0..t` (causal) and to the keys of steps `1..i` at index `t` only (the "diagonal"). This
is the EAGLE-3 reference scheme; it costs one `[T,T]` score block plus `i` diagonals per step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from specexit_jax.draft import DraftConfig, attention_inputs, layer_output
from specexit_jax.layers import einsum_f32

_NEG = -0.7 * float(np.finfo(np.float32).max)


def shift_left(x: jax.Array, n: int) -> jax.Array:
    """`x[:, n:]` padded with zeros back to length `T` (axis 1)."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, n)
    return jnp.pad(x[:, n:], pad)


def chain_attention(q: jax.Array, keys: list[jax.Array], values: list[jax.Array]) -> jax.Array:
    """Attention of step `i = len(keys) - 1`: `q [B,T,N,D]` over the causal step-0 `keys[0]`
    `[B,T,Kv,D]` and the diagonal entries of `keys[1:]` (same index only) -> `[B,T,N,D]`.

    One softmax over both parts, written out so the `[T,T]` block is never copied: shared max,
    exponentials of each part, one normaliser. Queries, keys and values are laid out heads-first
    (`[B,Kv,G,T,D]`, `[B,Kv,T,D]`) so every product, forward and backward, reads the `[T,T]`
    block in its natural order (no transpose of the big tensor).
    """
    B, T, N, D = q.shape
    Kv = keys[0].shape[2]
    heads_first = lambda x: jnp.moveaxis(x, 1, 2)  # noqa: E731  [B,T,Kv,D] -> [B,Kv,T,D]
    qg = jnp.moveaxis(q.reshape(B, T, Kv, N // Kv, D), 1, 3)  # [B,Kv,G,T,D]
    k0, v0 = heads_first(keys[0]), heads_first(values[0])
    scale = D**-0.5
    causal = jnp.arange(T)[None, :] <= jnp.arange(T)[:, None]  # [Tq,Tk]
    s0 = jnp.where(causal, einsum_f32("bkgtd,bksd->bkgts", qg, k0) * scale, _NEG)
    diag = [einsum_f32("bkgtd,bktd->bkgt", qg, heads_first(k)) * scale for k in keys[1:]]
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, diag, jnp.max(s0, axis=-1)))  # [B,Kv,G,T]
    e0 = jnp.exp(s0 - m[..., None])
    ed = [jnp.exp(d - m) for d in diag]
    z = functools.reduce(jnp.add, ed, jnp.sum(e0, axis=-1))
    o = einsum_f32("bkgts,bksd->bkgtd", e0.astype(v0.dtype), v0)
    for e, v in zip(ed, values[1:]):
        o = o + e[..., None] * heads_first(v)[:, :, None].astype(jnp.float32)
    o = o / z[..., None]
    return jnp.moveaxis(o.astype(q.dtype), 3, 1).reshape(B, T, N, D)


REMAT = ("full", "dots", "none")


def rematerialize(fn, remat: str):
    """`fn` under the memory/compute trade of `remat`: "full" keeps only its inputs for the
    backward pass (least memory), "dots" also keeps the outputs of matmuls without batch dims
    (weight products; attention and elementwise work is recomputed), "none" keeps everything."""
    if remat == "none":
        return fn
    if remat == "dots":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    if remat == "full":
        return jax.checkpoint(fn)
    raise ValueError(f"remat must be one of {REMAT}, got {remat!r}")


def unroll(
    dp: dict,
    dcfg: DraftConfig,
    embed: jax.Array,
    tokens: jax.Array,
    hidden0: jax.Array,
    n_steps: int,
    remat: str = "full",
) -> list[jax.Array]:
    """Draft outputs of `n_steps` chained steps over a row, each `[B,T,Hd]`.

    `tokens [B,T]` the row's tokens `x`, `hidden0 [B,T,Hd]` = `fc(aux)`; step `i` output at index
    `t` predicts `x[t+2+i]` (positions past the row see zero tokens and are masked by the loss).
    Each step's layer is rematerialized as `remat` says (see `rematerialize`).
    """
    B, T = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    keys, values, outs = [], [], []
    hidden = hidden0

    def layer(dp, embed, tok, hidden, pos, keys, values):
        q, k, v = attention_inputs(dp, dcfg, embed, tok, hidden, pos)
        keys, values = keys + [k], values + [v]
        return layer_output(dp, dcfg, hidden, chain_attention(q, keys, values)), k, v

    layer = rematerialize(layer, remat)
    for i in range(n_steps):
        hidden, k, v = layer(dp, embed, shift_left(tokens, 1 + i), hidden, positions + i, keys, values)
        keys.append(k)
        values.append(v)
        outs.append(hidden)
    return outs


__all__ = ["REMAT", "chain_attention", "rematerialize", "shift_left", "unroll"]
