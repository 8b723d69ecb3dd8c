"""Frozen model configs, read from Hugging Face `config.json` and written as our own JSON.

Configs are hashable (frozen dataclasses of plain values), so they are passed to `jax.jit` as
static arguments. Everything model-specific comes from the HF config: nothing is assumed from
an architecture name beyond what `config.json` states.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Architectures whose attention / MLP layout we implement, mapped to the bias convention of their
# attention: Qwen2 has q/k/v biases only; Llama and Qwen3 put `attention_bias` on all four.
_ARCHES = {
    "Qwen3ForCausalLM": "qwen3",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (`rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only target (Qwen3, Qwen2, Llama 3.x).

    Shapes use `V` vocab, `H` hidden, `F` MLP width, `L` layers, `N` query heads, `Kv` KV heads,
    `D` head dim (which need not equal H / N, as in Qwen3).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qk_norm: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    max_position_embeddings: int = 32768
    arch: str = "qwen3"
    dtype: str = "float32"

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )

    @property
    def aux_layers(self) -> tuple[int, int, int]:
        """Layers whose *inputs* form the EAGLE-3 features: `2, L//2, L-3` (clamped for tiny L)."""
        L = self.num_layers
        return tuple(min(max(i, 0), L - 1) for i in (2, L // 2, L - 3))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)


def rope_params(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """Read RoPE settings from either config form: top-level `rope_theta` / `rope_scaling`
    (published checkpoints) or `rope_parameters` (written by transformers 5)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind in (None, "default"):
        return float(theta), None
    if kind != "llama3":
        raise ValueError(f"unsupported rope scaling type {kind!r} (supported: default, llama3)")
    return float(theta), RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )


def model_config_from_hf(hf: dict[str, Any], dtype: str = "float32") -> ModelConfig:
    """Build a `ModelConfig` from a parsed HF `config.json`; unknown architectures are an error."""
    archs = hf.get("architectures") or []
    arch = next((_ARCHES[a] for a in archs if a in _ARCHES), None)
    if arch is None:
        raise ValueError(
            f"unsupported architecture {archs or hf.get('model_type')!r} "
            f"(supported: {', '.join(sorted(_ARCHES))})"
        )
    if hf.get("use_sliding_window"):
        raise ValueError("sliding-window attention is not supported (use_sliding_window=true)")
    H, N = hf["hidden_size"], hf["num_attention_heads"]
    theta, scaling = rope_params(hf)
    bias = bool(hf.get("attention_bias", False))
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=H,
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=N,
        num_kv_heads=hf.get("num_key_value_heads") or N,
        head_dim=hf.get("head_dim") or H // N,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=arch == "qwen3",
        qkv_bias=arch == "qwen2" or bias,
        o_bias=arch != "qwen2" and bias,
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        arch=arch,
        dtype=dtype,
    )


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON file with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
