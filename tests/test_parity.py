"""Logits of our target against `transformers` on tiny random models, in fp32.

Prompts are >= 300 tokens so that RoPE errors (wrong theta, wrong llama3 scaling, wrong head
split) show up; the bound is a max abs logit error of 1e-4.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_models
from specexit_jax.cache import KVCache
from specexit_jax.checkpoint import load_config
from specexit_jax.config import RopeScaling, model_config_from_hf, read_json
from specexit_jax.convert import convert_hf
from specexit_jax.model import forward, target_logits

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("fp32_matmuls")


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.float().numpy()


@pytest.mark.parametrize("family", list(hf_models.FAMILIES))
def test_logits_match_transformers(tiny_model, family):
    m = tiny_model(family)
    tokens = np.random.default_rng(1).integers(0, m.cfg.vocab_size, (2, 320), dtype=np.int32)
    ours = np.asarray(target_logits(m.params, m.cfg, jnp.asarray(tokens)))
    ref = hf_logits(m.torch_model, tokens)
    assert ours.shape == ref.shape == (2, 320, m.cfg.vocab_size)
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero logits
    np.testing.assert_array_less(np.abs(ours - ref).max(), TOL)


@pytest.mark.parametrize("family", ["qwen3_untied", "llama3", "qwen2"])
def test_padded_batch_rows_match_transformers_alone(tiny_model, family):
    """Right-padded rows of different lengths: each row's valid part equals HF on that row alone."""
    m = tiny_model(family)
    rng = np.random.default_rng(2)
    lengths = [300, 341, 317]
    tokens = np.zeros((len(lengths), max(lengths)), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, m.cfg.vocab_size, n)
    ours = np.asarray(target_logits(m.params, m.cfg, jnp.asarray(tokens)))
    for row, n in enumerate(lengths):
        ref = hf_logits(m.torch_model, tokens[row : row + 1, :n])[0]
        np.testing.assert_array_less(np.abs(ours[row, :n] - ref).max(), TOL)


@pytest.mark.parametrize("family", ["qwen3_untied", "llama3"])
def test_cached_prefill_matches_transformers_at_each_rows_last_position(tiny_model, family):
    """The prefill's pass (a cache, logits only at each row's last prompt position, so the last
    layer runs past its keys and values there alone) against HF on each row by itself; its
    cache holds the same keys and values as a full cached pass."""
    m = tiny_model(family)
    rng = np.random.default_rng(3)
    lengths = [300, 333]
    T, S = max(lengths), 384
    tokens = np.zeros((len(lengths), T), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, m.cfg.vocab_size, n)
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (len(lengths), T))
    empty = KVCache.init(m.cfg.num_layers, len(lengths), S, m.cfg.num_kv_heads, m.cfg.head_dim, jnp.float32)
    last = jnp.asarray(lengths, jnp.int32)[:, None] - 1
    logits, _, cache = forward(m.params, m.cfg, jnp.asarray(tokens), positions, empty, window=T, logits_index=last)
    _, _, full_cache = forward(m.params, m.cfg, jnp.asarray(tokens), positions, empty, window=T)
    assert logits.shape == (len(lengths), 1, m.cfg.vocab_size)
    for row, n in enumerate(lengths):
        ref = hf_logits(m.torch_model, tokens[row : row + 1, :n])[0, -1]
        np.testing.assert_array_less(np.abs(np.asarray(logits[row, 0]) - ref).max(), TOL)
    for a, b in zip(jax.tree.leaves(cache), jax.tree.leaves(full_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("family", ["llama3", "qwen3_tied"])
def test_both_rope_config_forms_convert_to_the_same_config(tiny_model, family, tmp_path):
    """transformers-5 `rope_parameters` and the published top-level `rope_theta`/`rope_scaling`."""
    m = tiny_model(family)
    new_form = read_json(m.hf_dir / "config.json")
    assert "rope_parameters" in new_form
    old_form = {k: v for k, v in new_form.items() if k != "rope_parameters"}
    rope = dict(new_form["rope_parameters"])
    old_form["rope_theta"] = rope.pop("rope_theta")
    old_form["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    old_dir = shutil.copytree(m.hf_dir, tmp_path / "hf")
    (old_dir / "config.json").write_text(json.dumps(old_form))
    convert_hf(old_dir, tmp_path / "ckpt", dtype="float32")

    assert load_config(tmp_path / "ckpt") == model_config_from_hf(new_form) == m.cfg
    if family == "llama3":
        assert m.cfg.rope_theta == 500000.0
        assert m.cfg.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 64)
    else:
        assert (m.cfg.rope_theta, m.cfg.rope_scaling) == (1e6, None)
