"""The target model (Qwen3 / Qwen2 / Llama 3.x) as pure functions over a params pytree.

Params layout (one dict per layer, kept as a Python list: an unrolled layer loop with per-layer
weights and caches decodes about twice as fast on GPU as `lax.scan` over stacked weights):

    embed    [V,H]            norm [H]            lm_head [H,V]   (absent when tied)
    layers[i]: attn_norm [H]  wq [H,N,D]  wk [H,Kv,D]  wv [H,Kv,D]  wo [N,D,H]
               bq [N,D] bk bv [Kv,D] bo [H]   (when the config has biases)
               q_norm [D] k_norm [D]            (Qwen3)
               mlp_norm [H]  w_gate [H,F]  w_up [H,F]  w_down [F,H]

`forward` runs any number of positions per row over a cache, which is what speculative
verification needs (`K+1` positions per row), and returns the EAGLE-3 features `aux`: the inputs
of layers `cfg.aux_layers` concatenated, `[B,T,3H]`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from specexit_jax.cache import KVCache
from specexit_jax.config import ModelConfig
from specexit_jax.layers import (
    apply_rope, cached_attention, einsum_f32, gated_mlp, out_proj, rms_norm, rope_inv_freq, take_rows,
)

Params = dict


def _attention_block(lp: dict, cfg: ModelConfig, x, positions, cache, window, inv_freq, q_index=None):
    """Attention of `x [B,T,H]`; with `q_index [B,T']` (cache only) every token's keys and values
    are cached but only those tokens' outputs are computed (`[B,T',H]`)."""
    xq, q_pos = x, positions
    if q_index is not None:
        xq, q_pos = take_rows(x, q_index), take_rows(positions, q_index)
    q = jnp.einsum("bth,hnd->btnd", xq, lp["wq"])
    k = jnp.einsum("bth,hkd->btkd", x, lp["wk"])
    v = jnp.einsum("bth,hkd->btkd", x, lp["wv"])
    if cfg.qkv_bias:
        q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
    if cfg.qk_norm:
        q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
    q = apply_rope(q, q_pos, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    o, cache = cached_attention(q, k, v, positions, cache, window, q_positions=q_pos)
    out = out_proj(o, lp["wo"])
    if cfg.o_bias:
        out = out + lp["bo"]
    return out, cache


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    cache: KVCache | None = None,
    *,
    window: int | None = None,
    logits_index: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, KVCache | None]:
    """Run the target over `tokens [B,T]` at `positions [B,T]`.

    Returns `(logits, aux, cache)`: fp32 logits `[B,T,V]` (or `[B,T',V]` at `logits_index [B,T']`,
    e.g. only each row's last prompt position during prefill), `aux [B,T,3H]`, and the cache with
    this call's keys and values written at slots `positions[:, 0] ...`. Without a cache the call
    is a plain causal pass over `tokens`. With both a cache and `logits_index`, the last layer
    runs past its keys and values only at `logits_index` (a prefill computes one position's
    output there, not the prompt's).
    """
    inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    h = params["embed"][tokens]
    aux, new_k, new_v = [], [], []
    last = len(params["layers"]) - 1
    for i, lp in enumerate(params["layers"]):
        if i in cfg.aux_layers:
            aux.extend([h] * cfg.aux_layers.count(i))
        layer_cache = None if cache is None else (cache.k[i], cache.v[i])
        q_index = logits_index if (cache is not None and i == last) else None
        x = rms_norm(h, lp["attn_norm"], cfg.rms_norm_eps)
        a, layer_cache = _attention_block(lp, cfg, x, positions, layer_cache, window, inv_freq, q_index)
        if q_index is not None:
            h = take_rows(h, q_index)  # the rest of the last layer runs at those positions only
        h = h + a
        h = h + gated_mlp(rms_norm(h, lp["mlp_norm"], cfg.rms_norm_eps), lp)
        if layer_cache is not None:
            new_k.append(layer_cache[0])
            new_v.append(layer_cache[1])
    if cache is not None:
        cache = KVCache(k=tuple(new_k), v=tuple(new_v))
    if logits_index is not None and cache is None:
        h = take_rows(h, logits_index)
    return unembed(params, cfg, rms_norm(h, params["norm"], cfg.rms_norm_eps)), jnp.concatenate(
        aux, axis=-1
    ), cache


def unembed(params: Params, cfg: ModelConfig, h: jax.Array) -> jax.Array:
    """Final-normed hidden `[...,H]` -> fp32 logits `[...,V]` (tied or untied head)."""
    w = params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]
    return einsum_f32("...h,hv->...v", h, w)


@functools.partial(jax.jit, static_argnums=1)
def target_logits(params: Params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
    """Full causal pass without a cache: `int32 [B,T] -> float32 [B,T,V]`."""
    B, T = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    return forward(params, cfg, tokens, positions)[0]


def param_shapes(cfg: ModelConfig) -> Params:
    """The params pytree as `jax.ShapeDtypeStruct`s (for `eval_shape`, restore and conversion)."""
    H, F, V, N, Kv, D = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
    )
    dt = jnp.dtype(cfg.dtype)
    s = lambda *shape: jax.ShapeDtypeStruct(shape, dt)  # noqa: E731
    layer = {
        "attn_norm": s(H),
        "wq": s(H, N, D),
        "wk": s(H, Kv, D),
        "wv": s(H, Kv, D),
        "wo": s(N, D, H),
        "mlp_norm": s(H),
        "w_gate": s(H, F),
        "w_up": s(H, F),
        "w_down": s(F, H),
    }
    if cfg.qkv_bias:
        layer.update(bq=s(N, D), bk=s(Kv, D), bv=s(Kv, D))
    if cfg.o_bias:
        layer.update(bo=s(H))
    if cfg.qk_norm:
        layer.update(q_norm=s(D), k_norm=s(D))
    params = {"embed": s(V, H), "layers": [dict(layer) for _ in range(cfg.num_layers)], "norm": s(H)}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = s(H, V)
    return params


def init_params(cfg: ModelConfig, key: jax.Array, scale: float = 0.02) -> Params:
    """Random params (normal * scale; norms at one) in the layout above."""
    shapes = param_shapes(cfg)
    leaves, treedef = jax.tree.flatten_with_path(shapes)
    keys = jax.random.split(key, len(leaves))

    def init(path, sd, k):
        name = jax.tree_util.keystr(path[-1:])
        if "norm" in name:
            return jnp.ones(sd.shape, sd.dtype)
        return (scale * jax.random.normal(k, sd.shape, jnp.float32)).astype(sd.dtype)

    return jax.tree.unflatten(treedef, [init(p, sd, k) for (p, sd), k in zip(leaves, keys)])


def cast_params(params: Params, dtype) -> Params:
    """Cast every floating leaf to `dtype`."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
    )


__all__ = ["forward", "unembed", "target_logits", "param_shapes", "init_params", "cast_params"]
