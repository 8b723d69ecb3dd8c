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

import jax
import jax.numpy as jnp
import numpy as np

from specexit_jax.draft import DraftConfig, attention_inputs, layer_output

_NEG = -0.7 * float(np.finfo(np.float32).max)


def shift_left(x: jax.Array, n: int) -> jax.Array:
    """`x[:, n:]` padded with zeros back to length `T` (axis 1)."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, n)
    return jnp.pad(x[:, n:], pad)


def chain_attention(q: jax.Array, keys: list[jax.Array], values: list[jax.Array]) -> jax.Array:
    """Attention of step `i = len(keys) - 1`: `q [B,T,N,D]` over the causal step-0 `keys[0]`
    `[B,T,Kv,D]` and the diagonal entries of `keys[1:]` (same index only) -> `[B,T,N,D]`."""
    B, T, N, D = q.shape
    Kv = keys[0].shape[2]
    qg = q.reshape(B, T, Kv, N // Kv, D)
    causal = jnp.arange(T)[None, :] <= jnp.arange(T)[:, None]  # [Tq,Tk]
    s0 = jnp.einsum("btkgd,bskd->bkgts", qg, keys[0], preferred_element_type=jnp.float32)
    s0 = jnp.where(causal, s0 * (D**-0.5), _NEG)
    diag = [jnp.einsum("btkgd,btkd->bkgt", qg, k, preferred_element_type=jnp.float32) * (D**-0.5) for k in keys[1:]]
    s = jnp.concatenate([s0] + [d[..., None] for d in diag], axis=-1)  # [B,Kv,G,T,T+i]
    p = jax.nn.softmax(s, axis=-1).astype(values[0].dtype)
    o = jnp.einsum("bkgts,bskd->btkgd", p[..., :T], values[0])
    for j, v in enumerate(values[1:]):
        o = o + jnp.einsum("bkgt,btkd->btkgd", p[..., T + j], v)
    return o.reshape(B, T, N, D)


def unroll(
    dp: dict, dcfg: DraftConfig, embed: jax.Array, tokens: jax.Array, hidden0: jax.Array, n_steps: int
) -> list[jax.Array]:
    """Draft outputs of `n_steps` chained steps over a row, each `[B,T,Hd]`.

    `tokens [B,T]` the row's tokens `x`, `hidden0 [B,T,Hd]` = `fc(aux)`; step `i` output at index
    `t` predicts `x[t+2+i]` (positions past the row see zero tokens and are masked by the loss).
    """
    B, T = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    keys, values, outs = [], [], []
    hidden = hidden0

    @jax.checkpoint  # recompute each step's activations in the backward pass
    def layer(dp, embed, tok, hidden, pos, keys, values):
        q, k, v = attention_inputs(dp, dcfg, embed, tok, hidden, pos)
        keys, values = keys + [k], values + [v]
        return layer_output(dp, dcfg, hidden, chain_attention(q, keys, values)), k, v

    for i in range(n_steps):
        hidden, k, v = layer(dp, embed, shift_left(tokens, 1 + i), hidden, positions + i, keys, values)
        keys.append(k)
        values.append(v)
        outs.append(hidden)
    return outs


__all__ = ["chain_attention", "shift_left", "unroll"]
