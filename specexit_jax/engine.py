"""The generation engine: batched prefill, then one jitted `lax.while_loop` of speculative rounds.

Every mode is the same round with different static settings:

    ar        K = 0: the "verify" pass is a plain decode step
    spec      K drafts from the EAGLE-3 draft, verified in one target pass (lossless)
    specexit  spec + the exit policy on the draft's signals + thinking budgets
    budget    ar or spec + exact thinking budgets only
    deer      baseline: ar or spec + budgets + answer probing at every step boundary (DEER)

One round, per row (`L` = cache length, `last` = newest token, not yet in the cache):

    draft   d_1 from the previous round's draft output, d_2..d_K by K-1 chained (unrolled) draft steps
    verify  target over [last, d_1..d_K] at positions L..L+K -> n accepted, next token
    commit  emitted e_0..e_{c-1} (accepted drafts, then next), cut by EOS, max_new_tokens,
            the thinking budget or a signal exit (then `</think>` is forced next round; with
            boundary judging, a boundary that ends a round is judged by the next round's first
            feature, which read it, and `</think>` then takes that round's first place)
    catch   the draft re-runs over the accepted target features, so its cache matches the
            accepted text; its output at the last accepted position gives the next d_1

Rollback is by length only: the caches keep stale slots past `L + c` and overwrite them later.
Attention reads a static window of the cache that covers every row: the loop is a chain of
`while_loop`s over growing windows, so short sequences do not pay for the whole cache. With a
device mesh, params are split by `specexit_jax.sharding` (heads and MLP columns on
"tensor"), caches by rows ("data") and KV heads ("tensor"), and every per-row array by rows; the
loop is the same single jitted program, partitioned by XLA.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax import sharding as SH
from specexit_jax.cache import KVCache
from specexit_jax.config import ModelConfig
from specexit_jax.exit import (
    ExitConfig,
    ExitParams,
    ewma_update,
    first_match,
    first_passing_boundary,
    first_true,
    is_in,
    masked_mean,
    signals_pass,
    surprised,
    window_update,
)
from specexit_jax.layers import take_rows, write_rows
from specexit_jax.sampling import SamplingParams, gumbel_noise, probs, sample, sample_with, token_probs, verify

MODES = ("ar", "spec", "specexit", "budget", "deer")
REASONS = ("none", "natural", "signal", "budget")
_NONE, _NATURAL, _SIGNAL, _BUDGET = range(4)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static settings of one compiled generation program."""

    cfg: ModelConfig
    dcfg: D.DraftConfig | None
    K: int  # drafts per round (0: plain decoding)
    S: int  # cache slots
    O: int  # output buffer length (>= max_new_tokens + K + 1)
    windows: tuple[int, ...]  # attention windows, growing, the last is S
    sampling: bool
    exit_signals: bool  # signal exit on (specexit)
    limits: bool  # thinking budgets on
    continue_below_min: bool
    smoothing: str
    smooth_window: int
    surprise: bool  # veto signal exits after a surprising thinking token
    record: bool  # keep per-token signals
    probe_len: int = 0  # DEER: trial-answer tokens decoded at each step boundary (0: off)
    probe_slots: int = 0  # cache slots a probe uses past a row's length
    mesh: Mesh | None = None  # shard caches and rows over it (None: one device)


@struct.dataclass
class Knobs:
    """Traced settings: changing them does not recompile."""

    sp: SamplingParams
    ex: ExitParams
    max_new: jax.Array
    eos_ids: jax.Array  # [E]
    split_ids: jax.Array  # [M]
    think_end: jax.Array  # -1 when unknown
    forced_ids: jax.Array  # [F] closing text + </think>
    continue_id: jax.Array
    probe_ids: jax.Array  # [P] DEER: </think> + answer prefix fed before the trial answer


@struct.dataclass
class DecodeState:
    """What flows through the loop. Per-row arrays are `[B]` unless noted."""

    tokens: jax.Array  # [B,O] generated tokens
    n_out: jax.Array
    length: jax.Array  # cache length (target and draft)
    last: jax.Array  # newest token, not yet in the caches
    done: jax.Array
    tcache: KVCache
    dcache: KVCache | None
    draft_h: jax.Array | None  # [B,Hd] draft output at position length-1
    draft_logits: jax.Array | None  # [B,Vd] its logits: next round's d_1
    key: jax.Array
    forced: jax.Array  # [B,F] tokens still to force
    n_forced: jax.Array
    in_think: jax.Array
    think_count: jax.Array
    smooth: jax.Array  # [B,3] smoothed signals
    smooth_started: jax.Array
    win_buf: jax.Array  # [B,W,3] windowed-mean buffer
    win_count: jax.Array
    vetoed: jax.Array  # a surprising thinking token was accepted: no signal exit any more
    pending: jax.Array  # the newest token is a step boundary not judged yet (smoothing="boundary")
    exit_pos: jax.Array  # output index of the natural or forced `</think>` (closing text first)
    exit_reason: jax.Array
    exit_signals: jax.Array  # [B,3] smoothed signals when the exit fired
    rounds: jax.Array
    accepted: jax.Array  # [B,K] accepted drafts per position (forced ones excluded)
    proposed: jax.Array  # [B,K]
    trace: jax.Array  # [B,O,6] raw and smoothed signals per token (O = 0 when not recorded)


def _row_write(buf: jax.Array, x: jax.Array, start: jax.Array) -> jax.Array:
    """Write `x [B,T,...]` into `buf [B,O,...]` at `start[b]` (callers keep it in bounds)."""
    return write_rows(buf, x, start, axis=1)


def _at(x: jax.Array, i: jax.Array) -> jax.Array:
    """`x[b, i[b]]` for `x [B,T,...]`."""
    return take_rows(x, i[:, None])[:, 0]


def _constrain(plan: Plan, st: DecodeState) -> DecodeState:
    """Pin the state's layout on the mesh: caches by rows and KV heads, per-row arrays by rows."""
    if plan.mesh is None:
        return st
    rows = SH.MESH_AXES["batch"]
    cache = NamedSharding(plan.mesh, PartitionSpec(rows, "tensor"))
    per_row = NamedSharding(plan.mesh, PartitionSpec(rows))
    B = st.last.shape[0]

    def pin(x, spec):
        return jax.lax.with_sharding_constraint(x, spec)

    caches = {"tcache": jax.tree.map(lambda x: pin(x, cache), st.tcache)}
    if st.dcache is not None:
        caches["dcache"] = jax.tree.map(lambda x: pin(x, cache), st.dcache)
    rest = jax.tree.map(
        lambda x: pin(x, per_row) if x.ndim and x.shape[0] == B else x,
        st.replace(tcache=None, dcache=None, key=None),
    )
    return rest.replace(key=st.key, **caches)


def _pick_draft(dp, plan: Plan, knobs: Knobs, st: DecodeState, logits, noise, i):
    """Choose draft token `i` (0-based) from draft logits `[B,Vd]` (sampling: with its Gumbel
    `noise [B,Vd]`); forced tokens override it."""
    if plan.sampling:
        q = probs(logits, knobs.sp)
        tok = D.to_target_ids(dp, sample_with(noise, q))
        q = D.to_target_probs(dp, plan.dcfg, q)
    else:
        tok, q = D.to_target_ids(dp, jnp.argmax(logits, axis=-1).astype(jnp.int32)), None
    forced = i < st.n_forced
    return jnp.where(forced, st.forced[:, jnp.minimum(i, st.forced.shape[1] - 1)], tok), q


def _draft_chain(tp, dp, plan: Plan, knobs: Knobs, st: DecodeState, key, window):
    """Propose `K` tokens: d_1 from the carried logits, then `K-1` chained draft steps.

    The Gumbel noise of all `K` draws comes from one call up front (on CPU each call of the PRNG
    is a small loop of its own)."""
    B, Vd = st.draft_logits.shape
    noise = gumbel_noise(key, (plan.K, B, Vd)) if plan.sampling else [None] * plan.K
    d1, q1 = _pick_draft(dp, plan, knobs, st, st.draft_logits, noise[0], 0)
    h, tok, cache, toks, qs = st.draft_h, d1, st.dcache, [d1], [q1]
    # Unrolled: the K-1 steps are tiny, and a rolled loop adds per-step copies of its carry.
    for i in range(1, plan.K):
        pos = (st.length + i - 1)[:, None]
        h, cache = D.step(dp, plan.dcfg, tp["embed"], tok[:, None], h[:, None], pos, cache, window=window)
        h = h[:, 0]
        tok, q = _pick_draft(dp, plan, knobs, st, D.logits(dp, plan.dcfg, h), noise[i], i)
        toks.append(tok)
        qs.append(q)
    ids = jnp.stack(toks, axis=1)
    return ids, (jnp.stack(qs, axis=1) if plan.sampling else None), cache


def _exit_pending(knobs: Knobs, st: DecodeState, sig, c):
    """Judge a step boundary that ended the previous round (`st.pending`) by this round's first
    feature, which read it. Rows that pass exit now: the closing text and `</think>` are queued
    and only the first of them is kept this round (the drafts after it were not forced).

    Returns the state with those rows' queue loaded, the new `c [B]` and the rows `[B]`."""
    late = st.pending & ~st.done & signals_pass(sig[:, 0], knobs.ex)
    F = knobs.forced_ids.shape[0]
    st = st.replace(
        forced=jnp.where(late[:, None], knobs.forced_ids[None, :], st.forced),
        n_forced=jnp.where(late, F, st.n_forced),
        exit_pos=jnp.where(late, st.n_out, st.exit_pos),
        exit_reason=jnp.where(late, _SIGNAL, st.exit_reason),
        exit_signals=jnp.where(late[:, None], sig[:, 0], st.exit_signals),
    )
    return st, jnp.where(late, 1, c), late


def _boundary_exit(knobs: Knobs, e, c, cut, sig, vetoed, thinking):
    """Boundary judging within a round: the first kept boundary `e [B,K+1]` whose reading feature
    (the next position's, so the boundary must not be the last kept token) passes, unvetoed.

    `thinking [B,K+1]` where a boundary may exit (inside thinking, past the minimum). Returns
    `fire [B]`, its index `[B]`, the signals judged `[B,3]` (the first candidate's when none
    fired) and whether any boundary was judged `[B]`."""
    K1 = e.shape[1]
    idx = jnp.arange(K1)[None, :]
    read = jnp.concatenate([sig[:, 1:], sig[:, -1:]], axis=1)  # [B,K+1,3] of the reading feature
    candidates = is_in(e, knobs.split_ids) & thinking & (idx + 1 < c[:, None]) & (idx + 1 <= cut[:, None])
    at = first_passing_boundary(read, candidates, vetoed, knobs.ex)
    first = first_true(candidates)
    fire = at < K1
    judged = _at(read, jnp.minimum(jnp.where(fire, at, first), K1 - 1))
    return fire, at, judged, first < K1


def _commit(plan: Plan, knobs: Knobs, st: DecodeState, e, c, sig, token_p, accept_n):
    """Apply one round's outcome: cuts, thinking policy, output and bookkeeping.

    `e [B,K+1]` emitted tokens, of which the first `c [B]` stand; `sig [B,K+1,3]` the signals
    of the features that produced them (or None); `token_p [B,K+1]` the target's probabilities
    of them (None without the surprise veto); `accept_n [B]` accepted drafts (for stats).
    Returns the new state (caches untouched) and the final `c`.
    """
    B, K1 = e.shape
    idx = jnp.arange(K1)[None, :]
    active = ~st.done
    forcing = st.n_forced > 0
    late = jnp.zeros((B,), bool)
    if plan.exit_signals and plan.smoothing == "boundary":
        st, c, late = _exit_pending(knobs, st, sig, c)
        forcing = st.n_forced > 0

    # Forced tokens (closing text, </think>) take the first places; pop what this round used.
    fpad = jnp.pad(st.forced, ((0, 0), (0, max(0, K1 - st.forced.shape[1]))), constant_values=-1)
    e = jnp.where(idx < st.n_forced[:, None], fpad[:, :K1], e)

    # End of sequence and the token budget.
    eos_at = first_match(e, knobs.eos_ids, idx < c[:, None])
    c = jnp.where(eos_at < c, eos_at + 1, c)
    c = jnp.minimum(c, knobs.max_new - st.n_out)

    # Thinking: natural end, budgets, signal exit.
    think_at = first_match(e, knobs.think_end[None], idx < c[:, None])
    natural = st.in_think & ~forcing & (think_at < c)
    monitor = st.in_think & ~forcing
    n_think = jnp.minimum(think_at, c)  # thinking tokens in this round
    cut = c
    reason = jnp.full((B,), _NONE)
    smooth, started, win_buf, win_count = st.smooth, st.smooth_started, st.win_buf, st.win_count
    vetoed = jnp.broadcast_to(st.vetoed[:, None], (B, K1))  # [B,K+1] after each position
    if plan.surprise:
        thinking = monitor[:, None] & (idx < n_think[:, None])
        vetoed = vetoed | surprised(token_p, thinking, knobs.ex.surprise)
    if plan.limits:
        F = knobs.forced_ids.shape[0]
        allowed = knobs.ex.max_think - (F - 1) - st.think_count
        # A natural </think> right at the limit still gets the closing text, as with K = 0.
        over = monitor & (n_think >= allowed) & ~(natural & (think_at < allowed))
        cut = jnp.where(over, allowed, cut)
        reason = jnp.where(over, _BUDGET, reason)
    lo = knobs.ex.min_think - st.think_count - 1
    boundary = first_match(e, knobs.split_ids, (idx < n_think[:, None]) & (idx >= lo[:, None]))
    probe = jnp.zeros((B,), bool)
    if plan.probe_len:
        probe = monitor & active & (boundary < n_think) & (boundary + 1 <= cut)
        c = jnp.where(probe, boundary + 1, c)
        cut = jnp.where(probe & (reason == _NONE), c, cut)
    if plan.exit_signals and plan.smoothing == "boundary":
        may_exit = monitor[:, None] & (idx < n_think[:, None]) & (idx >= lo[:, None])
        fire, at, judged, any_judged = _boundary_exit(knobs, e, c, cut, sig, vetoed, may_exit)
        smooth = jnp.where((fire | any_judged)[:, None], judged, st.smooth)
        smooth = jnp.where(late[:, None], sig[:, 0], smooth)
        cut = jnp.where(fire, at + 1, cut)
        reason = jnp.where(fire, _SIGNAL, reason)
    elif plan.exit_signals:
        valid = idx < c[:, None]
        if plan.smoothing == "ewma":
            smooth, started = ewma_update(
                st.smooth, st.smooth_started, masked_mean(sig, valid), knobs.ex.ewma, monitor & active
            )
        else:
            win_buf, win_count, mean = window_update(
                st.win_buf, st.win_count, sig, jnp.where(monitor & active, c, 0)
            )
            smooth = jnp.where((win_count > 0)[:, None], mean, st.smooth)
        fire = monitor & (boundary < n_think) & signals_pass(smooth, knobs.ex) & (boundary + 1 <= cut)
        fire &= ~_at(vetoed, jnp.minimum(boundary, K1 - 1))
        cut = jnp.where(fire, boundary + 1, cut)
        reason = jnp.where(fire, _SIGNAL, reason)
    forced_exit = reason != _NONE
    c = jnp.where(forced_exit, cut, c)

    if plan.limits and plan.continue_below_min:
        early = natural & ~forced_exit & (st.think_count + think_at < knobs.ex.min_think)
        e = jnp.where(early[:, None] & (idx == think_at[:, None]), knobs.continue_id, e)
        c = jnp.where(early, think_at + 1, c)
        natural = natural & ~early

    # Thinking state after the kept tokens.
    think_at = first_match(e, knobs.think_end[None], idx < c[:, None])
    ended = st.in_think & (think_at < c)
    kept_think = jnp.where(st.in_think, jnp.minimum(think_at, c), 0)
    think_count = st.think_count + kept_think
    vetoed = jnp.where(kept_think > 0, _at(vetoed, jnp.maximum(kept_think - 1, 0)), st.vetoed)
    in_think = st.in_think & ~ended
    natural = natural & ended
    exit_pos = jnp.where(natural, st.n_out + think_at, st.exit_pos)
    exit_pos = jnp.where(forced_exit, st.n_out + c, exit_pos)
    exit_reason = jnp.where(natural, _NATURAL, jnp.where(forced_exit, reason, st.exit_reason))
    exit_signals = jnp.where(forced_exit[:, None], smooth, st.exit_signals)

    # Forced queue: pop what was used, or load the closing text + </think> on a cut.
    popped = jnp.minimum(st.n_forced, c)
    F = st.forced.shape[1]
    shifted = take_rows(jnp.pad(st.forced, ((0, 0), (0, F))), popped[:, None] + jnp.arange(F))
    forced = jnp.where(forced_exit[:, None], knobs.forced_ids[None, :], shifted)
    n_forced = jnp.where(forced_exit, F, st.n_forced - popped)
    pending = jnp.zeros_like(st.pending)
    if plan.exit_signals and plan.smoothing == "boundary":
        pending = in_think & (n_forced == 0) & ~vetoed & (c - 1 >= lo) & is_in(_at(e, c - 1), knobs.split_ids)

    # Output, lengths and stats.
    hit_eos = jnp.any((idx < c[:, None]) & is_in(e, knobs.eos_ids), axis=1)
    n_out = st.n_out + c
    length = st.length + c
    done = hit_eos | (n_out >= knobs.max_new) | (length + K1 + plan.probe_slots > plan.S)
    tokens = _row_write(st.tokens, e, st.n_out)
    trace = st.trace
    if plan.record and sig is not None:
        both = jnp.concatenate([sig, jnp.broadcast_to(smooth[:, None], sig.shape)], -1)
        trace = _row_write(trace, both, st.n_out)
    K = K1 - 1
    is_draft = jnp.arange(K)[None, :] >= st.n_forced[:, None]
    count = (active & (plan.K > 0))[:, None] & is_draft
    new = st.replace(
        tokens=tokens,
        n_out=n_out,
        length=length,
        last=_at(e, c - 1),
        done=done,
        forced=forced,
        n_forced=n_forced,
        in_think=in_think,
        think_count=think_count,
        smooth=smooth,
        smooth_started=started,
        win_buf=win_buf,
        win_count=win_count,
        vetoed=vetoed,
        pending=pending,
        exit_pos=exit_pos,
        exit_reason=exit_reason,
        exit_signals=exit_signals,
        rounds=st.rounds + active,
        accepted=st.accepted + (count & (jnp.arange(K)[None, :] < accept_n[:, None])),
        proposed=st.proposed + count,
        trace=trace,
    )
    # Finished rows keep everything as it was.
    new = jax.tree.map(
        lambda a, b: jnp.where(active.reshape(-1, *([1] * (a.ndim - 1))), a, b)
        if a.ndim and a.shape[0] == B
        else a,
        new.replace(tcache=None, dcache=None, key=None, draft_h=None, draft_logits=None),
        st.replace(tcache=None, dcache=None, key=None, draft_h=None, draft_logits=None),
    )
    return new.replace(
        tcache=st.tcache, dcache=st.dcache, key=st.key, draft_h=st.draft_h, draft_logits=st.draft_logits
    ), e, c, probe & (reason == _NONE)


def _probe_answer(tp, plan: Plan, knobs: Knobs, st: DecodeState, rows, window) -> DecodeState:
    """DEER: for `rows` that just accepted a step boundary, force `</think>` + the answer prefix,
    decode a trial answer greedily in the cache slots past each row's length (rolled back by
    length, so nothing is kept), and force `</think>` for real when the trial answer's mean token
    probability passes `probe_threshold`."""
    B = st.last.shape[0]
    P = knobs.probe_ids.shape[0]
    inputs = jnp.concatenate([st.last[:, None], jnp.broadcast_to(knobs.probe_ids, (B, P))], 1)
    positions = st.length[:, None] + jnp.arange(P + 1)
    logits, _, cache = M.forward(
        tp, plan.cfg, inputs, positions, st.tcache, window=window,
        logits_index=jnp.full((B, 1), P, jnp.int32),
    )

    def step(carry, i):
        logits, cache, alive = carry
        p = jax.nn.softmax(logits[:, 0], axis=-1)
        tok = jnp.argmax(p, axis=-1).astype(jnp.int32)
        conf = jnp.where(alive, jnp.max(p, axis=-1), 0.0)
        pos = st.length[:, None] + P + 1 + i
        logits, _, cache = M.forward(tp, plan.cfg, tok[:, None], pos, cache, window=window)
        return (logits, cache, alive & ~jnp.any(tok[:, None] == knobs.eos_ids, -1)), (conf, alive)

    (_, cache, _), (conf, alive) = jax.lax.scan(
        step, (logits, cache, jnp.ones((B,), bool)), jnp.arange(plan.probe_len)
    )
    score = jnp.sum(conf, 0) / jnp.maximum(jnp.sum(alive, 0), 1)
    fire = rows & (score > knobs.ex.probe_threshold)
    F = knobs.forced_ids.shape[0]
    return st.replace(
        tcache=cache,
        forced=jnp.where(fire[:, None], knobs.forced_ids[None, :], st.forced),
        n_forced=jnp.where(fire, F, st.n_forced),
        exit_reason=jnp.where(fire, _SIGNAL, st.exit_reason),
        exit_pos=jnp.where(fire, st.n_out, st.exit_pos),
        exit_signals=jnp.where(fire[:, None], jnp.stack([score] * 3, -1), st.exit_signals),
    )


def _catch_up(tp, dp, plan: Plan, st: DecodeState, hidden, tokens, positions, c, window):
    """Run the draft over accepted (feature, token) pairs: cache them all, and keep the output at
    pair `c-1` (the only one computed past the keys and values)."""
    out, dcache = D.step(
        dp, plan.dcfg, tp["embed"], tokens, hidden, positions, st.dcache, window=window,
        out_index=(c - 1)[:, None],
    )
    h = out[:, 0]
    return st.replace(dcache=dcache, draft_h=h, draft_logits=D.logits(dp, plan.dcfg, h))


def _round(tp, dp, plan: Plan, knobs: Knobs, st: DecodeState, window: int) -> DecodeState:
    """One speculative round (a plain decode step when K = 0)."""
    K = plan.K
    key, k_draft, k_verify = jax.random.split(st.key, 3) if plan.sampling else (st.key, None, None)
    if K:
        d_ids, d_probs, dcache = _draft_chain(tp, dp, plan, knobs, st, k_draft, window)
        st = st.replace(dcache=dcache)
    else:
        d_ids, d_probs = jnp.zeros((st.last.shape[0], 0), jnp.int32), None
    inputs = jnp.concatenate([st.last[:, None], d_ids], axis=1)
    positions = st.length[:, None] + jnp.arange(K + 1)
    logits, aux, tcache = M.forward(tp, plan.cfg, inputs, positions, st.tcache, window=window)
    forced = jnp.arange(K)[None, :] < st.n_forced[:, None]
    n, nxt = verify(logits, d_ids, d_probs, knobs.sp, k_verify, forced, sampling=plan.sampling)
    e = jnp.concatenate([d_ids, jnp.zeros_like(nxt)[:, None]], axis=1)
    e = jnp.where(jnp.arange(K + 1)[None, :] == n[:, None], nxt[:, None], e)
    hidden, sig = (None, None) if dp is None else D.project(dp, plan.dcfg, aux)
    token_p = token_probs(logits, e, knobs.sp) if plan.surprise else None
    st, e, c, probe = _commit(plan, knobs, st.replace(tcache=tcache, key=key), e, n + 1, sig, token_p, n)
    if plan.probe_len:
        st = jax.lax.cond(
            jnp.any(probe),
            lambda s: _probe_answer(tp, plan, knobs, s, probe, window),
            lambda s: s,
            st,
        )
    if dp is not None:
        st = _catch_up(tp, dp, plan, st, hidden, e, positions, jnp.maximum(c, 1), window)
    return _constrain(plan, st)


def _init_state(plan: Plan, B: int, in_think, key) -> DecodeState:
    cfg, dcfg = plan.cfg, plan.dcfg
    zi = jnp.zeros((B,), jnp.int32)
    has_draft = dcfg is not None
    rec = plan.O if plan.record else 0
    return DecodeState(
        tokens=jnp.zeros((B, plan.O), jnp.int32),
        n_out=zi,
        length=zi,
        last=zi,
        done=jnp.zeros((B,), bool),
        tcache=KVCache.init(cfg.num_layers, B, plan.S, cfg.num_kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype)),
        dcache=D.init_cache(dcfg, B, plan.S) if has_draft else None,
        draft_h=jnp.zeros((B, dcfg.hidden_size), jnp.dtype(dcfg.dtype)) if has_draft else None,
        draft_logits=jnp.zeros((B, dcfg.draft_vocab_size), jnp.float32) if has_draft else None,
        key=key,
        forced=jnp.full((B, 1), -1, jnp.int32),
        n_forced=zi,
        in_think=in_think,
        think_count=zi,
        smooth=jnp.zeros((B, 3), jnp.float32),
        smooth_started=jnp.zeros((B,), bool),
        win_buf=jnp.zeros((B, plan.smooth_window, 3), jnp.float32),
        win_count=zi,
        vetoed=jnp.zeros((B,), bool),
        pending=jnp.zeros((B,), bool),
        exit_pos=jnp.full((B,), -1, jnp.int32),
        exit_reason=zi,
        exit_signals=jnp.zeros((B, 3), jnp.float32),
        rounds=zi,
        accepted=jnp.zeros((B, plan.K), jnp.int32),
        proposed=jnp.zeros((B, plan.K), jnp.int32),
        trace=jnp.zeros((B, rec, 6), jnp.float32),
    )


@functools.partial(jax.jit, static_argnames=("plan",))
def prefill(tp, dp, plan: Plan, knobs: Knobs, prompts, prompt_len, in_think, key) -> DecodeState:
    """Fill the caches with `prompts [B,Tp]` (right-padded to `prompt_len [B]`) and emit the
    first token; returns the state the decode loop starts from."""
    B, Tp = prompts.shape
    key, k_first, k_state = jax.random.split(key, 3)
    st = _init_state(plan, B, in_think, k_state)
    st = _constrain(plan, st.replace(forced=jnp.full((B, knobs.forced_ids.shape[0]), -1, jnp.int32)))
    positions = jnp.broadcast_to(jnp.arange(Tp, dtype=jnp.int32), (B, Tp))
    logits, aux, tcache = M.forward(
        tp, plan.cfg, prompts, positions, st.tcache, window=Tp, logits_index=(prompt_len - 1)[:, None]
    )
    if plan.sampling:
        first = sample(k_first, probs(logits[:, 0], knobs.sp))
    else:
        first = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
    K1 = plan.K + 1
    e = jnp.zeros((B, K1), jnp.int32).at[:, 0].set(first)
    st = st.replace(tcache=tcache, length=prompt_len - 1)
    hidden, sig = (None, None) if dp is None else D.project(dp, plan.dcfg, aux)
    sig_last = None if sig is None else jnp.pad(_at(sig, prompt_len - 1)[:, None], ((0, 0), (0, K1 - 1), (0, 0)))
    token_p = None
    if plan.surprise:
        token_p = jnp.pad(token_probs(logits[:, 0], first, knobs.sp)[:, None], ((0, 0), (0, K1 - 1)))
    one = jnp.ones((B,), jnp.int32)
    st, e, c, _ = _commit(plan, knobs, st, e, one, sig_last, token_p, jnp.zeros((B,), jnp.int32))
    st = st.replace(proposed=jnp.zeros_like(st.proposed))  # the prefill proposes no drafts
    if dp is not None:
        # Draft pairs (feature t, token t+1); the pair at the last prompt position takes `first`.
        toks = jnp.concatenate([prompts[:, 1:], jnp.zeros((B, 1), jnp.int32)], axis=1)
        toks = jnp.where(jnp.arange(Tp)[None, :] == (prompt_len - 1)[:, None], e[:, :1], toks)
        st = _catch_up(tp, dp, plan, st.replace(length=prompt_len), hidden, toks, positions, prompt_len, Tp)
        st = st.replace(length=prompt_len)
    return _constrain(plan, st)


@functools.partial(jax.jit, static_argnames=("plan",), donate_argnames=("st",))
def decode(tp, dp, plan: Plan, knobs: Knobs, st: DecodeState, max_rounds) -> DecodeState:
    """Run rounds until every row is done or `max_rounds` rounds have run (for streaming)."""
    rounds = jnp.int32(0)
    for W in plan.windows:

        def cond(carry, W=W):
            s, r = carry
            active = ~s.done
            need = jnp.max(jnp.where(active, s.length + plan.K + 1 + plan.probe_slots, 0))
            return jnp.any(active) & (r < max_rounds) & (need <= W)

        def body(carry, W=W):
            s, r = carry
            return _round(tp, dp, plan, knobs, s, W), r + 1

        st, rounds = jax.lax.while_loop(cond, body, (st, rounds))
    return st


# ----------------------------------------------------------------------------------------------
# The Python API around the two jitted functions.


@dataclasses.dataclass
class GenerateResult:
    """Generated ids per prompt (prompt excluded) and per-row statistics."""

    tokens: list[list[int]]
    stats: list[dict]
    timing: dict


def _pow2(n: int, lo: int) -> int:
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def prompt_bucket(n: int) -> int:
    """The padded length of an `n`-token prompt: the next of 16, 20, 24, 28, 32, 40, 48, 56, 64,
    80, ... (quarter steps between powers of two). Each bucket compiles its own prefill; the
    quarter steps keep the padding that prefill computes under a quarter of the prompt (on a CPU,
    where a prefill costs about a tenth of a millisecond per position for the demo model, that is
    a sixth of a short request's time at half steps). The decode loop depends on the prompt only
    through the cache size, which grows in steps of 128 slots, and (past 128 tokens) its shortest
    attention window, so buckets mostly share it."""
    if n <= 16:
        return 16
    step = (1 << ((n - 1).bit_length() - 1)) // 4  # a quarter of the power of two below n
    return _round_up(n, step)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _windows(S: int, shortest: int) -> tuple[int, ...]:
    """Attention windows: S and its halvings down to the shortest useful one (at most 4), none
    under 128 slots. Short windows matter on CPU, where attention over the window is as costly
    as the MLP at a few hundred slots: a demo answer (about 120 tokens) runs in 128."""
    ws = [S]
    while len(ws) < 4 and ws[-1] // 2 >= max(shortest, 128):
        ws.append(_round_up(ws[-1] // 2, 128))
    return tuple(sorted(set(ws)))


def _check_prompts(prompts, vocab: int) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not len(prompts):
        raise ValueError("prompts must be a non-empty list of token-id lists")
    out = []
    for i, p in enumerate(prompts):
        p = [int(t) for t in p]
        if not p:
            raise ValueError(f"prompt {i} is empty")
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]} outside the vocab (size {vocab})")
        out.append(p)
    return out


def _starts_in_thinking(prompt: list[int], ex: ExitConfig) -> bool:
    """Whether generation begins inside the thinking section."""
    if ex.think_end_id is None:
        return False
    if ex.think_start_id is None:
        return True
    starts = [i for i, t in enumerate(prompt) if t == ex.think_start_id]
    ends = [i for i, t in enumerate(prompt) if t == ex.think_end_id]
    return bool(starts) and (not ends or ends[-1] < starts[-1])


def setup(
    cfg: ModelConfig,
    dcfg: D.DraftConfig | None,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    mode: str = "ar",
    exit: ExitConfig | None = None,
    num_draft_tokens: int = 4,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_ids: Sequence[int] = (),
    max_len: int | None = None,
    mesh: Mesh | None = None,
):
    """Check the request and build what `prefill` and `decode` take.

    Returns `(plan, knobs, prompts [B,Tp] right-padded, prompt_len [B], in_think [B])`. The plan
    (static) fixes the bucketed sizes; the knobs (traced) carry everything else. `generate` is
    this, then `prefill`, then `decode`; benchmarks and custom loops can call the pieces.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    ex = exit or ExitConfig()
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
    if dcfg is not None:
        D.check_compatible(dcfg, cfg)
        if num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
    if mode in ("specexit", "deer") and (ex.think_end_id is None or not ex.step_split_ids):
        raise ValueError(
            f"mode {mode!r} needs think_end_id and step_split_ids "
            "(from the tokenizer, or --think-end-id / --step-split-ids)"
        )
    if mode == "specexit" and (dcfg is None or dcfg.num_signals != 3):
        raise ValueError("mode 'specexit' needs a draft with signal heads (num_signals=3)")
    if mode == "budget":
        if ex.think_end_id is None:
            raise ValueError("mode 'budget' needs think_end_id (from the tokenizer or --think-end-id)")
        if ex.max_think_tokens is None and not ex.min_think_tokens:
            raise ValueError("mode 'budget' needs max_think_tokens or min_think_tokens")
    K = num_draft_tokens if dcfg is not None else 0
    B = len(prompts)
    longest = max(map(len, prompts))
    limit = max_len or cfg.max_position_embeddings
    if longest + max_new_tokens + K + 1 > limit:
        raise ValueError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) + {K + 1} exceeds "
            f"the maximum length {limit}"
        )
    deer = mode == "deer"
    probe_ids = (ex.think_end_id, *ex.probe_ids) if deer else (-1,)
    probe_slots = len(probe_ids) + ex.probe_tokens + 1 if deer else 0
    Tp = prompt_bucket(longest)
    O = _pow2(max_new_tokens, 16) + K + 1
    S = _round_up(Tp + O + probe_slots, 128)
    split = tuple(ex.step_split_ids) or (-1,)
    plan = Plan(
        cfg=cfg,
        dcfg=dcfg,
        K=K,
        S=S,
        O=O,
        windows=_windows(S, Tp + K + 1),
        sampling=temperature > 0,
        exit_signals=mode == "specexit",
        limits=mode in ("specexit", "budget", "deer"),
        continue_below_min=ex.continue_below_min,
        smoothing=ex.smoothing,
        smooth_window=ex.window,
        surprise=ex.surprise is not None and mode == "specexit",
        record=ex.record_signals and mode == "specexit",
        probe_len=ex.probe_tokens if deer else 0,
        probe_slots=probe_slots,
        mesh=mesh,
    )
    knobs = Knobs(
        sp=SamplingParams.make(temperature, top_k, top_p),
        ex=ex.traced(),
        max_new=np.int32(max_new_tokens),
        eos_ids=np.asarray(tuple(eos_ids) or (-1,), np.int32),
        split_ids=np.asarray(split, np.int32),
        think_end=np.int32(-1 if ex.think_end_id is None else ex.think_end_id),
        forced_ids=np.asarray(ex.forced_ids if ex.think_end_id is not None else (-1,), np.int32),
        continue_id=np.int32(ex.continue_id if ex.continue_id is not None else split[0]),
        probe_ids=np.asarray(probe_ids, np.int32),
    )
    padded = np.zeros((B, Tp), np.int32)
    for i, p in enumerate(prompts):
        padded[i, : len(p)] = p
    plen = np.asarray([len(p) for p in prompts], np.int32)
    in_think = np.asarray([_starts_in_thinking(p, ex) for p in prompts])
    # Built in numpy and sent in one call: a device array per knob costs a dispatch each (about
    # 0.2 ms apiece on a GPU, several ms in all).
    knobs, padded, plen, in_think = jax.device_put((knobs, padded, plen, in_think))
    return plan, knobs, padded, plen, in_think


def generate(
    target,
    draft=None,
    prompts: Sequence[Sequence[int]] = (),
    *,
    max_new_tokens: int = 256,
    mode: str = "ar",
    exit: ExitConfig | None = None,
    num_draft_tokens: int = 4,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_ids: Sequence[int] = (),
    seed: int = 0,
    max_len: int | None = None,
    stream: Callable[[list[list[int]]], None] | None = None,
    stream_every: int = 8,
    mesh: Mesh | str | None = None,
) -> GenerateResult:
    """Generate continuations of `prompts` with the target `(cfg, params)`.

    `mode` is one of `ar`, `spec`, `specexit`, `budget`, `deer`; `spec` and `specexit` need
    `draft=(dcfg, dparams)`. `exit` carries the thinking markers, exit thresholds and budgets.
    `stream(new_tokens_per_row)` is called every `stream_every` rounds with the tokens produced
    since its last call. `mesh` (a `jax.sharding.Mesh` or a spec such as `"data=2,tensor=4"`)
    splits the model and the batch over devices; tokens are the same as on one device. Sizes
    (batch, bucketed prompt and output lengths, K) are static; `max_new_tokens`, sampling
    settings, thresholds and budgets are traced.
    """
    cfg, tp = target
    use_draft = draft is not None and mode != "ar"
    dcfg, dp = draft if use_draft else (None, None)
    if mode in ("spec", "specexit") and draft is None:
        raise ValueError(f"mode {mode!r} needs a draft model")
    prompts = _check_prompts(prompts, cfg.vocab_size)
    n_prompts = len(prompts)
    if mesh is not None:
        mesh = _mesh(mesh) if isinstance(mesh, str) else mesh
        tp, dp, prompts = _place(mesh, cfg, tp, dcfg, dp, prompts)
    plan, knobs, padded, plen, in_think = setup(
        cfg, dcfg, prompts,
        max_new_tokens=max_new_tokens, mode=mode, exit=exit,
        num_draft_tokens=num_draft_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        eos_ids=eos_ids, max_len=max_len, mesh=mesh,
    )
    B = len(prompts)

    key = jax.random.key(seed)
    t0 = time.perf_counter()
    st = prefill(tp, dp, plan, knobs, padded, plen, in_think, key)
    st.n_out.block_until_ready()
    t1 = time.perf_counter()
    if stream is None:
        st = decode(tp, dp, plan, knobs, st, np.int32(2**30))  # returns with every row done
    else:
        shown = np.zeros(B, np.int64)
        while True:
            n_out, toks, done = jax.device_get((st.n_out, st.tokens, st.done))
            stream([toks[b, shown[b] : n_out[b]].tolist() for b in range(B)])
            shown = n_out.astype(np.int64)
            if done.all():
                break
            st = decode(tp, dp, plan, knobs, st, np.int32(stream_every))
    st.n_out.block_until_ready()
    t2 = time.perf_counter()
    return _result(plan, st, t1 - t0, t2 - t1, n_prompts)


def _mesh(spec: str) -> Mesh:
    """A mesh from a spec such as `"data=2,tensor=4"`. A spec without `-1` that names fewer
    devices than there are uses the first ones (so `"tensor=2"` works on an 8-GPU host)."""
    devices = jax.devices()
    if "-1" not in spec:
        for n in range(1, len(devices)):
            try:
                SH.parse_mesh_spec(spec, n)
            except ValueError:
                continue
            return SH.make_mesh(spec, devices[:n])
    return SH.make_mesh(spec, devices)  # all devices, or the spec's own one-line error


def _place(mesh: Mesh, cfg: ModelConfig, tp, dcfg, dp, prompts):
    """Put params on the mesh and pad the batch to a multiple of the row shards (with copies
    of the first prompt, dropped from the result)."""
    tensor = mesh.shape["tensor"]
    for name, c in (("target", cfg), ("draft", dcfg)):
        if c is not None and c.num_kv_heads % tensor:
            raise ValueError(
                f"{name} has {c.num_kv_heads} KV heads, which do not divide the tensor axis "
                f"({tensor}): pick a tensor size that divides {c.num_kv_heads}"
            )
    tp = jax.device_put(tp, SH.param_shardings(mesh, tp))
    if dp is not None:
        dp = jax.device_put(dp, SH.param_shardings(mesh, dp))
    rows = SH.batch_shards(mesh)
    prompts = prompts + [prompts[0]] * (-len(prompts) % rows)
    return tp, dp, prompts


def _result(
    plan: Plan, st: DecodeState, prefill_s: float, decode_s: float, n_rows: int
) -> GenerateResult:
    h = jax.device_get(st.replace(tcache=None, dcache=None, draft_h=None, draft_logits=None, key=None))
    tokens, stats = [], []
    for b in range(n_rows):
        n = int(h.n_out[b])
        tokens.append(h.tokens[b, :n].tolist())
        rounds = int(h.rounds[b])
        row = {
            "new_tokens": n,
            "rounds": rounds,
            "tau": n / max(rounds, 1),
            "think_tokens": int(h.think_count[b]),
            "exit_reason": REASONS[int(h.exit_reason[b])],
            "exit_position": int(h.exit_pos[b]),
        }
        if plan.K:
            row["accepted_per_position"] = h.accepted[b].tolist()
            row["acceptance_rate"] = (h.accepted[b] / np.maximum(h.proposed[b], 1)).round(4).tolist()
        if plan.exit_signals:
            row["exit_signals"] = dict(zip(D.SIGNALS, h.exit_signals[b].round(4).tolist()))
        if plan.surprise:
            row["vetoed"] = bool(h.vetoed[b])
        if plan.record:
            row["signals"] = {
                "raw": h.trace[b, :n, :3].round(4).tolist(),
                "smoothed": h.trace[b, :n, 3:].round(4).tolist(),
            }
        stats.append(row)
    timing = {"prefill_s": prefill_s, "decode_s": decode_s}
    return GenerateResult(tokens=tokens, stats=stats, timing=timing)
