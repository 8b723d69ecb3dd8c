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

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax.config import ModelConfig
from specexit_jax.engine import generate

V = 64
CFG = ModelConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=16, qk_norm=True)
DCFG = D.DraftConfig.for_target(CFG)
MAX_NEW = 32  # one output bucket for every call below
T_REF = 128


def random_world():
    return M.init_params(CFG, jax.random.key(0), scale=0.4), D.init_params(DCFG, jax.random.key(1), scale=0.3)


def cycle_world(seed: int = 0, wrong_positions=()):
    """A target whose greedy next token is `f(last)` (one cycle through the vocab: every layer's
    `wo` and `w_down` are zero, the embeddings one-hot, the head a lookup table), and a draft
    that predicts it exactly: `fc` maps the feature of token `t` to a point on a circle at
    angle `pos(f(t))`, the draft's MLP rotates by one step, its head reads the angle, and `d2t`
    maps cycle positions back to token ids. Cycle positions in `wrong_positions` are mapped to a
    wrong id, so drafts of those tokens are rejected."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(V)  # position on the cycle -> token id
    pos = np.argsort(perm)
    f = np.empty(V, np.int64)
    f[perm] = perm[(np.arange(V) + 1) % V]
    H = CFG.hidden_size
    tp = jax.tree.map(np.array, M.init_params(CFG, jax.random.key(seed), scale=0.4))
    tp["embed"] = np.eye(V, H, dtype=np.float32) * 2.0
    for lp in tp["layers"]:
        lp["wo"][:] = 0.0
        lp["w_down"][:] = 0.0
    lm = 0.1 * rng.standard_normal((H, V)).astype(np.float32)
    lm[np.arange(V), f] = 3.0
    tp["lm_head"] = lm
    dp = jax.tree.map(np.array, D.init_params(DCFG, jax.random.key(seed + 1), scale=0.3))
    Hd, F = DCFG.hidden_size, DCFG.intermediate_size
    step = 2 * np.pi / V
    circle = lambda a: np.stack([np.cos(step * a), np.sin(step * a), np.ones(np.shape(a))], -1)
    fc = np.zeros((3 * H, Hd + 3), np.float32)
    fc[np.arange(V), :3] = circle(pos + 1) / 2.0  # feature of token t -> position of f(t)
    dp["fc"] = fc
    dp["wo"][:] = 0.0
    rms2 = 2.0 / Hd  # mean square of the draft hidden (|h|^2 = 2)
    gate = 40.0 * np.sqrt(rms2)  # silu(40) = 40 to fp32 precision: the MLP is linear in h
    dp["w_gate"] = np.zeros((Hd, F), np.float32)
    dp["w_gate"][2, :2] = gate
    dp["w_up"] = np.zeros((Hd, F), np.float32)
    dp["w_up"][0, 0] = dp["w_up"][1, 1] = 1.0
    rot = np.array([[np.cos(step), -np.sin(step)], [np.sin(step), np.cos(step)]])
    dp["w_down"] = np.zeros((F, Hd), np.float32)
    dp["w_down"][:2, :2] = ((rot - np.eye(2)) * rms2 / gate).T
    dp["lm_head"] = np.zeros((Hd, V), np.float32)
    dp["lm_head"][0] = 10 * np.cos(step * np.arange(V))
    dp["lm_head"][1] = 10 * np.sin(step * np.arange(V))
    target_ids = perm.copy()
    for a in wrong_positions:
        target_ids[a] = perm[(a + 7) % V]
    dp["d2t"] = (target_ids - np.arange(V)).astype(np.int32)
    return jax.tree.map(jnp.asarray, tp), jax.tree.map(jnp.asarray, dp), perm


def greedy_reference(tp, prompts, n):
    """Greedy decoding by repeated full (cache-free) target passes; also the smallest gap between
    the best and second-best logit met on the way (how safe the comparison is)."""
    B = len(prompts)
    seqs = [list(p) for p in prompts]
    gap = np.inf
    for _ in range(n):
        buf = np.zeros((B, T_REF), np.int32)
        for b, s in enumerate(seqs):
            buf[b, : len(s)] = s
        logits = np.asarray(M.target_logits(tp, CFG, jnp.asarray(buf)))
        for b, s in enumerate(seqs):
            top2 = np.sort(logits[b, len(s) - 1])[-2:]
            gap = min(gap, top2[1] - top2[0])
            s.append(int(logits[b, len(s) - 1].argmax()))
    return [s[len(p):] for s, p in zip(seqs, prompts)], gap


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
    perm = world[2]
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
