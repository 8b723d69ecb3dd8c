"""Where a decode round's time goes: one AR step against one speculative round, and its parts.

    python tools/profile_rounds.py                     # the bundled demo model, batch 1, CPU or GPU
    python tools/profile_rounds.py --temperature 0 --K 4 --context 64 --repeats 7

The state a round starts from is a real one: `prefill` of a demo prompt, then decode rounds until
`--context` tokens are cached. From there it times (after one untimed run that compiles, the fastest
of `--repeats` runs, each ended by `block_until_ready`):

    ar step      `engine.decode` with K = 0 for `--iters` rounds, per round
    spec round   `engine.decode` with the draft for `--iters` rounds, per round
    draft chain  `K` draft proposals (d_1 from the carried logits, K-1 chained draft steps)
    verify       the target pass over the K+1 positions [last, d_1..d_K]
    target_T1    the same pass over one position (the forward of an AR step; not part of the round)
    accept       `sampling.verify` on its logits (the acceptance test and the next token)
    commit       `engine._commit`: cuts, thinking policy, output and bookkeeping
    catch-up     `fc` and the draft pass over the K+1 accepted pairs

Every part runs `--iters` times inside one jitted `lax.fori_loop`, its inputs tied to the carry
by `lax.optimization_barrier` (to keep XLA from hoisting work out of the loop), and is reported
per run. The parts do not add up to the spec round (the table's `(rest)`): the round also splits
keys, selects the state of finished rows and tests the loop condition, and over its `--iters`
rounds the cache grows into larger attention windows than the parts use (they run at the window
of `--context`). On a shared CPU `(rest)` also carries the noise. The column
`ops` counts the instructions of each part's optimized HLO (fusions count once), a hint of how
many kernels a run launches. Small parts (accept, commit) may still be partly simplified by XLA
across iterations, so read their figures as lower bounds.

It prints one JSON line, then a table. Timings on a shared CPU are noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from specexit_jax import draft as D  # noqa: E402
from specexit_jax import engine as G  # noqa: E402
from specexit_jax import model as M  # noqa: E402
from specexit_jax.sampling import verify  # noqa: E402


def best_time(fn, make_args, repeats: int) -> float:
    """Fastest wall time of `fn(*make_args())` over `repeats` runs, after one untimed run (on a
    shared CPU other work only ever adds time, so the fastest run is the least disturbed one).
    `make_args` builds fresh inputs (untimed), since the timed functions donate their state."""
    jax.block_until_ready(fn(*make_args()))
    times = []
    for _ in range(repeats):
        args = jax.block_until_ready(make_args())
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def hlo_ops(fn, *args) -> int:
    """Instructions in the optimized HLO of `fn(*args)` (a fusion counts as one)."""
    text = fn.lower(*args).compile().as_text()
    return sum(1 for line in text.splitlines() if " = " in line and not line.lstrip().startswith(("ROOT %param", "%param")))


def copy_state(st):
    """A copy of every array of `st` (the timed functions donate theirs)."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, st)


# ----------------------------------------------------------------------------------------------
# The parts of a round, each looped `iters` times with its output fed back.


@functools.partial(jax.jit, static_argnames=("plan", "iters", "window"), donate_argnames=("st",))
def draft_part(tp, dp, plan, knobs, st, iters: int, window: int):
    def body(i, st):
        key, k = jax.random.split(st.key)
        ids, _, dcache = G._draft_chain(tp, dp, plan, knobs, st, k, window)
        return st.replace(dcache=dcache, key=key, draft_logits=st.draft_logits + ids[:, :1])

    return jax.lax.fori_loop(0, iters, body, st)


@functools.partial(jax.jit, static_argnames=("plan", "iters", "window"), donate_argnames=("st",))
def verify_part(tp, plan, st, inputs, iters: int, window: int):
    positions = st.length[:, None] + jnp.arange(inputs.shape[1])

    def body(i, carry):
        inputs, cache = carry
        logits, _, cache = M.forward(tp, plan.cfg, inputs, positions, cache, window=window)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

    inputs, cache = jax.lax.fori_loop(0, iters, body, (inputs, st.tcache))
    return inputs, st.replace(tcache=cache)


@functools.partial(jax.jit, static_argnames=("plan", "iters"))
def accept_part(plan, knobs, logits, d_ids, d_probs, key, iters: int):
    forced = jnp.zeros(d_ids.shape, bool)

    def body(i, carry):
        key, d_ids, total = carry
        key, k = jax.random.split(key)
        lg, qs, key = jax.lax.optimization_barrier((logits, d_probs, key))  # not hoisted
        n, nxt = verify(lg, d_ids, qs, knobs.sp, k, forced, sampling=plan.sampling)
        return key, d_ids.at[:, 0].set(nxt), total + n

    return jax.lax.fori_loop(0, iters, body, (key, d_ids, jnp.zeros(d_ids.shape[:1], jnp.int32)))


@functools.partial(jax.jit, static_argnames=("plan", "iters"), donate_argnames=("st",))
def commit_part(plan, knobs, st, e, sig, iters: int):
    B = e.shape[0]
    n = jnp.full((B,), plan.K, jnp.int32)

    def body(i, st):
        e_, sig_, st = jax.lax.optimization_barrier((e, sig, st))  # not hoisted
        new, *_ = G._commit(plan, knobs, st, e_, n + 1, sig_, None, n)
        # keep the row's length where it was, so `iters` commits fit in the cache
        return new.replace(length=st.length, n_out=st.n_out, done=st.done)

    return jax.lax.fori_loop(0, iters, body, st)


@functools.partial(jax.jit, static_argnames=("plan", "iters", "window"), donate_argnames=("st",))
def catch_part(tp, dp, plan, st, aux, e, iters: int, window: int):
    positions = st.length[:, None] + jnp.arange(e.shape[1])
    c = jnp.full(e.shape[:1], e.shape[1], jnp.int32)

    def body(i, st):
        aux_, e_, st = jax.lax.optimization_barrier((aux, e, st))  # not hoisted
        hidden, _ = D.project(dp, plan.dcfg, aux_)
        return G._catch_up(tp, dp, plan, st, hidden, e_, positions, c, window)

    return jax.lax.fori_loop(0, iters, body, st)


# ----------------------------------------------------------------------------------------------


def demo_prompt(tok) -> list[int]:
    from specexit_jax.demo import task

    return tok.encode(task.render_prompt(task.make_dataset(1, seed=10_000)[0]))


def start_state(target, draft, prompt, args, K: int):
    """Plan, knobs and a state with `args.context` cached tokens (no end of sequence: rows never
    finish early)."""
    (cfg, tp), (dcfg, dp) = target, draft if K else (None, None)
    plan, knobs, padded, plen, in_think = G.setup(
        cfg, dcfg, [prompt], max_new_tokens=args.max_new, mode="spec" if K else "ar",
        num_draft_tokens=max(K, 1), temperature=args.temperature,
    )
    st = G.prefill(tp, dp, plan, knobs, padded, plen, in_think, jax.random.key(0))
    while int(st.length[0]) < args.context:
        st = G.decode(tp, dp, plan, knobs, st, jnp.int32(1))
    return plan, knobs, st


def profile(args) -> dict:
    from specexit_jax.checkpoint import load_checkpoint
    from specexit_jax.demo import demo_checkpoints
    from specexit_jax.tokenizer import Tokenizer

    tpath, dpath = demo_checkpoints()
    target, draft = load_checkpoint(tpath), load_checkpoint(dpath)
    (cfg, tp), (dcfg, dp) = target, draft
    prompt = demo_prompt(Tokenizer(tpath))
    n, K, reps = args.iters, args.K, args.repeats
    out = {"backend": jax.default_backend(), "K": K, "iters": n, "temperature": args.temperature}

    def per_round(plan, knobs, st):
        fn = lambda s: G.decode(tp, dp if plan.K else None, plan, knobs, s, jnp.int32(n))  # noqa: E731
        return best_time(fn, lambda: (copy_state(st),), reps) / n

    plan0, knobs0, st0 = start_state(target, draft, prompt, args, 0)
    plan, knobs, st = start_state(target, draft, prompt, args, K)
    W = min(w for w in plan.windows if w >= int(st.length[0]) + K + 1)  # the loop's window here
    out.update(context=int(st.length[0]), cache_slots=plan.S, windows=plan.windows, window=W)
    out["ar_step_ms"] = 1e3 * per_round(plan0, knobs0, st0)
    out["spec_round_ms"] = 1e3 * per_round(plan, knobs, st)

    # Inputs of the parts, from one real round.
    ids, qs, _ = G._draft_chain(tp, dp, plan, knobs, copy_state(st), jax.random.key(1), W)
    inputs = jnp.concatenate([st.last[:, None], ids], axis=1)
    positions = st.length[:, None] + jnp.arange(K + 1)
    logits, aux, _ = M.forward(tp, cfg, inputs, positions, copy_state(st).tcache, window=W)
    _, sig = D.project(dp, dcfg, aux)

    parts = {
        "draft_chain": (draft_part, lambda: (tp, dp, plan, knobs, copy_state(st), n, W)),
        "verify": (verify_part, lambda: (tp, plan, copy_state(st), inputs, n, W)),
        "target_T1": (verify_part, lambda: (tp, plan, copy_state(st), inputs[:, :1], n, W)),
        "accept": (accept_part, lambda: (plan, knobs, logits, ids, qs, jax.random.key(2), n)),
        "commit": (commit_part, lambda: (plan, knobs, copy_state(st), inputs, sig, n)),
        "catch_up": (catch_part, lambda: (tp, dp, plan, copy_state(st), aux, inputs, n, W)),
    }
    out["parts_ms"], out["parts_ops"] = {}, {}
    for name, (fn, make) in parts.items():
        out["parts_ms"][name] = 1e3 * best_time(fn, make, reps) / n
        out["parts_ops"][name] = hlo_ops(fn, *make())
    out["ar_ops"] = hlo_ops(G.decode, tp, None, plan0, knobs0, copy_state(st0), jnp.int32(n))
    out["spec_ops"] = hlo_ops(G.decode, tp, dp, plan, knobs, copy_state(st), jnp.int32(n))
    out["spec_over_ar"] = out["spec_round_ms"] / out["ar_step_ms"]
    out["verify_over_ar"] = out["parts_ms"]["verify"] / out["ar_step_ms"]
    return out


def table(r: dict) -> str:
    lines = [
        f"backend {r['backend']}, batch 1, K {r['K']}, context {r['context']}, window {r['window']}, "
        f"temperature {r['temperature']:g}",
        f"{'part':<14}{'ms':>9}{'x AR':>8}{'ops':>8}",
        f"{'ar step':<14}{r['ar_step_ms']:>9.3f}{1.0:>8.2f}{r['ar_ops']:>8}",
        f"{'spec round':<14}{r['spec_round_ms']:>9.3f}{r['spec_over_ar']:>8.2f}{r['spec_ops']:>8}",
    ]
    for name, ms in r["parts_ms"].items():
        lines.append(f"  {name:<12}{ms:>9.3f}{ms / r['ar_step_ms']:>8.2f}{r['parts_ops'][name]:>8}")
    rest = r["spec_round_ms"] - sum(v for k, v in r["parts_ms"].items() if k != "target_T1")
    lines.append(f"  {'(rest)':<12}{rest:>9.3f}{rest / r['ar_step_ms']:>8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=4, help="drafts per round")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--context", type=int, default=64, help="cached tokens when timing starts")
    ap.add_argument("--max-new", type=int, default=512, help="sizes the cache, as the demo eval does")
    ap.add_argument("--iters", type=int, default=20, help="runs per timed call")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls (the fastest is kept)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    r = profile(args)
    line = json.dumps(r)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
