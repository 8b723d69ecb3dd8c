"""On a GPU: the decode loop gives the tokens of an independent argmax loop, and sampling never
emits ids the demo model was never trained to produce. (Skipped without a GPU; the same checks
run on CPU in test_generate.py.)"""

import jax.numpy as jnp
import pytest

from specexit_jax.checkpoint import load_checkpoint
from specexit_jax.demo import demo_checkpoints, task
from specexit_jax.engine import generate
from specexit_jax.model import target_logits
from specexit_jax.tokenizer import Tokenizer

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def demo():
    path, _ = demo_checkpoints()
    cfg, params = load_checkpoint(path)
    tok = Tokenizer(path)
    prompts = [tok.encode(task.render_prompt(s)) for s in task.make_dataset(8, seed=321)]
    return cfg, params, tok, prompts


def test_greedy_generate_equals_argmax_loop_on_gpu(demo, fp32_matmuls):
    cfg, params, tok, prompts = demo
    n = 48
    got = generate((cfg, params), None, prompts, max_new_tokens=n).tokens
    L = max(map(len, prompts)) + n  # one padded length: one compiled full pass (causal, so the
    for p, out in zip(prompts, got):  # padding after a position does not change its logits)
        seq = list(p)
        for _ in range(n):
            padded = jnp.asarray([seq + [0] * (L - len(seq))])
            seq.append(int(jnp.argmax(target_logits(params, cfg, padded)[0, len(seq) - 1])))
        assert out == seq[len(p):]


def test_sampling_never_emits_padding_on_gpu(demo):
    cfg, params, tok, prompts = demo
    res = generate((cfg, params), None, prompts * 16, max_new_tokens=128, temperature=0.6,
                   eos_ids=tok.eos_ids, seed=0)
    assert sum(t.count(tok.pad_id) for t in res.tokens) == 0


def test_causal_attention_uses_cudnn_and_matches_the_plain_path_on_gpu():
    """bf16 full passes (the target in training) run cuDNN's fused kernel, with the result of the
    plain masked-softmax attention to bf16 accuracy."""
    import jax

    from specexit_jax.layers import attention, causal_attention

    B, T, N, Kv, D = 2, 256, 8, 2, 64
    q, k, v = (jax.random.normal(key, (B, T, n, D), jnp.bfloat16)
               for key, n in zip(jax.random.split(jax.random.key(0), 3), (N, Kv, Kv)))
    assert "cudnn" in jax.jit(causal_attention).lower(q, k, v).compile().as_text().lower()
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
    want = attention(q, jnp.swapaxes(k, 1, 2), jnp.transpose(v, (0, 2, 3, 1)), mask).astype(jnp.float32)
    got = causal_attention(q, k, v).astype(jnp.float32)
    assert float(jnp.max(jnp.abs(got - want))) < 3e-2
