"""Speculative decoding (mode "spec") is lossless: greedy spec tokens equal greedy plain decoding,
whatever the draft proposes, and the per-row statistics describe what happened.

Three drafts: a random one (almost nothing accepted), an exact one for a target built to be
predictable (every draft accepted), and that exact draft with a few wrong entries (rows accept
different lengths).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from specexit_jax import draft as D
from specexit_jax.engine import generate

from worlds import CFG, DCFG, V, cycle_world, greedy_reference, random_world

MAX_NEW = 32  # one output bucket for every call below


def spec(world, prompts, K, max_new=MAX_NEW, **kw):
    tp, dp = world[:2]
    return generate((CFG, tp), (DCFG, dp), prompts, max_new_tokens=max_new, mode="spec", num_draft_tokens=K, **kw)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(0, V, n).tolist() for n in (3, 17, 40)]


@pytest.fixture(scope="module")
def rworld():
    return random_world()


@pytest.fixture(scope="module")
def cworld():
    return cycle_world(0)


@pytest.fixture(scope="module")
def rref(rworld, prompts):
    toks, gap = greedy_reference(rworld[0], prompts, MAX_NEW)
    assert gap > 1e-4  # no near-tie that float rounding could flip
    return toks


@pytest.fixture(scope="module")
def cref(cworld, prompts):
    toks, gap = greedy_reference(cworld[0], prompts, MAX_NEW)
    assert gap > 1.0
    return toks


def _check_stats(res, K):
    """Statistics that hold for any greedy run: every round emits its accepted drafts plus one
    token (the first round, the prefill, emits one token and proposes nothing), unless cut by
    max_new_tokens at the end; acceptance is a prefix, so counts fall with the position."""
    for toks, s in zip(res.tokens, res.stats):
        n = len(toks)
        assert s["new_tokens"] == n
        assert s["tau"] == pytest.approx(n / s["rounds"])
        acc = s["accepted_per_position"]
        assert len(acc) == K and len(s["acceptance_rate"]) == K
        assert all(a >= b for a, b in itertools.pairwise(acc))
        assert 0 <= s["rounds"] + sum(acc) - n <= K
        assert all(0 <= a <= s["rounds"] - 1 for a in acc)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_random_draft_is_lossless(rworld, prompts, rref, K):
    res = spec(rworld, prompts, K)
    assert res.tokens == rref
    _check_stats(res, K)
    for s in res.stats:
        assert s["acceptance_rate"][0] < 0.15  # a random draft is almost never right
        assert s["tau"] < 1.3


@pytest.mark.parametrize("K", [1, 3, 5])
def test_exact_draft_accepts_everything(cworld, prompts, cref, K):
    rounds = (MAX_NEW - 1) // (K + 1)
    max_new = 1 + rounds * (K + 1)  # the prefill token, then only full rounds
    res = spec(cworld, prompts, K, max_new=max_new)
    assert res.tokens == [r[:max_new] for r in cref]
    _check_stats(res, K)
    for s in res.stats:
        assert s["rounds"] == 1 + rounds
        assert s["accepted_per_position"] == [rounds] * K
        # tokens per draft round, the prefill round excluded
        assert (s["new_tokens"] - 1) / (s["rounds"] - 1) == K + 1
        assert s["tau"] == pytest.approx(max_new / (1 + rounds))
    # Cut by max_new_tokens in the middle of a round: same tokens, shorter.
    res = spec(cworld, prompts, K, max_new=max_new - 1)
    assert res.tokens == [r[: max_new - 1] for r in cref]


@pytest.mark.parametrize("K", [1, 3])
def test_acceptance_rate_counts_only_rounds_that_proposed_drafts(cworld, prompts, K):
    """The exact draft is right every time it proposes, so its acceptance rate is 1 at every
    position; the prefill round proposes nothing and must not count as rejected drafts."""
    rounds = (MAX_NEW - 1) // (K + 1)
    res = spec(cworld, prompts, K, max_new=1 + rounds * (K + 1))
    for s in res.stats:
        assert s["acceptance_rate"] == [1.0] * K, s


@pytest.fixture(scope="module")
def mixed():
    """The exact draft with a few wrong cycle positions, prompts that enter the cycle at
    different places (so they meet the wrong entries at different times), and an EOS id that only
    the first row reaches."""
    wrong = (5, 6, 13, 22, 23, 24, 40, 47)
    world = cycle_world(0, wrong_positions=wrong)
    perm = world[3]
    rng = np.random.default_rng(3)
    prompts = [
        rng.integers(0, V, 35).tolist() + [int(perm[0])],
        rng.integers(0, V, 46).tolist() + [int(perm[16])],
        rng.integers(0, V, 59).tolist() + [int(perm[30])],
    ]
    eos = int(perm[15])  # row 0 reaches it after 15 tokens; rows 1 and 2 start past it
    return world, prompts, eos


def test_rows_accept_different_lengths_and_match_single_runs(mixed):
    world, prompts, eos = mixed
    K = 3
    res = spec(world, prompts, K, eos_ids=(eos,))
    want, _ = greedy_reference(world[0], prompts, MAX_NEW)
    assert res.tokens[0] == want[0][: want[0].index(eos) + 1]  # stopped by EOS
    assert res.tokens[1:] == want[1:]
    _check_stats(res, K)
    accepted = [tuple(s["accepted_per_position"]) for s in res.stats]
    rounds = [s["rounds"] for s in res.stats]
    assert len(set(rounds)) == 3 and len(set(accepted)) > 1, (accepted, rounds)
    for s in res.stats:
        assert 0 < s["accepted_per_position"][-1] < s["rounds"] - 1  # some rounds rejected, some not
    for b, p in enumerate(prompts):
        single = spec(world, [p], K, eos_ids=(eos,))
        assert single.tokens[0] == res.tokens[b], b
        assert single.stats[0] == res.stats[b], b


def test_random_draft_rows_match_single_runs(rworld, rref, prompts):
    """Rows of different prompt lengths do not disturb each other (same bucket: one program)."""
    rng = np.random.default_rng(5)
    batch = [rng.integers(0, V, n).tolist() for n in (33, 50, 64)]
    K = 3
    res = spec(rworld, batch, K)
    want, gap = greedy_reference(rworld[0], batch, MAX_NEW)
    assert gap > 1e-4
    assert res.tokens == want
    for b, p in enumerate(batch):
        single = spec(rworld, [p], K)
        assert single.tokens[0] == res.tokens[b]
        assert single.stats[0] == res.stats[b]


def test_spec_equals_plain_decoding(rworld, prompts, rref):
    plain = generate((CFG, rworld[0]), None, prompts, max_new_tokens=MAX_NEW, mode="ar")
    assert plain.tokens == rref
    assert [s["rounds"] for s in plain.stats] == [MAX_NEW] * 3


def _homogeneous(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square p-value that two samples of ids come from one distribution (ids expected
    fewer than 5 times pooled into one cell)."""
    ca, cb = np.bincount(a, minlength=V), np.bincount(b, minlength=V)
    big = (ca + cb) * min(len(a), len(b)) / (len(a) + len(b)) >= 5
    table = np.stack([np.append(ca[big], ca[~big].sum()), np.append(cb[big], cb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    return stats.chi2_contingency(table).pvalue


def test_sampled_spec_tokens_are_distributed_as_plain_sampling(rworld):
    """End to end at temperature > 0, many rows of one prompt: at each of the first positions
    (the prefill's token, then several spec rounds' accepted drafts, residual draws and bonus
    tokens, after rollbacks of the caches) spec's tokens have the distribution of plain sampling."""
    tp, dp = rworld[:2]
    N, prompt = 4000, [5, 17, 42, 8]
    kw = dict(max_new_tokens=10, temperature=1.5)
    ar = np.asarray(generate((CFG, tp), None, [prompt] * N, seed=1, **kw).tokens)
    res = generate((CFG, tp), (DCFG, dp), [prompt] * N, mode="spec", num_draft_tokens=3, seed=2, **kw)
    sp = np.asarray(res.tokens)
    accepted = np.mean([s["acceptance_rate"][0] for s in res.stats])
    assert 0.1 < accepted < 0.9  # both the accept and the residual paths are exercised
    for pos in range(10):
        pval = _homogeneous(ar[:, pos], sp[:, pos])
        assert pval > 1e-3, f"position {pos}: chi-square p {pval:.2e}"


def test_draft_step_at_out_index_matches_the_full_step():
    """Catching up computes the draft's output only at each row's last accepted pair: the same
    output as the full step there, and the same cache (every pair's keys and values)."""
    tp, dp = random_world()
    B, T, L = 3, 5, 20
    rng = np.random.default_rng(4)
    tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    hidden = jnp.asarray(rng.standard_normal((B, T, DCFG.hidden_size)), jnp.float32)
    positions = jnp.asarray(L + np.arange(T)[None] + np.array([[0], [3], [7]]), jnp.int32)
    cache = D.init_cache(DCFG, B, 64)
    cache = jax.tree.map(lambda x: x + jnp.asarray(rng.standard_normal(x.shape), x.dtype), cache)
    full, full_cache = D.step(dp, DCFG, tp["embed"], tokens, hidden, positions, cache, window=64)
    at = jnp.asarray([[4], [0], [2]], jnp.int32)
    out, out_cache = D.step(dp, DCFG, tp["embed"], tokens, hidden, positions, cache, window=64, out_index=at)
    assert out.shape == (B, 1, DCFG.hidden_size)
    want = np.take_along_axis(np.asarray(full), np.asarray(at)[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(out_cache), jax.tree.leaves(full_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    no_cache, _ = D.step(dp, DCFG, tp["embed"], tokens, hidden, positions, out_index=at)
    assert no_cache.shape == (B, 1, DCFG.hidden_size)
