"""Tiny random Hugging Face models (and a public-layout EAGLE-3 draft) for parity and conversion.

Weights are drawn away from HF's defaults (norm weights near, but not at, one; projections with a
larger spread) so that a swapped norm or a mis-transposed projection changes the logits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file

from specexit_jax import checkpoint, convert

_COMMON = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)

# family -> (config class, model class, config kwargs)
FAMILIES = {
    # head_dim 32 != hidden / heads = 16
    "qwen3_tied": (
        transformers.Qwen3Config,
        transformers.Qwen3ForCausalLM,
        dict(
            _COMMON,
            vocab_size=384,
            intermediate_size=160,
            head_dim=32,
            tie_word_embeddings=True,
            rope_theta=1e6,
            max_position_embeddings=1024,
        ),
    ),
    "qwen3_untied": (
        transformers.Qwen3Config,
        transformers.Qwen3ForCausalLM,
        dict(
            _COMMON,
            vocab_size=320,
            intermediate_size=128,
            head_dim=32,
            tie_word_embeddings=False,
            num_hidden_layers=5,
            rope_theta=10000.0,
            max_position_embeddings=1024,
        ),
    ),
    "llama3": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(
            _COMMON,
            vocab_size=512,
            intermediate_size=192,
            tie_word_embeddings=False,
            rope_theta=500000.0,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    # Qwen2 carries q/k/v biases
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(
            _COMMON,
            vocab_size=300,
            intermediate_size=128,
            tie_word_embeddings=True,
            rope_theta=1e6,
            max_position_embeddings=1024,
        ),
    ),
}


def randomize(model: torch.nn.Module, seed: int, std: float = 0.08) -> torch.nn.Module:
    """Normal(0, std) weights and biases; norm weights 1 + Normal(0, 0.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if "norm" in name else std * noise)
    return model.eval()


def save_hf_model(family: str, path: Path, seed: int = 0, **save_kwargs) -> torch.nn.Module:
    """Build, randomize and `save_pretrained` a tiny model of `family`; returns it (fp32, eval)."""
    config_cls, model_cls, kwargs = FAMILIES[family]
    model = randomize(model_cls(config_cls(**kwargs)), seed)
    model.save_pretrained(path, **save_kwargs)
    return model


@dataclasses.dataclass
class TinyModel:
    """A tiny HF model, its folder, and its conversion to our checkpoint (fp32)."""

    torch_model: torch.nn.Module
    hf_dir: Path
    ckpt_dir: Path
    cfg: object
    params: dict


def convert_and_load(hf_dir: Path, ckpt_dir: Path, dtype: str = "float32"):
    """`convert_hf` then `load_checkpoint`: `(cfg, params)`."""
    convert.convert_hf(hf_dir, ckpt_dir, dtype=dtype)
    return checkpoint.load_checkpoint(ckpt_dir)


def save_eagle3_draft(
    path: Path,
    *,
    hidden: int = 64,
    target_hidden: int = 96,
    heads: int = 4,
    kv_heads: int = 2,
    inter: int = 128,
    vocab: int = 400,
    draft_vocab: int = 120,
    num_signals: int = 3,
    with_d2t: bool = True,
    with_embed: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a random EAGLE-3 draft in the public layout (`midlayer.*`, `fc`, `d2t`, `t2d`, ...).

    Returns the raw tensors (`d2t` as int64 offsets: target id = draft id + d2t[draft id]).
    """
    rng = np.random.default_rng(seed)
    D = hidden // heads
    w = lambda *s: (0.08 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    norm = lambda: (1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32)  # noqa: E731
    t = {
        "fc.weight": w(hidden + num_signals, 3 * target_hidden),
        "midlayer.hidden_norm.weight": norm(),
        "midlayer.input_layernorm.weight": norm(),
        "midlayer.post_attention_layernorm.weight": norm(),
        "midlayer.self_attn.q_proj.weight": w(heads * D, 2 * hidden),
        "midlayer.self_attn.k_proj.weight": w(kv_heads * D, 2 * hidden),
        "midlayer.self_attn.v_proj.weight": w(kv_heads * D, 2 * hidden),
        "midlayer.self_attn.o_proj.weight": w(hidden, heads * D),
        "midlayer.mlp.gate_proj.weight": w(inter, hidden),
        "midlayer.mlp.up_proj.weight": w(inter, hidden),
        "midlayer.mlp.down_proj.weight": w(hidden, inter),
        "norm.weight": norm(),
        "lm_head.weight": w(draft_vocab, hidden),
    }
    target_ids = np.sort(rng.choice(vocab, draft_vocab, replace=False))
    t2d = np.zeros(vocab, bool)
    t2d[target_ids] = True
    t["t2d"] = t2d
    if with_d2t:
        t["d2t"] = (target_ids - np.arange(draft_vocab)).astype(np.int64)
    if with_embed:
        t["embed_tokens.weight"] = w(vocab, hidden)
    config = {
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "hidden_size": hidden,
        "target_hidden_size": target_hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_hidden_layers": 1,
        "vocab_size": vocab,
        "draft_vocab_size": draft_vocab,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
    path.mkdir(parents=True)
    save_file(t, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return t
