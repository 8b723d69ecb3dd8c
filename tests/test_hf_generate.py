"""Decoding against `transformers`: our cached, incremental passes equal one full pass, and greedy
`generate` gives the tokens of HF `generate(do_sample=False)` on the same converted weights."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_models
from specexit_jax.cache import KVCache
from specexit_jax.engine import generate
from specexit_jax.model import forward, target_logits

pytestmark = pytest.mark.usefixtures("fp32_matmuls")


@pytest.mark.parametrize("family", ["qwen3_tied", "llama3"])
def test_cached_chunks_equal_full_pass(tiny_model, family):
    """A 320-token prompt fed as a prefill of 200, chunks of 37 and single tokens over the cache
    (rows at different lengths) gives the logits of one cache-free pass."""
    m = tiny_model(family)
    cfg, params = m.cfg, m.params
    B, T = 2, 320
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.vocab_size, (B, T), dtype=np.int32))
    full = np.asarray(target_logits(params, cfg, tokens))
    cache = KVCache.init(cfg.num_layers, B, 384, cfg.num_kv_heads, cfg.head_dim, jnp.float32)
    cuts = [0, 200, 237, 274, 311] + list(range(312, T + 1))
    got = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        pos = jnp.broadcast_to(jnp.arange(a, b, dtype=jnp.int32), (B, b - a))
        logits, _, cache = forward(params, cfg, tokens[:, a:b], pos, cache)
        got.append(np.asarray(logits))
    np.testing.assert_array_less(np.abs(np.concatenate(got, axis=1) - full).max(), 1e-4)


@pytest.mark.parametrize("family", ["qwen3_tied", "llama3", "qwen2"])
def test_greedy_generate_equals_hf_generate(tiny_model, family):
    m = tiny_model(family)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, m.cfg.vocab_size, n).tolist() for n in (300, 317)]
    ours = generate((m.cfg, m.params), None, prompts, max_new_tokens=24).tokens
    for p, out in zip(prompts, ours):
        with torch.no_grad():
            ref = m.torch_model.generate(
                torch.tensor([p]), do_sample=False, max_new_tokens=24, min_new_tokens=24,
                attention_mask=torch.ones(1, len(p), dtype=torch.long), pad_token_id=0,
            )
        assert out == ref[0, len(p):].tolist()
