"""The EAGLE-3 draft with SpecExit signal heads, as pure functions.

One decoder layer reads the target's features `aux [B,T,3Ht]` (inputs of three target layers):

    fc: 3Ht -> Hd + S      first Hd outputs: the draft's input hidden state;
                           the S (0 or 3) extra rows: signals
                           confidence = sigmoid(r0), progress = sigmoid(r1), remain = exp(r2)
    x = [input_norm(embed(token)), hidden_norm(hidden)]   (2Hd) -> q/k/v
    h = hidden + o_proj(attention(x));  h = h + mlp(post_norm(h))
    logits = lm_head(norm(h))  over the draft vocab; target id = draft id + d2t[draft id]

The pair at draft position `t` is (feature of target position `t`, token `t+1`), and its output
predicts token `t+2`. Draft steps after the first feed the draft's own output `h` back as
`hidden` (no `fc`). Token embeddings are the target's (frozen) unless the draft has its own.

Params layout:
    fc [3Ht, Hd+S]  hidden_norm input_norm post_norm norm [Hd]
    wq [2Hd,N,D] wk wv [2Hd,Kv,D] wo [N,D,Hd]  w_gate w_up [Hd,F] w_down [F,Hd]
    lm_head [Hd,Vd]  d2t int32 [Vd]  (embed [V,Hd], optional)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from specexit_jax.cache import KVCache
from specexit_jax.config import ModelConfig, RopeScaling
from specexit_jax.layers import (
    apply_rope, cached_attention, einsum_f32, gated_mlp, out_proj, rms_norm, rope_inv_freq, take_rows,
)

SIGNALS = ("confidence", "progress", "remain")


@dataclasses.dataclass(frozen=True)
class DraftConfig:
    """One EAGLE-3 layer. `Ht`/`V` are the target's hidden size and vocab; `Vd` the draft vocab."""

    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    target_hidden_size: int
    vocab_size: int
    draft_vocab_size: int
    num_signals: int = 3
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    has_embed: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if self.num_signals not in (0, 3):
            raise ValueError(f"num_signals must be 0 or 3, got {self.num_signals}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DraftConfig":
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    @classmethod
    def for_target(
        cls, cfg: ModelConfig, draft_vocab_size: int | None = None, num_signals: int = 3
    ) -> "DraftConfig":
        """A fresh draft shaped like one layer of `cfg` (for training from scratch)."""
        return cls(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_heads=cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            target_hidden_size=cfg.hidden_size,
            vocab_size=cfg.vocab_size,
            draft_vocab_size=draft_vocab_size or cfg.vocab_size,
            num_signals=num_signals,
            rope_theta=cfg.rope_theta,
            rope_scaling=cfg.rope_scaling,
            rms_norm_eps=cfg.rms_norm_eps,
            dtype=cfg.dtype,
        )


def check_compatible(dcfg: DraftConfig, cfg: ModelConfig) -> None:
    """A one-line error when a draft was made for another target."""
    if dcfg.target_hidden_size != cfg.hidden_size:
        raise ValueError(
            f"draft expects target hidden size {dcfg.target_hidden_size}, "
            f"target has {cfg.hidden_size}"
        )
    if dcfg.vocab_size != cfg.vocab_size:
        raise ValueError(f"draft vocab maps to {dcfg.vocab_size} target ids, target has {cfg.vocab_size}")
    if not dcfg.has_embed and dcfg.hidden_size != cfg.hidden_size:
        raise ValueError(
            f"draft without its own embeddings needs hidden size {cfg.hidden_size}, "
            f"has {dcfg.hidden_size}"
        )


def project_raw(dp: dict, dcfg: DraftConfig, aux: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """`fc`: features `[B,T,3Ht]` -> draft hidden `[B,T,Hd]` and the raw signal outputs `r`
    `[B,T,3]` in fp32 (None for a draft without signals)."""
    y = jnp.einsum("btf,fh->bth", aux.astype(dp["fc"].dtype), dp["fc"])
    Hd = dcfg.hidden_size
    return y[..., :Hd], (y[..., Hd:].astype(jnp.float32) if dcfg.num_signals else None)


def project(dp: dict, dcfg: DraftConfig, aux: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """`fc`: features `[B,T,3Ht]` -> draft hidden `[B,T,Hd]` and signals `[B,T,3]` (or None)."""
    h, r = project_raw(dp, dcfg, aux)
    return h, None if r is None else signals_from_raw(r)


def signals_from_raw(r: jax.Array) -> jax.Array:
    """Raw signal outputs `[...,3]` -> (confidence, progress, remain)."""
    return jnp.stack([jax.nn.sigmoid(r[..., 0]), jax.nn.sigmoid(r[..., 1]), jnp.exp(r[..., 2])], -1)


def attention_inputs(dp: dict, dcfg: DraftConfig, embed, tokens, hidden, positions, q_index=None):
    """The layer's input side: `[input_norm(embed(tokens)), hidden_norm(hidden)]` (2Hd) -> q
    `[B,T,N,D]`, k, v `[B,T,Kv,D]` (RoPE applied); with `q_index [B,T']`, q of those pairs only."""
    eps = dcfg.rms_norm_eps
    emb = (dp["embed"] if dcfg.has_embed else embed)[tokens].astype(hidden.dtype)
    x = jnp.concatenate([rms_norm(emb, dp["input_norm"], eps), rms_norm(hidden, dp["hidden_norm"], eps)], -1)
    inv_freq = rope_inv_freq(dcfg.head_dim, dcfg.rope_theta, dcfg.rope_scaling)
    xq, q_pos = (x, positions) if q_index is None else (take_rows(x, q_index), take_rows(positions, q_index))
    q = apply_rope(jnp.einsum("btx,xnd->btnd", xq, dp["wq"]), q_pos, inv_freq)
    k = apply_rope(jnp.einsum("btx,xkd->btkd", x, dp["wk"]), positions, inv_freq)
    return q, k, jnp.einsum("btx,xkd->btkd", x, dp["wv"])


def layer_output(dp: dict, dcfg: DraftConfig, hidden: jax.Array, o: jax.Array) -> jax.Array:
    """The layer's output side: attention output `o [B,T,N,D]` -> residual + MLP `[B,T,Hd]`."""
    h = hidden + out_proj(o, dp["wo"])
    return h + gated_mlp(rms_norm(h, dp["post_norm"], dcfg.rms_norm_eps), dp)


def step(
    dp: dict,
    dcfg: DraftConfig,
    embed: jax.Array,
    tokens: jax.Array,
    hidden: jax.Array,
    positions: jax.Array,
    cache: KVCache | None = None,
    *,
    window: int | None = None,
    out_index: jax.Array | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """The draft layer over `T` pairs: `tokens [B,T]`, `hidden [B,T,Hd]` -> output hidden `[B,T,Hd]`
    (`[B,T',Hd]` at `out_index [B,T']`).

    With a cache, every pair's keys and values are cached but only the pairs at `out_index` run
    past them: catching up on accepted tokens needs the last one's output alone."""
    q_index = None if cache is None else out_index
    q, k, v = attention_inputs(dp, dcfg, embed, tokens, hidden, positions, q_index)
    layer_cache = None if cache is None else (cache.k[0], cache.v[0])
    q_pos = None if q_index is None else take_rows(positions, q_index)
    o, layer_cache = cached_attention(q, k, v, positions, layer_cache, window, q_positions=q_pos)
    h = layer_output(dp, dcfg, hidden if q_index is None else take_rows(hidden, q_index), o)
    if cache is None:
        return (h if out_index is None else take_rows(h, out_index)), None
    return h, KVCache(k=(layer_cache[0],), v=(layer_cache[1],))


def logits(dp: dict, dcfg: DraftConfig, h: jax.Array) -> jax.Array:
    """Output hidden `[...,Hd]` -> fp32 logits over the draft vocab `[...,Vd]`."""
    hn = rms_norm(h, dp["norm"], dcfg.rms_norm_eps)
    return einsum_f32("...h,hv->...v", hn, dp["lm_head"])


def to_target_ids(dp: dict, draft_ids: jax.Array) -> jax.Array:
    """Draft vocab ids -> target vocab ids (`d2t` holds offsets, as in published EAGLE-3 drafts)."""
    return draft_ids + dp["d2t"][draft_ids]


def to_target_probs(dp: dict, dcfg: DraftConfig, probs: jax.Array) -> jax.Array:
    """Draft-vocab distribution `[...,Vd]` -> the same distribution over target ids `[...,V]`
    (through `d2t` even when the sizes match: a draft may order its vocab differently)."""
    ids = to_target_ids(dp, jnp.arange(dcfg.draft_vocab_size))
    out = jnp.zeros(probs.shape[:-1] + (dcfg.vocab_size,), probs.dtype)
    return out.at[..., ids].set(probs)


def param_shapes(dcfg: DraftConfig) -> dict:
    """The draft params pytree as `jax.ShapeDtypeStruct`s."""
    Hd, F, N, Kv, D = (
        dcfg.hidden_size,
        dcfg.intermediate_size,
        dcfg.num_heads,
        dcfg.num_kv_heads,
        dcfg.head_dim,
    )
    dt = jnp.dtype(dcfg.dtype)
    s = lambda *shape: jax.ShapeDtypeStruct(shape, dt)  # noqa: E731
    p = {
        "fc": s(3 * dcfg.target_hidden_size, Hd + dcfg.num_signals),
        "hidden_norm": s(Hd),
        "input_norm": s(Hd),
        "post_norm": s(Hd),
        "norm": s(Hd),
        "wq": s(2 * Hd, N, D),
        "wk": s(2 * Hd, Kv, D),
        "wv": s(2 * Hd, Kv, D),
        "wo": s(N, D, Hd),
        "w_gate": s(Hd, F),
        "w_up": s(Hd, F),
        "w_down": s(F, Hd),
        "lm_head": s(Hd, dcfg.draft_vocab_size),
        "d2t": jax.ShapeDtypeStruct((dcfg.draft_vocab_size,), jnp.int32),
    }
    if dcfg.has_embed:
        p["embed"] = s(dcfg.vocab_size, Hd)
    return p


def init_params(dcfg: DraftConfig, key: jax.Array, scale: float = 0.02, d2t=None) -> dict:
    """Random draft params; `d2t` defaults to the identity map (offsets of zero)."""
    shapes = param_shapes(dcfg)
    keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
    out = {}
    for name, sd in shapes.items():
        if name == "d2t":
            out[name] = jnp.zeros(sd.shape, jnp.int32) if d2t is None else jnp.asarray(d2t, jnp.int32)
        elif "norm" in name:
            out[name] = jnp.ones(sd.shape, sd.dtype)
        else:
            out[name] = (scale * jax.random.normal(keys[name], sd.shape, jnp.float32)).astype(sd.dtype)
    return out


def init_cache(dcfg: DraftConfig, B: int, S: int) -> KVCache:
    return KVCache.init(1, B, S, dcfg.num_kv_heads, dcfg.head_dim, jnp.dtype(dcfg.dtype))
