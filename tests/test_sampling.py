"""Sampling distributions and speculative verification against exact references.

`probs` is checked against an independent NumPy temperature / top-k / top-p. The rejection
sampler is checked statistically: the tokens one round emits must be distributed exactly as the
target's `p`, whatever the draft's `q`, and a deliberately wrong sampler must fail the same check
(so the check has the power to see a wrong residual).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from specexit_jax.sampling import SamplingParams, first_false, gumbel_noise, probs, sample, sample_with, verify

_verify = jax.jit(verify, static_argnames=("sampling",))

# ------------------------------------------------------------------------------------------------
# probs


def probs_reference(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Softmax(logits / T), restricted to the top-k ids, renormalised, then to the smallest set of
    the most likely ids whose mass reaches top_p, renormalised. One row `[V]`, float64."""
    z = logits.astype(np.float64) / temperature
    V = z.shape[0]
    order = np.argsort(-z)
    k = V if top_k == 0 else min(top_k, V)
    kept = order[:k]
    w = np.exp(z[kept] - z[kept].max())
    w /= w.sum()
    mass_before = np.cumsum(w) - w
    kept = kept[mass_before < top_p]
    out = np.zeros(V)
    e = np.exp(z[kept] - z[kept].max())
    out[kept] = e / e.sum()
    return out


def _nucleus_is_ambiguous(logits, temperature, top_k, top_p, tol=1e-4) -> bool:
    """True when top_p lies within `tol` of a cumulative mass (float rounding may decide)."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z)
    k = len(z) if top_k == 0 else min(top_k, len(z))
    w = np.exp(z[order[:k]] - z[order[:k]].max())
    w /= w.sum()
    return bool(np.any(np.abs(np.cumsum(w) - top_p) < tol))


_probs = jax.jit(probs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    temperature=st.floats(0.25, 3.0),
    top_k=st.integers(0, 40),
    top_p=st.floats(0.05, 1.0),
    spread=st.floats(0.5, 6.0),
)
def test_probs_matches_numpy_reference(seed, temperature, top_k, top_p, spread):
    rng = np.random.default_rng(seed)
    logits = (spread * rng.standard_normal((4, 32))).astype(np.float32)
    for row in logits:
        assume(len(np.unique(row)) == row.size)  # no ties
        assume(not _nucleus_is_ambiguous(row, temperature, top_k, top_p))
    got = np.asarray(_probs(jnp.asarray(logits), SamplingParams.make(temperature, top_k, top_p)))
    want = np.stack([probs_reference(r, temperature, top_k, top_p) for r in logits])
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-4)
    # The support is exactly the reference's (no id kept or dropped by a rounding slip).
    np.testing.assert_array_equal(got > 0, want > 0)


def test_probs_edge_settings():
    logits = jnp.asarray([[3.0, 1.0, 2.0, -1.0, 0.5]])
    # top_k = 1 is greedy, whatever the temperature.
    p = np.asarray(probs(logits, SamplingParams.make(2.0, 1, 1.0)))
    np.testing.assert_array_equal(p, [[1, 0, 0, 0, 0]])
    # A tiny top_p keeps the most likely id only.
    p = np.asarray(probs(logits, SamplingParams.make(1.0, 0, 1e-3)))
    np.testing.assert_array_equal(p, [[1, 0, 0, 0, 0]])
    # top_k larger than the vocab is no restriction.
    p = np.asarray(probs(logits, SamplingParams.make(1.0, 50, 1.0)))
    np.testing.assert_allclose(p[0], probs_reference(np.asarray(logits[0]), 1.0, 0, 1.0), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# greedy verification


def test_noise_drawn_ahead_gives_the_same_ids_as_sample():
    """The draft chain draws the Gumbel noise of its K samples in one vmapped call; each id must
    be the one `sample` draws with that key (so sampled outputs do not change)."""
    keys = jax.random.split(jax.random.key(7), 4)
    logits = 4 * jax.random.normal(jax.random.key(8), (4, 3, 37))
    p = jax.nn.softmax(logits, axis=-1)
    noise = jax.jit(jax.vmap(lambda k: gumbel_noise(k, (3, 37))))(keys)
    for _ in range(3):
        want = np.stack([np.asarray(sample(keys[i], p[i])) for i in range(4)])
        got = np.stack([np.asarray(sample_with(noise[i], p[i])) for i in range(4)])
        np.testing.assert_array_equal(got, want)
        keys = jax.vmap(lambda k: jax.random.split(k, 1)[0])(keys)
        noise = jax.vmap(lambda k: gumbel_noise(k, (3, 37)))(keys)


def test_first_false():
    ok = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(first_false(ok)), [2, 4, 0])


def test_greedy_verify_hand_made():
    V = 8
    best = np.asarray([[2, 5, 1, 3], [2, 5, 1, 3], [2, 5, 1, 3], [2, 5, 1, 3]])  # target argmax
    logits = np.full((4, 4, V), -1.0, np.float32)
    for b in range(4):
        for t in range(4):
            logits[b, t, best[b, t]] = 4.0
            logits[b, t, (best[b, t] + 1) % V] = 3.5  # a close runner-up
    drafts = np.asarray(
        [
            [2, 5, 4],  # accepts 2, then the target's argmax at position 2
            [2, 5, 1],  # accepts all 3, then the bonus token
            [7, 5, 1],  # rejects the first
            [6, 5, 1],  # first is forced: accepted anyway, then 5 and 1 match
        ],
        np.int32,
    )
    forced = np.zeros((4, 3), bool)
    forced[3, 0] = True
    n, nxt = _verify(
        jnp.asarray(logits), jnp.asarray(drafts), None, SamplingParams.make(), jax.random.key(0),
        jnp.asarray(forced), sampling=False,
    )
    np.testing.assert_array_equal(np.asarray(n), [2, 3, 0, 3])
    np.testing.assert_array_equal(np.asarray(nxt), [1, 3, 2, 3])


def test_greedy_verify_without_drafts_is_argmax():
    logits = jax.random.normal(jax.random.key(3), (5, 1, 11))
    n, nxt = _verify(
        logits, jnp.zeros((5, 0), jnp.int32), None, SamplingParams.make(), jax.random.key(0),
        jnp.zeros((5, 0), bool), sampling=False,
    )
    np.testing.assert_array_equal(np.asarray(n), 0)
    np.testing.assert_array_equal(np.asarray(nxt), np.argmax(np.asarray(logits[:, 0]), -1))


# ------------------------------------------------------------------------------------------------
# rejection sampling: exactness

V = 7
K = 2
N = 200_000
SP = SamplingParams.make(0.8, 5, 1.0)  # top-k leaves two ids with p = 0 at each position
TV_BOUND = 0.015
P_VALUE_BOUND = 1e-3


@pytest.fixture(scope="module")
def problem():
    """Fixed target logits `[K+1,V]`, their exact `p` (NumPy) and draft distributions `q [K,V]`
    that differ from `p` (and put mass on ids that `p` excludes)."""
    rng = np.random.default_rng(7)
    logits = (1.5 * rng.standard_normal((K + 1, V))).astype(np.float32)
    p = np.stack([probs_reference(l, 0.8, 5, 1.0) for l in logits])
    q = rng.dirichlet(np.full(V, 0.8), size=K)
    q = q / q.sum(-1, keepdims=True)
    for i in range(K):
        tv = 0.5 * np.abs(p[i] - q[i]).sum()
        assert 0.15 < tv < 0.85, tv  # different enough to matter, close enough to accept often
        assert q[i][p[i] == 0].sum() > 0.01  # the draft proposes ids the target never emits
    return logits, p, q.astype(np.float32)


def _draft_then(verify_fn, logits, q, key):
    """One round for N independent rows: drafts drawn from q, then `verify_fn`.
    Returns `n [N]`, `next [N]`, `drafts [N,K]`."""
    k_draft, k_verify = jax.random.split(key)
    qs = jnp.broadcast_to(jnp.asarray(q), (N, K, V))
    drafts = jax.random.categorical(k_draft, jnp.log(qs), axis=-1).astype(jnp.int32)
    tl = jnp.broadcast_to(jnp.asarray(logits), (N, K + 1, V))
    n, nxt = verify_fn(tl, drafts, qs, SP, k_verify, jnp.zeros((N, K), bool))
    return n, nxt, drafts


def _sampling_verify(tl, drafts, qs, sp, key, forced):
    return verify(tl, drafts, qs, sp, key, forced, sampling=True)


def _wrong_verify(residual: str):
    """The same sampler with a classic mistake: on rejection it resamples from `p` itself
    (`residual="p"`), or it never rejects and keeps the draft (`residual="none"`)."""

    def fn(tl, drafts, qs, sp, key, forced):
        k_acc, k_next = jax.random.split(key)
        p = probs(tl, sp)
        B = tl.shape[0]
        if residual == "none":
            return jnp.full((B,), K, jnp.int32), jax.random.categorical(
                k_next, jnp.log(p[:, K]), axis=-1
            ).astype(jnp.int32)
        px = jnp.take_along_axis(p[:, :K], drafts[..., None], axis=-1)[..., 0]
        qx = jnp.take_along_axis(qs, drafts[..., None], axis=-1)[..., 0]
        u = jax.random.uniform(k_acc, (B, K))
        n = first_false(u * qx < px)
        p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
        return n, jax.random.categorical(k_next, jnp.log(p_n), axis=-1).astype(jnp.int32)

    return fn


def _emitted(n, nxt, drafts):
    """The first and second tokens one round emits (second only where the round emits two)."""
    n, nxt, drafts = map(np.asarray, (n, nxt, drafts))
    first = np.where(n >= 1, drafts[:, 0], nxt)
    has_second = n >= 1
    second = np.where(n >= 2, drafts[:, 1], nxt)[has_second]
    return first, second, n


def _matches(samples: np.ndarray, p: np.ndarray) -> tuple[bool, float, float]:
    """Whether `samples` look drawn from `p`: total variation below the bound and a chi-square
    p-value above it (ids with p = 0 must never appear)."""
    counts = np.bincount(samples, minlength=V).astype(np.float64)
    emp = counts / counts.sum()
    tv = 0.5 * np.abs(emp - p).sum()
    if np.any(counts[p == 0] > 0):
        return False, tv, 0.0
    support = p > 0
    pval = stats.chisquare(counts[support], counts.sum() * p[support]).pvalue
    return tv < TV_BOUND and pval > P_VALUE_BOUND, tv, pval


@functools.cache
def _run(which: str):
    fn = {"right": _sampling_verify, "resample_p": _wrong_verify("p"), "no_reject": _wrong_verify("none")}[which]
    return jax.jit(lambda logits, q, key: _draft_then(fn, logits, q, key))


def test_rejection_sampler_first_token_is_exact(problem):
    logits, p, q = problem
    n, nxt, drafts = _run("right")(logits, q, jax.random.key(11))
    first, _, n = _emitted(n, nxt, drafts)
    ok, tv, pval = _matches(first, p[0])
    assert ok, f"first emitted token is not distributed as p_0: TV {tv:.4f}, chi-square p {pval:.2e}"
    # The acceptance probability of the first draft is exactly sum(min(p_0, q_0)).
    want = np.minimum(p[0], q[0]).sum()
    assert abs(np.mean(n >= 1) - want) < 4 * np.sqrt(want * (1 - want) / N) + 1e-4


def test_rejection_sampler_second_token_is_exact(problem):
    """Given that the first draft was accepted, the second emitted token (second draft if it is
    accepted, else the residual resample) is distributed as p_1; given all drafts accepted, the
    bonus token is distributed as p_K."""
    logits, p, q = problem
    n, nxt, drafts = _run("right")(logits, q, jax.random.key(12))
    _, second, n = _emitted(n, nxt, drafts)
    assert second.size > N // 4
    ok, tv, pval = _matches(second, p[1])
    assert ok, f"second emitted token is not distributed as p_1: TV {tv:.4f}, chi-square p {pval:.2e}"
    bonus = np.asarray(nxt)[n == K]
    assert bonus.size > N // 20
    ok, tv, pval = _matches(bonus, p[K])
    assert ok, f"bonus token is not distributed as p_K: TV {tv:.4f}, chi-square p {pval:.2e}"


@pytest.mark.parametrize("which", ["resample_p", "no_reject"])
def test_wrong_sampler_fails_the_same_check(problem, which):
    logits, p, q = problem
    n, nxt, drafts = _run(which)(logits, q, jax.random.key(13))
    first, _, _ = _emitted(n, nxt, drafts)
    ok, tv, pval = _matches(first, p[0])
    assert not ok, f"the check cannot tell a wrong sampler ({which}) apart: TV {tv:.4f}, p {pval:.2e}"
    # ... and not by luck: its exact output distribution is far from p_0.
    if which == "resample_p":
        beta = np.minimum(p[0], q[0]).sum()
        wrong = np.minimum(p[0], q[0]) + (1 - beta) * p[0]
    else:
        wrong = q[0]
    assert 0.5 * np.abs(wrong - p[0]).sum() > 3 * TV_BOUND


def test_forced_drafts_are_kept_under_sampling(problem):
    """A forced draft (e.g. `</think>`) is accepted even where the target gives it probability 0."""
    logits, p, q = problem
    banned = int(np.flatnonzero(p[0] == 0)[0])
    B = 64
    drafts = jnp.full((B, K), banned, jnp.int32)
    forced = jnp.zeros((B, K), bool).at[:, 0].set(True)
    n, _ = _verify(
        jnp.broadcast_to(jnp.asarray(logits), (B, K + 1, V)), drafts,
        jnp.broadcast_to(jnp.asarray(q), (B, K, V)), SP, jax.random.key(5), forced, sampling=True,
    )
    n = np.asarray(n)
    assert np.all(n >= 1)
    if p[1, banned] == 0:
        assert np.all(n == 1)  # the unforced second draft has p = 0: always rejected
