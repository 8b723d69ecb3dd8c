"""Full-size configs checked with `jax.eval_shape` (no memory): parameter counts and a decode step.

The config.json dicts are the published ones (only the fields we read); the expected counts are
computed from the architecture by hand and cross-checked against the published totals.
"""

import functools
import math

import jax
import jax.numpy as jnp
import pytest

from specexit_jax.cache import KVCache
from specexit_jax.config import model_config_from_hf
from specexit_jax.model import forward, init_params, param_shapes

QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1000000,
    "rope_scaling": None,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 40960,
    "attention_bias": False,
}
QWEN3_8B = dict(QWEN3_4B, hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False)
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "attention_bias": False,
}
DEEPSEEK_R1_DISTILL_LLAMA_8B = dict(LLAMA31_8B)  # same architecture, fine-tuned weights


def expected_count(V, H, F, L, N, Kv, D, tied, qk_norm):
    attn = H * N * D + 2 * H * Kv * D + N * D * H + (2 * D if qk_norm else 0)
    layer = attn + 3 * H * F + 2 * H
    return V * H * (1 if tied else 2) + L * layer + H


CASES = {
    # name: (config.json, count from the formula's arguments, published total)
    "Qwen3-4B": (QWEN3_4B, (151936, 2560, 9728, 36, 32, 8, 128, True, True), 4_022_468_096),
    "Qwen3-8B": (QWEN3_8B, (151936, 4096, 12288, 36, 32, 8, 128, False, True), 8_190_735_360),
    "Llama-3.1-8B": (
        LLAMA31_8B,
        (128256, 4096, 14336, 32, 32, 8, 128, False, False),
        8_030_261_248,
    ),
    "DeepSeek-R1-Distill-Llama-8B": (
        DEEPSEEK_R1_DISTILL_LLAMA_8B,
        (128256, 4096, 14336, 32, 32, 8, 128, False, False),
        8_030_261_248,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_count_of_published_configs(name):
    hf, formula_args, published = CASES[name]
    cfg = model_config_from_hf(hf, dtype="bfloat16")
    shapes = jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    assert count == expected_count(*formula_args) == published
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}
    assert ("lm_head" in shapes) == (not cfg.tie_word_embeddings)


def test_qwen3_4b_decode_step_shapes_without_allocating():
    cfg = model_config_from_hf(QWEN3_4B, dtype="bfloat16")
    B, S = 1, 4096
    cache = jax.eval_shape(
        lambda: KVCache.init(cfg.num_layers, B, S, cfg.num_kv_heads, cfg.head_dim, jnp.bfloat16)
    )
    tokens = jax.ShapeDtypeStruct((B, 1), jnp.int32)
    positions = jax.ShapeDtypeStruct((B, 1), jnp.int32)
    logits, aux, new_cache = jax.eval_shape(
        lambda p, t, pos, c: forward(p, cfg, t, pos, c), param_shapes(cfg), tokens, positions, cache
    )
    assert logits.shape == (1, 1, 151936) and logits.dtype == jnp.float32
    assert aux.shape == (1, 1, 3 * 2560)
    assert len(new_cache.k) == 36 and new_cache.max_len == S
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_cache) == jax.tree.map(
        lambda x: (x.shape, x.dtype), cache
    )
