"""Building blocks shared by the target and the draft: RMSNorm, RoPE, cached GQA attention, MLP.

Shapes: `B` batch, `T` tokens in this call, `S` cache slots, `N` query heads, `Kv` KV heads,
`G = N // Kv`, `D` head dim, `H` hidden, `F` MLP width.

Cache slots are positions: token `t` of a row lives in slot `t`, so a query at position `p` may
read every slot `<= p`. Rows of a batch have their own lengths; slots past a row's length hold
stale entries that are never read (masked by position) and are overwritten later. Rolling back
is therefore only a change of length.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from specexit_jax.config import RopeScaling

_NEG = -0.7 * float(np.finfo(np.float32).max)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_f32(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, a, b)` with an fp32 result whose gradients run in the inputs' dtype.

    Plain `preferred_element_type=float32` would make the backward products mixed bf16 x fp32,
    which XLA runs as fp32 (TF32) matmuls at a fraction of the bf16 rate; here the incoming
    gradient is rounded to the inputs' dtype first, as mixed-precision training does. With fp32
    inputs this is exactly the plain einsum and its gradient.
    """
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _einsum_f32_fwd(spec, a, b):
    return einsum_f32(spec, a, b), (a, b)


def _einsum_f32_bwd(spec, res, g):
    a, b = res
    _, pullback = jax.vjp(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=a.dtype), a, b)
    return pullback(g.astype(a.dtype))


einsum_f32.defvjp(_einsum_f32_fwd, _einsum_f32_bwd)


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """RMSNorm in fp32, cast back to the input dtype before the weight (as transformers does)."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return w * xf.astype(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """Inverse frequencies `[D/2]` (a host constant), with Llama-3 scaling when given."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling is None:
        return inv.astype(np.float32)
    old = scaling.original_max_position_embeddings
    low_wavelen = old / scaling.low_freq_factor
    high_wavelen = old / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / scaling.factor, inv)
    smooth = (old / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate `x [B,T,n,D]` by `positions [B,T]` (half-split layout, as in transformers)."""
    ang = positions[..., None].astype(jnp.float32) * inv_freq  # [B,T,D/2]
    cos, sin = jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x[b, index[b, t]]` for `x [B,T,...]`, `index [B,T']` -> `[B,T',...]`."""
    return jnp.take_along_axis(x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1)


def write_rows(buf: jax.Array, new: jax.Array, start: jax.Array, axis: int) -> jax.Array:
    """Write `new` (laid out as `buf [B,...]`, `T` entries along `axis`) into `buf` at
    `start[b] .. start[b]+T-1` of each row `b`.

    One row is a plain in-place `dynamic_update_slice`; several rows with their own starts are a
    vmapped one, which XLA lowers to a scatter (a slower kernel on CPU).
    """
    new = new.astype(buf.dtype)
    if buf.shape[0] == 1:
        return jax.lax.dynamic_update_slice_in_dim(buf, new, start[0], axis=axis)
    return jax.vmap(lambda b, x, s: jax.lax.dynamic_update_slice_in_dim(b, x, s, axis=axis - 1))(
        buf, new, start
    )


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention. `q [B,T,N,D]`, `k [B,Kv,S,D]`, `v [B,Kv,D,S]`, `mask [B,T,S]`
    -> `[B,T,N,D]`.

    Keys and values come in the cache layout, so both products contract over the last axis of
    their operand and read the cache in place, with no transpose.
    """
    B, T, N, D = q.shape
    Kv = k.shape[1]
    q = q.reshape(B, T, Kv, N // Kv, D)
    s = einsum_f32("btkgd,bksd->bkgts", q, k)
    s = jnp.where(mask[:, None, None], s * (D**-0.5), _NEG)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    o = jnp.einsum("bkgts,bkds->btkgd", p, v)
    return o.reshape(B, T, N, D)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Causal self-attention of one call's `q [B,T,N,D]` over its own `k, v [B,T,Kv,D]` (token `t`
    reads tokens `<= t`).

    On a GPU, bf16/fp16 inputs go to cuDNN's fused flash-attention kernel, which never writes the
    `[T,T]` scores to memory (full passes of the target in training); other cases, and shapes
    cuDNN declines, use `attention`.
    """
    if q.dtype in (jnp.bfloat16, jnp.float16) and jax.default_backend() == "gpu":
        try:
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        except Exception:  # noqa: BLE001 - an unsupported shape or cuDNN version: the plain path
            pass
    T = q.shape[1]
    mask = jnp.broadcast_to(jnp.arange(T)[None, :] <= jnp.arange(T)[:, None], (q.shape[0], T, T))
    return attention(q, jnp.swapaxes(k, 1, 2), jnp.transpose(v, (0, 2, 3, 1)), mask)


def cached_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    positions: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None,
    window: int | None,
    q_positions: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Attention of this call's queries over the cache (or, without one, `causal_attention` over
    this call's keys alone: a plain causal pass).

    With a cache, the new `k, v` (at `positions [B,T]`) are written at slots `positions[:, 0] ...`
    and the queries read the first `window` slots (a static size covering every row's length;
    reading only that part of the cache is what keeps long-context decoding from paying for all
    of `S`). The queries may be a few of this call's tokens, at `q_positions [B,T']` (default
    `positions`): a pass that needs every token's keys and values but the output of a few.
    """
    if cache is None:
        return causal_attention(q, k, v), None
    ck, cv = cache
    ck = write_rows(ck, jnp.swapaxes(k, 1, 2), positions[:, 0], axis=2)  # the cache layouts
    cv = write_rows(cv, jnp.transpose(v, (0, 2, 3, 1)), positions[:, 0], axis=3)
    cache = (ck, cv)
    W = ck.shape[2] if window is None else min(window, ck.shape[2])
    ks, vs = ck[:, :, :W], cv[..., :W]
    key_pos = jnp.broadcast_to(jnp.arange(W, dtype=positions.dtype), (q.shape[0], W))
    q_pos = positions if q_positions is None else q_positions
    mask = key_pos[:, None, :] <= q_pos[:, :, None]
    return attention(q, ks, vs, mask), cache


def out_proj(o: jax.Array, wo: jax.Array) -> jax.Array:
    """The attention output projection: `o [B,T,N,D]`, `wo [N,D,H]` -> `[B,T,H]`.

    One `[N*D,H]` product over the flattened heads (a free reshape of both). The einsum
    `btnd,ndh->bth` contracts `d` before `n`, which XLA serves by copying `wo` into `[D,N,H]` on
    every call: a whole weight per layer per decode step, inside the loop.
    """
    B, T, N, D = o.shape
    return jnp.dot(o.reshape(B, T, N * D), wo.reshape(N * D, wo.shape[-1]))


def gated_mlp(x: jax.Array, p: dict) -> jax.Array:
    """SwiGLU MLP: `down(silu(gate(x)) * up(x))`."""
    g = jnp.einsum("bth,hf->btf", x, p["w_gate"])
    u = jnp.einsum("bth,hf->btf", x, p["w_up"])
    return jnp.einsum("btf,fh->bth", jax.nn.silu(g) * u, p["w_down"])
