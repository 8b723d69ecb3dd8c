"""Plain decoding (mode "ar") through `generate`: greedy tokens against an independent reference
(repeated full target passes, no cache), lengths, per-row EOS, traced `max_new_tokens`, seeded
sampling, streaming, and the errors users can cause.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax.config import ModelConfig
from specexit_jax.engine import decode, generate, prefill, prompt_bucket

from worlds import CFG, DCFG, V, greedy_reference

MAX_NEW = 16  # every call below with max_new_tokens <= 16 shares one output bucket


def ar(tp, prompts, max_new=MAX_NEW, **kw):
    return generate((CFG, tp), None, prompts, max_new_tokens=max_new, mode="ar", **kw)


@pytest.fixture(scope="module")
def tp():
    return M.init_params(CFG, jax.random.key(0), scale=0.4)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(1)
    p = [rng.integers(0, V, n).tolist() for n in (3, 17, 40)]
    p[1][0], p[2][-1] = 0, V - 1  # the extreme ids are valid
    return p


@pytest.fixture(scope="module")
def ref(tp, prompts):
    toks, gap = greedy_reference(tp, prompts, MAX_NEW)
    assert gap > 1e-4  # no near-tie that float rounding could flip
    return toks


def test_greedy_matches_reference(tp, prompts, ref):
    res = ar(tp, prompts)
    assert res.tokens == ref
    for s in res.stats:
        assert s["new_tokens"] == MAX_NEW and s["rounds"] == MAX_NEW and s["tau"] == 1.0
        assert s["exit_reason"] == "none" and s["exit_position"] == -1


def test_output_length_is_max_new_tokens(tp, prompts, ref):
    ar(tp, prompts, max_new=MAX_NEW)
    sizes = (prefill._cache_size(), decode._cache_size())
    for n in (1, 2, 5, 11, 13):
        res = ar(tp, prompts, max_new=n)
        assert [len(t) for t in res.tokens] == [n] * 3, n
        assert res.tokens == [r[:n] for r in ref], n  # prefix-consistent
        assert [s["new_tokens"] for s in res.stats] == [n] * 3
    # max_new_tokens is traced: no new program within one output bucket.
    assert (prefill._cache_size(), decode._cache_size()) == sizes


def test_eos_stops_only_its_row(tp, prompts, ref):
    r0, r1, r2 = ref
    j = next(j for j in range(3, 12) if r0.index(r0[j]) == j and r0[j] not in r1 + r2)
    eos = r0[j]
    res = ar(tp, prompts, eos_ids=(eos,))
    assert res.tokens[0] == r0[: j + 1]
    assert res.tokens[0][-1] == eos
    assert res.tokens[1:] == [r1, r2]
    assert res.stats[0]["new_tokens"] == j + 1 and res.stats[0]["rounds"] == j + 1


def test_eos_as_first_token(tp, prompts, ref):
    """A row whose very first token (from the prefill) is EOS stops there."""
    r0, r1, r2 = ref
    eos = r1[0]
    res = ar(tp, prompts, eos_ids=(eos,))
    assert res.tokens[1] == [eos]
    for b, r in ((0, r0), (2, r2)):
        want = r[: r.index(eos) + 1] if eos in r else r
        assert res.tokens[b] == want


def test_sampling_is_seeded(tp, prompts, ref):
    a = ar(tp, prompts, temperature=1.0, seed=3)
    b = ar(tp, prompts, temperature=1.0, seed=3)
    c = ar(tp, prompts, temperature=1.0, seed=4)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    assert all(len(t) == MAX_NEW for t in a.tokens + c.tokens)
    assert all(0 <= x < V for t in a.tokens + c.tokens for x in t)
    assert a.tokens != ref  # at temperature 1 this target is not deterministic


def test_top_k_one_and_tiny_top_p_are_greedy(tp, prompts, ref):
    for kw in (dict(top_k=1), dict(top_p=1e-4), dict(top_k=1, top_p=0.5)):
        for seed in (0, 1):
            res = ar(tp, prompts, temperature=1.3, seed=seed, **kw)
            assert res.tokens == ref, kw


def test_stream_delivers_every_token_once(tp, prompts, ref):
    got = [[] for _ in prompts]
    calls = []

    def stream(new):
        calls.append(new)
        for row, toks in zip(got, new):
            row.extend(toks)

    res = ar(tp, prompts, stream=stream, stream_every=3)
    assert got == res.tokens == ref
    assert len(calls) >= MAX_NEW // 3


def test_prompt_buckets_pad_under_a_quarter_of_the_prompt():
    sizes = [prompt_bucket(n) for n in range(1, 5000)]
    assert sizes == sorted(sizes)
    assert set(sizes) <= {m << k for m in (16, 20, 24, 28) for k in range(10)}
    assert all(b >= n and (n <= 16 or b - n < n / 4) for n, b in enumerate(sizes, 1))
    assert [prompt_bucket(n) for n in (1, 16, 17, 31, 32, 33, 40, 41, 100)] == [16, 16, 20, 32, 32, 40, 40, 48, 112]


def test_long_generation_crosses_attention_windows(tp):
    """Prompts of 97-121 tokens and 170 new tokens: the cache has 512 slots and the loop switches
    from the 256-slot attention window to the full one mid-way, in plain and speculative mode."""
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, V, n).tolist() for n in (97, 100, 104, 110, 117, 121)]
    n = 170
    want, gap = greedy_reference(tp, prompts, n, T=320)
    assert gap > 1e-4
    res = ar(tp, prompts, max_new=n)
    assert res.tokens == want
    dp = D.init_params(DCFG, jax.random.key(1), scale=0.3)
    res = generate((CFG, tp), (DCFG, dp), prompts, max_new_tokens=n, mode="spec", num_draft_tokens=3)
    assert res.tokens == want


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "prompts, kw, match",
    [
        ([], {}, "non-empty list"),
        ("hello", {}, "non-empty list"),
        ([[1, 2], []], {}, "prompt 1 is empty"),
        ([[1, V]], {}, rf"token id {V} outside the vocab \(size {V}\)"),
        ([[3], [-1, 2]], {}, r"prompt 1 has token id -1 outside the vocab"),
        ([[1] * 40], dict(max_len=50), r"prompt \(40 tokens\) \+ max_new_tokens \(16\).*maximum length 50"),
        ([[1]], dict(mode="beam"), r"unknown mode 'beam'; choose from ar, spec"),
        ([[1]], dict(mode="spec"), "needs a draft"),
        ([[1]], dict(mode="specexit"), "needs a draft"),
        ([[1]], dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
        ([[1]], dict(temperature=-1.0), "temperature >= 0"),
        ([[1]], dict(top_p=0.0), "top_p"),
    ],
)
def test_bad_inputs_raise_helpful_errors(tp, prompts, kw, match):
    kw = dict(dict(max_new_tokens=MAX_NEW, mode="ar"), **kw)
    with pytest.raises(ValueError, match=match):
        generate((CFG, tp), None, prompts, **kw)


def test_draft_for_another_target_is_rejected(tp):
    other = D.DraftConfig.for_target(ModelConfig(vocab_size=V + 1, hidden_size=64, intermediate_size=128,
                                                 num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16))
    with pytest.raises(ValueError, match="vocab"):
        generate((CFG, tp), (other, None), [[1]], max_new_tokens=4, mode="spec")
