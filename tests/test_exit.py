"""The speculative-exit policy: its pure functions against Python references (hypothesis), and the
decode loop's thinking control (signal exit, closing text, budgets, minimum) against a token-level
reference that applies the same rules one greedy token at a time.

Loop tests hold the draft's signals constant (the `fc` signal columns are zero: confidence 0.5,
progress 0.5, remain 1.0), so whether the thresholds pass is known in advance and the expected
tokens do not depend on how rounds fall.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax.exit import (
    ExitConfig,
    ewma_update,
    first_match,
    first_passing_boundary,
    signals_pass,
    surprised,
    window_update,
)
from specexit_jax.sampling import SamplingParams, token_probs
from specexit_jax.engine import decode, generate, prefill

import worlds
from worlds import CFG, DCFG, T_REF, V, cycle_world

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------
# Pure functions

B_P, T_P, W_P = 3, 5, 4

_ewma = jax.jit(ewma_update)
_window = jax.jit(window_update)
_first_match = jax.jit(first_match)
_signals_pass = jax.jit(signals_pass)


@PROPS
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.floats(-50, 50, width=32), min_size=B_P * 3, max_size=B_P * 3),
            st.lists(st.booleans(), min_size=B_P, max_size=B_P),
        ),
        min_size=1,
        max_size=8,
    ),
    alpha=st.floats(0.01, 1.0),
)
def test_ewma_update_matches_loop(steps, alpha):
    s = jnp.zeros((B_P, 3), jnp.float32)
    started = jnp.zeros((B_P,), bool)
    want = [None] * B_P
    for xs, upd in steps:
        x = np.asarray(xs, np.float32).reshape(B_P, 3)
        s, started = _ewma(s, started, jnp.asarray(x), jnp.float32(alpha), jnp.asarray(upd))
        for b in range(B_P):
            if upd[b]:
                want[b] = x[b].astype(np.float64) if want[b] is None else alpha * x[b] + (1 - alpha) * want[b]
    for b in range(B_P):
        assert bool(started[b]) == (want[b] is not None)
        expect = np.zeros(3) if want[b] is None else want[b]
        np.testing.assert_allclose(np.asarray(s[b]), expect, rtol=1e-5, atol=5e-4)


@PROPS
@given(
    pushes=st.lists(
        st.tuples(
            st.lists(st.floats(-10, 10, width=32), min_size=B_P * T_P * 3, max_size=B_P * T_P * 3),
            st.lists(st.integers(0, T_P), min_size=B_P, max_size=B_P),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_window_update_mean_of_last_w(pushes):
    buf = jnp.zeros((B_P, W_P, 3), jnp.float32)
    count = jnp.zeros((B_P,), jnp.int32)
    seen = [[] for _ in range(B_P)]
    for xs, ns in pushes:
        x = np.asarray(xs, np.float32).reshape(B_P, T_P, 3)
        buf, count, mean = _window(buf, count, jnp.asarray(x), jnp.asarray(ns, jnp.int32))
        for b in range(B_P):
            seen[b].extend(x[b, : ns[b]])
            last = np.asarray(seen[b][-W_P:], np.float64).reshape(-1, 3)
            assert int(count[b]) == len(last)
            expect = last.mean(0) if len(last) else np.zeros(3)
            np.testing.assert_allclose(np.asarray(mean[b]), expect, rtol=1e-5, atol=1e-5)


@PROPS
@given(
    tokens=st.lists(st.integers(0, 6), min_size=B_P * 6, max_size=B_P * 6),
    valid=st.lists(st.booleans(), min_size=B_P * 6, max_size=B_P * 6),
    ids=st.lists(st.integers(-1, 6), min_size=2, max_size=2),
)
def test_first_match_matches_loop(tokens, valid, ids):
    tok = np.asarray(tokens, np.int32).reshape(B_P, 6)
    val = np.asarray(valid).reshape(B_P, 6)
    got = np.asarray(_first_match(jnp.asarray(tok), jnp.asarray(ids, jnp.int32), jnp.asarray(val)))
    for b in range(B_P):
        want = next((t for t in range(6) if val[b, t] and tok[b, t] in ids), 6)
        assert got[b] == want


def _f32(lo, hi):
    """fp32 values without subnormals (XLA on CPU flushes them to zero)."""
    return st.floats(lo, hi, width=32, allow_subnormal=False)


@PROPS
@given(
    s=st.lists(_f32(0, 400), min_size=B_P * 3, max_size=B_P * 3),
    thresholds=st.tuples(_f32(0, 1), _f32(0, 1), _f32(0, 400)),
    active=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_signals_pass_respects_active(s, thresholds, active):
    sig = np.asarray(s, np.float32).reshape(B_P, 3)
    names = [n for n, a in zip(D.SIGNALS, active) if a]
    ex = ExitConfig(signals=tuple(names), confidence=thresholds[0], progress=thresholds[1], remain=thresholds[2])
    got = np.asarray(_signals_pass(jnp.asarray(sig), ex.traced()))
    t = np.asarray(thresholds, np.float32)
    for b in range(B_P):
        checks = [sig[b, 0] > t[0], sig[b, 1] > t[1], sig[b, 2] < t[2]]
        assert got[b] == all(c for c, a in zip(checks, active) if a)


def test_exit_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown exit signal"):
        ExitConfig(signals=("confidence", "mood"))
    with pytest.raises(ValueError, match="smoothing"):
        ExitConfig(smoothing="median")
    with pytest.raises(ValueError, match="ewma"):
        ExitConfig(ewma=0.0)
    with pytest.raises(ValueError, match="closing"):
        ExitConfig(think_end_id=1, closing_ids=(2, 3), max_think_tokens=2)
    for bad in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="surprise"):
            ExitConfig(surprise=bad)
    assert ExitConfig(smoothing="boundary", surprise=0.2).traced().surprise == pytest.approx(0.2)


def test_surprised_marks_every_position_from_the_first_low_probability():
    token_p = jnp.asarray([[0.9, 0.1, 0.8, 0.7], [0.5, 0.6, 0.05, 0.01], [0.3, 0.3, 0.3, 0.3]])
    valid = jnp.asarray([[True] * 4, [True, True, False, False], [True] * 4])
    got = np.asarray(surprised(token_p, valid, 0.2))
    np.testing.assert_array_equal(got, [[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_first_passing_boundary_skips_failing_and_vetoed_boundaries():
    ex = ExitConfig(confidence=0.6, progress=0.3, remain=50.0).traced()
    good, low_conf, far = [0.9, 0.5, 10.0], [0.4, 0.5, 10.0], [0.9, 0.5, 80.0]
    sig = jnp.asarray([
        [good, low_conf, good, good],  # boundaries 1, 2: 1 fails, 2 passes
        [good, far, low_conf, good],  # boundaries 1, 2: both fail
        [good, good, good, good],  # boundaries 0, 3: a surprise at 1 vetoes only 3
        [good, good, good, good],  # boundaries 1, 3: a surprise at 1 vetoes both
        [good, good, good, good],  # no boundary
    ], jnp.float32)
    is_boundary = jnp.asarray([[0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]], bool)
    vetoed = jnp.asarray([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    got = np.asarray(first_passing_boundary(sig, is_boundary, vetoed, ex))
    np.testing.assert_array_equal(got, [2, 4, 0, 4, 4])


def test_token_probs_at_the_sampling_temperature():
    logits = jnp.asarray([[0.0, np.log(3.0), -1e9]], jnp.float32)
    tokens = jnp.asarray([[1, 0, 2]])
    logits3 = jnp.broadcast_to(logits[:, None], (1, 3, 3))
    at1 = token_probs(logits3, tokens, SamplingParams.make(1.0))
    np.testing.assert_allclose(np.asarray(at1), [[0.75, 0.25, 0.0]], atol=1e-6)
    at_half = token_probs(logits3, tokens, SamplingParams.make(0.5))  # weights 1 : 9
    np.testing.assert_allclose(np.asarray(at_half), [[0.9, 0.1, 0.0]], atol=1e-6)
    greedy = token_probs(logits3, tokens, SamplingParams.make(0.0))
    np.testing.assert_allclose(np.asarray(greedy), [[1.0, 0.0, 0.0]], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Models. Every loop test below uses these shapes (3 prompts bucketed to 64 tokens, K = 4,
# max_new_tokens = 32), so each (mode, closing length) compiles once.

K = 4
MAX_NEW = 32
PASS = dict(confidence=0.4, progress=0.3, remain=200.0)  # constant signals pass these
NEVER = dict(confidence=0.995, progress=0.3, remain=200.0)


def _constant_signals(dp: dict) -> dict:
    """Zero `fc`'s signal columns: confidence = progress = sigmoid(0) = 0.5, remain = exp(0) = 1."""
    fc = np.array(dp["fc"])
    fc[:, DCFG.hidden_size:] = 0.0
    return dict(dp, fc=jnp.asarray(fc))


def random_world():
    tp, dp = worlds.random_world()
    return tp, _constant_signals(dp)


def policy_reference(tp, prompts, n, *, think_end, splits=(), exit_on_split=False, min_think=0,
                     max_think=None, closing=(), continue_id=None):
    """Greedy decoding, one full (cache-free) target pass per token, with the thinking rules
    applied token by token. Every row starts inside the thinking section. Returns the tokens
    and per-row `(think_tokens, exit_position, exit_reason)`."""
    B = len(prompts)
    seqs = [list(p) for p in prompts]
    outs = [[] for _ in range(B)]
    rows = [dict(in_think=True, count=0, forced=[], pos=-1, reason="none") for _ in range(B)]
    for _ in range(n):
        buf = np.zeros((B, T_REF), np.int32)
        for b, s in enumerate(seqs):
            buf[b, : len(s)] = s
        logits = np.asarray(M.target_logits(tp, CFG, jnp.asarray(buf)))
        for b in range(B):
            r, out = rows[b], outs[b]
            forced = bool(r["forced"])
            tok = r["forced"].pop(0) if forced else int(logits[b, len(seqs[b]) - 1].argmax())
            if r["in_think"]:
                if tok == think_end:
                    if not forced and continue_id is not None and r["count"] < min_think:
                        tok = continue_id
                        r["count"] += 1
                    else:
                        r["in_think"] = False
                        if not forced:
                            r["pos"], r["reason"] = len(out), "natural"
                else:
                    r["count"] += 1
                    if not forced:
                        hit = None
                        if max_think is not None and r["count"] == max_think - len(closing):
                            hit = "budget"
                        if exit_on_split and tok in splits and r["count"] >= min_think:
                            hit = "signal"
                        if hit:
                            r["forced"] = list(closing) + [think_end]
                            r["pos"], r["reason"] = len(out) + 1, hit
            out.append(tok)
            seqs[b].append(tok)
    info = [(r["count"], r["pos"], r["reason"]) for r in rows]
    return outs, info


def first_index(seq, tok):
    return seq.index(tok) if tok in seq else None


def run(world, prompts, mode, ex, **kw):
    tp, dp = world[:2]
    draft = None if mode == "ar" or kw.pop("no_draft", False) else (DCFG, dp)
    return generate((CFG, tp), draft, prompts, max_new_tokens=kw.pop("max_new_tokens", MAX_NEW),
                      mode=mode, exit=ex, num_draft_tokens=K, **kw)


def check_against(res, want, info, rows=None):
    for b in rows if rows is not None else range(len(want)):
        assert res.tokens[b] == want[b], f"row {b}"
        think, pos, reason = info[b]
        s = res.stats[b]
        assert (s["think_tokens"], s["exit_position"], s["exit_reason"]) == (think, pos, reason), f"row {b}"


@pytest.fixture(scope="module")
def rworld():
    return random_world()


@pytest.fixture(scope="module")
def cworld():
    return cycle_world(0)


@pytest.fixture(scope="module")
def rprompts():
    rng = np.random.default_rng(0)
    return [rng.integers(0, V, n).tolist() for n in (3, 17, 40)]


@pytest.fixture(scope="module")
def rref(rworld, rprompts):
    """Plain greedy tokens of the random target (no thinking marker ever emitted)."""
    toks, _ = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=-7)
    return toks


@pytest.fixture(scope="module")
def rids(rref):
    """Ids chosen from the reference: `s0` first emitted by row 0 at `j0` (not by rows 1, 2),
    `s1` first emitted by row 1 at `j1 > j0` (not by row 2 nor row 0 before `j0`), and ids no row
    emits (`think_end`, closing text)."""
    r0, r1, r2 = rref
    s0 = next(t for j, t in enumerate(r0) if 3 <= j <= 10 and r0.index(t) == j and t not in r1 + r2)
    j0 = r0.index(s0)
    s1 = next(t for j, t in enumerate(r1) if j0 + 4 <= j <= 25 and r1.index(t) == j
              and t not in r2 and t not in r0[: j0 + 1] and t != s0)
    unused = [t for t in range(V) if t not in r0 + r1 + r2]
    assert len(unused) >= 4
    return dict(s0=s0, j0=j0, s1=s1, j1=r1.index(s1), think_end=unused[0], closing=tuple(unused[1:3]),
                cont=unused[3])


# ------------------------------------------------------------------------------------------------
# (1) signal exit, (4) per row


def test_signal_exit_cuts_after_the_boundary_and_forces_think_end(rworld, rprompts, rref, rids):
    te, s0, j0 = rids["think_end"], rids["s0"], rids["j0"]
    ex = ExitConfig(think_end_id=te, step_split_ids=(s0, s0), **PASS)
    res = run(rworld, rprompts, "specexit", ex)
    row = res.tokens[0]
    assert row[: j0 + 1] == rref[0][: j0 + 1]
    assert row[j0] == s0 and row[j0 + 1] == te
    s = res.stats[0]
    assert s["exit_reason"] == "signal" and s["exit_position"] == j0 + 1
    assert s["think_tokens"] == j0 + 1
    assert s["exit_signals"] == pytest.approx({"confidence": 0.5, "progress": 0.5, "remain": 1.0}, abs=1e-4)
    # After `</think>` the model answers from the cut context, exactly as plain greedy would.
    want, info = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=te, splits=(s0,), exit_on_split=True)
    check_against(res, want, info)


def test_signal_exit_forces_closing_text_then_think_end(rworld, rprompts, rref, rids):
    te, s0, j0, (a, b) = rids["think_end"], rids["s0"], rids["j0"], rids["closing"]
    ex = ExitConfig(think_end_id=te, step_split_ids=(s0, s0), closing_ids=(a, b), **PASS)
    res = run(rworld, rprompts, "specexit", ex)
    row = res.tokens[0]
    assert row[: j0 + 1] == rref[0][: j0 + 1]
    assert row[j0 + 1 : j0 + 4] == [a, b, te]
    s = res.stats[0]
    assert s["exit_reason"] == "signal" and s["exit_position"] == j0 + 1
    assert s["think_tokens"] == j0 + 3  # the closing text is part of the thinking section
    want, info = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=te, splits=(s0,), exit_on_split=True,
                                  closing=(a, b))
    check_against(res, want, info)


def test_rows_exit_independently(rworld, rprompts, rref, rids):
    te, s0, s1, j0, j1 = rids["think_end"], rids["s0"], rids["s1"], rids["j0"], rids["j1"]
    ex = ExitConfig(think_end_id=te, step_split_ids=(s0, s1), **PASS)
    res = run(rworld, rprompts, "specexit", ex)
    stats = res.stats
    assert [s["exit_reason"] for s in stats] == ["signal", "signal", "none"]
    assert stats[0]["exit_position"] == j0 + 1 and res.tokens[0][j0 + 1] == te
    assert stats[1]["exit_position"] == j1 + 1 and res.tokens[1][j1 + 1] == te
    assert res.tokens[1][: j1 + 1] == rref[1][: j1 + 1]  # row 0's exit does not touch row 1
    assert res.tokens[2] == rref[2]  # row 2 never meets a boundary: its plain tokens
    assert stats[2]["think_tokens"] == MAX_NEW and stats[2]["exit_position"] == -1
    want, info = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=te, splits=(s0, s1), exit_on_split=True)
    check_against(res, want, info)


# ------------------------------------------------------------------------------------------------
# (2) thresholds that never pass


def test_failing_thresholds_give_plain_spec_tokens(rworld, rprompts, rref, rids):
    te, s0, s1 = rids["think_end"], rids["s0"], rids["s1"]
    spec = run(rworld, rprompts, "spec", None)
    assert spec.tokens == rref
    for blocked in (NEVER, dict(PASS, progress=0.6), dict(PASS, remain=0.5)):
        ex = ExitConfig(think_end_id=te, step_split_ids=(s0, s1), **blocked)
        res = run(rworld, rprompts, "specexit", ex)
        assert res.tokens == spec.tokens, blocked
        assert [s["exit_reason"] for s in res.stats] == ["none"] * 3
        assert [s["think_tokens"] for s in res.stats] == [MAX_NEW] * 3
    # A signal that is switched off does not block the exit.
    ex = ExitConfig(think_end_id=te, step_split_ids=(s0, s1), signals=("progress", "remain"), **NEVER)
    res = run(rworld, rprompts, "specexit", ex)
    assert [s["exit_reason"] for s in res.stats] == ["signal", "signal", "none"]


# ------------------------------------------------------------------------------------------------
# (3) budgets


@pytest.fixture(scope="module")
def cprompts(cworld):
    """Prompts ending at cycle positions 0, 2 and 5; in 64 tokens no row reaches position 50."""
    perm = cworld[3]
    return [[1, 2, int(perm[0])], list(range(7, 23)) + [int(perm[2])], list(range(39)) + [int(perm[5])]]


@pytest.mark.parametrize("mode", ["budget", "specexit"])
@pytest.mark.parametrize("world_name", ["cycle", "random"])
@pytest.mark.parametrize("n_closing", [0, 2])
def test_thinking_budget_is_exact(mode, world_name, n_closing, cworld, cprompts, rworld, rprompts, rids):
    if world_name == "cycle":
        world, prompts = cworld, cprompts
        perm = cworld[3]
        te, closing, split = int(perm[50]), (int(perm[52]), int(perm[53]))[:n_closing], int(perm[60])
    else:
        world, prompts = rworld, rprompts
        te, closing, split = rids["think_end"], rids["closing"][:n_closing], rids["cont"]
    F = len(closing)
    for m in (F + 1, F + 5, F + 6, F + 10, F + 11, F + 18):
        ex = ExitConfig(think_end_id=te, step_split_ids=(split, split), closing_ids=closing, max_think_tokens=m,
                        **NEVER)
        res = run(world, prompts, mode, ex)
        want, info = policy_reference(world[0], prompts, MAX_NEW, think_end=te, max_think=m, closing=closing)
        for b in range(3):
            row, s = res.tokens[b], res.stats[b]
            assert len(row) == MAX_NEW
            assert te not in row[: m - F], (m, b)
            assert row[m - F : m + 1] == list(closing) + [te], (m, b)
            assert s["think_tokens"] == m, (m, b)
            assert s["exit_reason"] == "budget" and s["exit_position"] == m - F, (m, b)
        check_against(res, want, info)
        if world_name == "cycle":  # every draft is right, so rounds do cross the limit
            assert all(sum(s["accepted_per_position"]) > 0 for s in res.stats)


def test_budget_cut_does_not_depend_on_draft_length(cworld, cprompts):
    """The budget is a token-level rule: plain decoding (K = 0) and speculative decoding (K = 4)
    give the same tokens, also when the model's own `</think>` falls right at the limit."""
    f, perm = cworld[2], cworld[3]
    traj = []
    t = cprompts[0][-1]
    for _ in range(MAX_NEW):
        t = int(f[t])
        traj.append(t)
    closing = (int(perm[60]), int(perm[61]))
    for j in (7, 8, 9, 10, 11, 12):
        ex = ExitConfig(think_end_id=traj[j], step_split_ids=(closing[0], closing[0]), closing_ids=closing,
                        max_think_tokens=j + len(closing))
        plain = run(cworld, cprompts, "budget", ex, no_draft=True)
        spec = run(cworld, cprompts, "budget", ex)
        assert spec.tokens == plain.tokens, f"natural </think> at {j}, limit {j + len(closing)}"
        assert [s["think_tokens"] for s in spec.stats] == [s["think_tokens"] for s in plain.stats]
        assert [s["exit_reason"] for s in spec.stats] == [s["exit_reason"] for s in plain.stats]


# ------------------------------------------------------------------------------------------------
# (5) minimum thinking


@pytest.fixture(scope="module")
def two_boundaries(rref, rids):
    """Two ids row 0 emits first at `ja < jb - 1` (`ja` = rids' j0)."""
    r0 = rref[0]
    ja = rids["j0"]
    jb = next(j for j in range(ja + 3, 24) if r0.index(r0[j]) == j)
    return r0[ja], ja, r0[jb], jb


def test_min_think_suppresses_early_exit(rworld, rprompts, rids, two_boundaries):
    te = rids["think_end"]
    sa, ja, sb, jb = two_boundaries
    for min_think, exit_at in ((ja + 1, ja), (ja + 2, jb), (jb + 1, jb)):
        ex = ExitConfig(think_end_id=te, step_split_ids=(sa, sb), min_think_tokens=min_think, **PASS)
        res = run(rworld, rprompts, "specexit", ex)
        s = res.stats[0]
        assert s["exit_reason"] == "signal" and s["exit_position"] == exit_at + 1, min_think
        assert res.tokens[0][exit_at + 1] == te
        want, info = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=te, splits=(sa, sb),
                                      exit_on_split=True, min_think=min_think)
        check_against(res, want, info)


def test_continue_below_min_replaces_an_early_think_end(rworld, rprompts, rref, rids):
    r0 = rref[0]
    j = next(j for j in range(4, 12) if r0.index(r0[j]) == j)
    te, cont, split = r0[j], rids["cont"], rids["s1"]
    for min_think, replaced in ((j + 1, True), (j, False), (MAX_NEW, True)):
        ex = ExitConfig(think_end_id=te, step_split_ids=(split, split), min_think_tokens=min_think,
                        continue_below_min=True, continue_id=cont, **NEVER)
        res = run(rworld, rprompts, "specexit", ex)
        row, s = res.tokens[0], res.stats[0]
        assert row[:j] == r0[:j]
        if replaced:
            assert row[j] == cont
            assert s["exit_reason"] == "none" or s["exit_position"] > j
        else:
            assert row[j] == te and s["exit_reason"] == "natural" and s["exit_position"] == j
            assert s["think_tokens"] == j
        want, info = policy_reference(rworld[0], rprompts, MAX_NEW, think_end=te, min_think=min_think,
                                      continue_id=cont)
        check_against(res, want, info)


# ------------------------------------------------------------------------------------------------
# (6) thresholds are traced


def test_thresholds_do_not_recompile(rworld, rprompts, rids):
    te, s0, s1 = rids["think_end"], rids["s0"], rids["s1"]
    make = lambda **kw: ExitConfig(think_end_id=te, step_split_ids=(s0, s1), **kw)
    first = run(rworld, rprompts, "specexit", make(**NEVER))
    sizes = (prefill._cache_size(), decode._cache_size())
    passing = run(rworld, rprompts, "specexit", make(**PASS))
    again = run(rworld, rprompts, "specexit", make(confidence=0.45, progress=0.2, remain=50.0, ewma=0.3,
                                                   min_think_tokens=2))
    assert (prefill._cache_size(), decode._cache_size()) == sizes
    assert [s["exit_reason"] for s in first.stats] == ["none"] * 3
    assert [s["exit_reason"] for s in passing.stats] == ["signal", "signal", "none"]
    assert again.tokens == passing.tokens


# ------------------------------------------------------------------------------------------------
# Token-dependent signals: the exit follows the smoothed signals round by round


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_signal_exit_follows_the_smoothed_signals(cworld, cprompts):
    """In the cycle world every round accepts all K drafts, so rounds are known: the prefill emits
    one token, then each round K+1. The raw confidence of a position is set per token (via `fc`);
    a reference smooths the per-round means with the EWMA and exits at the first boundary of the
    first round whose smoothed signals pass."""
    tp, dp, f, perm = cworld
    pos = np.argsort(perm)
    Hd = DCFG.hidden_size
    raw_conf = np.where(pos >= 8, 4.0, -4.0) + 0.1 * (pos % 5)  # per token id: low, then high
    raw_remain = np.log(1.0 + (pos % 7))
    fc = np.array(dp["fc"])
    fc[:, Hd:] = 0.0
    fc[np.arange(V), Hd] = raw_conf / 2.0  # aux block 0 of token t is 2 * one_hot(t)
    fc[np.arange(V), Hd + 2] = raw_remain / 2.0
    world = (tp, dict(dp, fc=jnp.asarray(fc)))
    te = int(perm[50])
    splits = (int(perm[9]), int(perm[20]))  # row 0 meets both; the first while confidence is low
    alpha, conf_min = 0.6, 0.8
    ex = ExitConfig(think_end_id=te, step_split_ids=splits, confidence=conf_min, ewma=alpha, record_signals=True)
    res = run(world, cprompts, "specexit", ex)

    for b, prompt in enumerate(cprompts):
        traj = [int(f[prompt[-1]])]
        while len(traj) < MAX_NEW:
            traj.append(int(f[traj[-1]]))
        feat = [prompt[-1]] + traj[:-1]  # the token whose features produced each output
        sig = np.stack([_sigmoid(raw_conf[feat]), np.full(len(feat), 0.5), np.exp(raw_remain[feat])], -1)
        bounds = [(0, 1)] + [(s, s + K + 1) for s in range(1, MAX_NEW, K + 1)]
        smooth, exit_at = None, None
        for lo, hi in bounds:
            hi = min(hi, MAX_NEW)
            mean = sig[lo:hi].mean(0)
            smooth = mean if smooth is None else alpha * mean + (1 - alpha) * smooth
            hits = [k for k in range(lo, hi) if traj[k] in splits]
            if hits and smooth[0] > conf_min:
                exit_at = hits[0]
                break
        s = res.stats[b]
        row = res.tokens[b]
        if exit_at is None:
            assert row == traj and s["exit_reason"] == "none", b
            continue
        assert row[: exit_at + 1] == traj[: exit_at + 1] and row[exit_at + 1] == te, b
        assert s["exit_reason"] == "signal" and s["exit_position"] == exit_at + 1, b
        got = [s["exit_signals"][n] for n in D.SIGNALS]
        np.testing.assert_allclose(got, smooth, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(s["signals"]["raw"][: exit_at + 1], sig[: exit_at + 1], rtol=1e-3, atol=1e-3)
    # Row 0 passes its first boundary (confidence still low) and exits at the second.
    assert res.stats[0]["exit_position"] == res.tokens[0].index(splits[1]) + 1
    assert splits[0] in res.tokens[0][: res.stats[0]["exit_position"]]


# ------------------------------------------------------------------------------------------------
# Boundary judging and the surprise veto


@pytest.mark.parametrize("world_name", ["cycle", "random"])
@pytest.mark.parametrize("n_closing", [0, 2])
@pytest.mark.parametrize("at", [3, 4, 5, 9, 10])
def test_boundary_exit_is_greedy_decoding_up_to_the_forced_think_end(world_name, n_closing, at, cworld, cprompts,
                                                                       rworld, rprompts, rref, rids):
    """With signals that pass, `smoothing="boundary"` (and a surprise veto, which greedy decoding
    never trips: the argmax has probability 1 at temperature 0) exits right after the first
    boundary: the tokens are the target's greedy tokens up to it, then the closing text and
    `</think>`. In the cycle world every draft is accepted, so a boundary at output index 5 or 10
    ends its round (judged by the next round's first feature) and one at 3, 4 or 9 does not."""
    if world_name == "cycle":
        world, prompts, perm = cworld, cprompts, cworld[3]
        te, closing = int(perm[50]), (int(perm[52]), int(perm[53]))[:n_closing]
        ref = policy_reference(world[0], prompts, MAX_NEW, think_end=te)[0]
        world = (world[0], _constant_signals(world[1]))
    else:
        world, prompts, ref = rworld, rprompts, rref
        te, closing = rids["think_end"], rids["closing"][:n_closing]
    split = ref[0][at]
    ex = ExitConfig(think_end_id=te, step_split_ids=(split,), closing_ids=closing, smoothing="boundary",
                    surprise=0.5, **PASS)
    res = run(world, prompts, "specexit", ex)
    j = ref[0].index(split)
    assert res.tokens[0][: j + 1] == ref[0][: j + 1]
    assert res.tokens[0][j + 1 : j + 2 + n_closing] == list(closing) + [te]
    s = res.stats[0]
    assert (s["exit_reason"], s["exit_position"], s["think_tokens"]) == ("signal", j + 1, j + 1 + n_closing)
    assert not s["vetoed"]
    want, info = policy_reference(world[0], prompts, MAX_NEW, think_end=te, splits=(split,), exit_on_split=True,
                                  closing=closing)
    check_against(res, want, info)


def test_boundary_exit_reads_the_feature_after_the_boundary(cworld, cprompts):
    """Token-dependent confidence: a boundary is judged by the signals of the feature that read
    it (the one that produced the token after it), not by those of its own producer. Row 0's
    boundaries are at output indices 3 (its reader confident, its producer not) and 5 (the
    reverse); the exit is at 3. With the confidence swapped, the exit moves to 5, the last
    token of a round (judged in the next round)."""
    tp, dp, f, perm = cworld
    ref = policy_reference(tp, cprompts, MAX_NEW, think_end=int(perm[50]))[0][0]
    Hd = DCFG.hidden_size
    for reader_confident, exit_at in ((3, 3), (5, 5)):
        producer_confident = 5 if reader_confident == 3 else 3
        raw_conf = np.full(V, -4.0)
        raw_conf[ref[reader_confident]] = 4.0  # the feature reading this token
        raw_conf[ref[producer_confident - 1]] = 4.0  # the feature producing this token
        fc = np.array(dp["fc"])
        fc[:, Hd:] = 0.0
        fc[np.arange(V), Hd] = raw_conf / 2.0  # aux block 0 of token t is 2 * one_hot(t)
        world = (tp, dict(dp, fc=jnp.asarray(fc)))
        ex = ExitConfig(think_end_id=int(perm[50]), step_split_ids=(ref[3], ref[5]), smoothing="boundary", **PASS)
        res = run(world, cprompts, "specexit", ex)
        s = res.stats[0]
        assert (s["exit_reason"], s["exit_position"]) == ("signal", exit_at + 1), reader_confident
        assert res.tokens[0][: exit_at + 1] == ref[: exit_at + 1]
        assert s["exit_signals"]["confidence"] == pytest.approx(1 / (1 + np.exp(-4.0)), abs=1e-4)


def test_surprise_veto_follows_the_target_probabilities(rworld, rprompts):
    """Sampling at temperature 1: the veto never changes the tokens, only whether thinking may end.
    A reference computes the target's probability of each sampled token (full passes) and
    predicts the outcome for thresholds just above and just below the lowest probability up to
    row 0's first boundary: vetoed (tokens of `spec` with the same seed, no exit) or an exit there."""
    tp = rworld[0]
    kw = dict(temperature=1.0, seed=3)
    spec = run(rworld, rprompts, "spec", None, **kw)
    row = spec.tokens[0]
    buf = np.zeros((1, T_REF), np.int32)
    seq = rprompts[0] + row
    buf[0, : len(seq)] = seq
    logits = np.asarray(M.target_logits(tp, CFG, jnp.asarray(buf)))[0, len(rprompts[0]) - 1 : len(seq) - 1]
    p = np.exp(jax.nn.log_softmax(logits, -1))[np.arange(len(row)), row]
    j = next(j for j in range(6, 20) if row.index(row[j]) == j and p[: j + 1].min() < 0.5)
    te = next(t for t in range(V) if t not in row)
    low = float(p[: j + 1].min())
    split = row[j]
    make = lambda P: ExitConfig(think_end_id=te, step_split_ids=(split,), smoothing="boundary", surprise=P, **PASS)

    vetoed = run(rworld, rprompts, "specexit", make(low * 1.02), **kw)
    assert vetoed.tokens[0] == row
    assert vetoed.stats[0]["exit_reason"] == "none" and vetoed.stats[0]["vetoed"]

    passed = run(rworld, rprompts, "specexit", make(low * 0.98), **kw)
    assert passed.tokens[0][: j + 2] == row[: j + 1] + [te]
    assert passed.stats[0]["exit_reason"] == "signal" and passed.stats[0]["exit_position"] == j + 1
    assert not passed.stats[0]["vetoed"]


def test_surprise_threshold_does_not_recompile(rworld, rprompts, rids):
    te, s0 = rids["think_end"], rids["s0"]
    make = lambda P: ExitConfig(think_end_id=te, step_split_ids=(s0,), smoothing="boundary", surprise=P, **PASS)
    run(rworld, rprompts, "specexit", make(0.3), temperature=1.0)
    sizes = (prefill._cache_size(), decode._cache_size())
    run(rworld, rprompts, "specexit", make(0.01), temperature=1.0)
    assert (prefill._cache_size(), decode._cache_size()) == sizes
