"""Decode benchmark on one GPU: our JAX decode loop against the memory-bandwidth limit and HF.

    python tools/bench_decode.py [--out FILE]     # Qwen3-4B shape, bf16 random weights (GPU)
    python tools/bench_decode.py --tiny           # a tiny shape, small lengths: a CPU check

What it measures, in one process, on random bf16 weights of a Qwen3-4B-shaped target (hidden 2560,
36 layers, 32 heads, 8 KV heads, head_dim 128, MLP 9728, vocab 151936, tied embeddings, qk-norm):

1. bandwidth   the read ceiling: best-of-N `jnp.sum` and `jnp.max` over a multi-GB bf16 array
               (bytes read / time); and a copy stream `x + 1` (2x bytes: read and write).
2. ar          plain decoding with `engine.prefill` / `engine.decode` (the library's jitted
               loop) at batch 1 and 16, with 1k and 16k cached tokens: ms/token, tokens/s, bytes
               per step, and that traffic over the time as a fraction of the read ceiling. The
               cache is filled from a prompt of that many random tokens (prefill in chunks, not
               timed); of the 128 new tokens, 2 run first (compilation), the rest are timed.
3. spec        at batch 1, 1k context: a target pass over T = K+1 positions (verification) for
               K = 1..8 against T = 1 (one AR step), each a jitted `lax.fori_loop` of forward
               passes over the cache; a draft round (K-1 chained draft steps, then `fc` and one
               (K+1)-position catch-up, as in `generate`) with a draft shaped
               `DraftConfig.for_target(cfg)`; and tokens/s = tau / (draft round + verify) for
               a range of tau (tokens per round).
4. hf          HF transformers `Qwen3ForCausalLM` holding the SAME weights (bf16), batch 1 on the
               1k prompt of (2): eager `generate` (greedy, 128 new tokens), and a static cache
               with `model.forward = torch.compile(model.forward, mode="reduce-overhead",
               fullgraph=True)` for the one-token steps, prefill eager (CUDA only; see
               `_compile_steps`). ms/token = (time for 128 tokens - time for 1 token) / 127, so
               prefill is excluded. Also: how many of the first 32 greedy tokens agree with ours
               (bf16 rounding differs, so greedy paths part after a while on random weights).

Bytes per decode step (what a step must read at least):
    weights   every layer weight + the final norm + the embedding rows read (B rows per step;
              B*T for T positions) + the output head (with tied embeddings: the whole
              embedding matrix, read as the lm_head)
    KV        per layer 2 (K and V) * Kv * D * 2 bytes * valid cached positions * B, the valid
              positions being those a step attends to (the mean over the timed steps)
Reads of a larger attention window than the valid part are not counted: they are overhead.

Every part runs guarded: one that fails prints its error and the others still run. The JSON of
all figures is printed as one line (and written to `--out`), then a short table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from specexit_jax import draft as D  # noqa: E402
from specexit_jax import engine as G  # noqa: E402
from specexit_jax import model as M  # noqa: E402
from specexit_jax.config import ModelConfig  # noqa: E402

QWEN3_4B = ModelConfig(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_layers=36,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    qk_norm=True,
    max_position_embeddings=40960,
    arch="qwen3",
    dtype="bfloat16",
)
TINY = dataclasses.replace(
    QWEN3_4B,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=192,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    max_position_embeddings=4096,
)


# ----------------------------------------------------------------------------------------------
# Helpers.


def best_time(fn, *args, repeats: int) -> float:
    """Best wall time of `fn(*args)` over `repeats` runs, after one untimed run (compilation)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def weight_bytes(cfg: ModelConfig, params: dict, rows: int) -> int:
    """Weights one step reads: layers, final norm, `rows` embedding rows and the output head."""
    item = jnp.dtype(cfg.dtype).itemsize
    layers = sum(x.nbytes for x in jax.tree.leaves(params["layers"]))
    head = params["embed"].nbytes if cfg.tie_word_embeddings else params["lm_head"].nbytes
    return layers + params["norm"].nbytes + rows * cfg.hidden_size * item + head


def kv_bytes(cfg: ModelConfig, B: int, positions: float) -> float:
    """K and V of `positions` valid cached positions per row, over every layer."""
    item = jnp.dtype(cfg.dtype).itemsize
    return cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * item * positions * B


def make_plan(cfg: ModelConfig, dcfg, K: int, prompt_len: int, max_new: int) -> tuple[G.Plan, G.Knobs]:
    """The plan and knobs `generate` builds for these sizes: greedy, no end-of-sequence id and no
    thinking markers, so every row runs `max_new` tokens."""
    plan, knobs, *_ = G.setup(
        cfg, dcfg, [[0] * prompt_len], max_new_tokens=max_new,
        mode="spec" if K else "ar", num_draft_tokens=max(K, 1), max_len=prompt_len + max_new + K + 1,
    )
    return plan, knobs


@functools.partial(jax.jit, static_argnames=("plan", "chunk"))
def prompt_state(tp, plan: G.Plan, knobs: G.Knobs, prompt, chunk: int) -> G.DecodeState:
    """The decode state after the prompt `[B,P]`: `prefill` over its head, then the rest in
    chunks of `chunk` positions (one pass over all would not fit at batch 16 x 16k). Its last
    token is left out of the cache, as `last`, so the first decode round emits the continuation."""
    B, P = prompt.shape
    n = (P - 2) // chunk
    head = P - 1 - n * chunk
    st = G.prefill(
        tp,
        None,
        plan,
        knobs,
        prompt[:, :head],
        jnp.full((B,), head, jnp.int32),
        jnp.zeros((B,), bool),
        jax.random.key(0),
    )
    rest = prompt[:, head : P - 1].reshape(B, n, chunk)

    def body(i, cache):
        pos = head + i * chunk + jnp.broadcast_to(jnp.arange(chunk, dtype=jnp.int32), (B, chunk))
        toks = jax.lax.dynamic_index_in_dim(rest, i, axis=1, keepdims=False)
        last = jnp.zeros((B, 1), jnp.int32)
        return M.forward(tp, plan.cfg, toks, pos, cache, window=plan.S, logits_index=last)[2]

    zi = jnp.zeros((B,), jnp.int32)
    return st.replace(
        tcache=jax.lax.fori_loop(0, n, body, st.tcache),
        length=jnp.full((B,), P - 1, jnp.int32),
        last=prompt[:, P - 1],
        n_out=zi,
        tokens=jnp.zeros_like(st.tokens),
        done=jnp.zeros((B,), bool),
        rounds=zi,
    )


def fill_chunk(B: int, tiny: bool) -> int:
    return 16 if tiny else max(16, min(512, 2048 // B))


# ----------------------------------------------------------------------------------------------
# 1. Bandwidth ceiling.


def bench_bandwidth(args) -> dict:
    n = (args.stream_mib << 20) // 2
    x = jnp.ones((n // 4096, 4096), jnp.bfloat16)
    nbytes = x.nbytes
    read_sum = best_time(jax.jit(lambda a: jnp.sum(a, dtype=jnp.float32)), x, repeats=args.repeats)
    read_max = best_time(jax.jit(jnp.max), x, repeats=args.repeats)
    copy = best_time(jax.jit(lambda a: a + jnp.bfloat16(1)), x, repeats=args.repeats)
    del x
    return {
        "array_bytes": nbytes,
        "read_sum_GBps": nbytes / read_sum / 1e9,
        "read_max_GBps": nbytes / read_max / 1e9,
        "copy_GBps": 2 * nbytes / copy / 1e9,
        "ceiling_GBps": nbytes / min(read_sum, read_max) / 1e9,
    }


# ----------------------------------------------------------------------------------------------
# 2. Plain decoding with the library's loop.


def bench_ar(args, cfg, params, ceiling, keep) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for ctx in args.contexts:
        for B in args.batches:
            row = {"batch": B, "context": ctx}
            try:
                row.update(_ar_one(args, cfg, params, ctx, B, rng, ceiling, keep))
            except Exception as e:  # noqa: BLE001 - one failing shape must not stop the others
                row["error"] = _error(e)
            rows.append(row)
            print(f"[bench]   {row}", file=sys.stderr, flush=True)
    return rows


def _ar_one(args, cfg, params, ctx, B, rng, ceiling, keep) -> dict:
    warm = 2  # rounds run before timing; the plan is the one `generate` makes for `steps` tokens
    plan, knobs = make_plan(cfg, None, 0, ctx, args.steps)
    prompt = rng.integers(0, cfg.vocab_size, (B, ctx), dtype=np.int32)
    st = prompt_state(params, plan, knobs, jnp.asarray(prompt), fill_chunk(B, args.tiny))
    st = G.decode(params, None, plan, knobs, st, jnp.int32(warm))  # compiles the loop
    L0, n0 = (int(v) for v in jax.device_get((st.length[0], st.n_out[0])))
    t = time.perf_counter()
    st = G.decode(params, None, plan, knobs, st, jnp.int32(1 << 30))
    st.n_out.block_until_ready()
    dt = time.perf_counter() - t
    steps = int(st.n_out[0]) - n0
    # step j (1..steps) reads L0 + j cached positions per row
    moved = weight_bytes(cfg, params, B) + kv_bytes(cfg, B, L0 + (steps + 1) / 2)
    step_s = dt / steps
    if B == 1 and ctx == args.contexts[0]:
        keep["prompt"], keep["tokens"] = prompt[0].tolist(), st.tokens[0, : int(st.n_out[0])].tolist()
    return {
        "steps": steps,
        "window": plan.S,
        "ms_per_step": 1e3 * step_s,
        "tokens_per_s": B / step_s,
        "bytes_per_step": moved,
        "GBps": moved / step_s / 1e9,
        "fraction_of_ceiling": moved / step_s / 1e9 / ceiling if ceiling else None,
    }


# ----------------------------------------------------------------------------------------------
# 3. Speculative costs: verification width and draft rounds.


@functools.partial(jax.jit, static_argnames=("cfg", "iters", "window"), donate_argnames=("cache",))
def verify_loop(tp, cfg, cache, tokens, start, iters: int, window: int):
    """`iters` target passes over `tokens [B,T]` at positions `start..start+T-1`; each pass's
    argmax feeds the next (so nothing is hoisted out of the loop)."""
    T = tokens.shape[1]
    positions = start[:, None] + jnp.arange(T, dtype=jnp.int32)

    def body(i, carry):
        toks, cache = carry
        logits, _, cache = M.forward(tp, cfg, toks, positions, cache, window=window)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

    return jax.lax.fori_loop(0, iters, body, (tokens, cache))


@functools.partial(jax.jit, static_argnames=("dcfg", "K", "iters", "window"), donate_argnames=("dcache",))
def draft_loop(tp, dp, dcfg, dcache, aux, h, tok, start, K: int, iters: int, window: int):
    """`iters` draft rounds as `generate` runs them: `K-1` chained steps (each a draft layer pass,
    its logits and argmax), then `fc` over the `K+1` verified features and one `(K+1)`-position
    catch-up pass that caches every pair and computes the output at the last, which gives the
    next round's first draft."""
    B = tok.shape[0]

    def chained(carry, j):
        h, tok, cache = carry
        out, cache = D.step(
            dp, dcfg, tp["embed"], tok[:, None], h[:, None], (start + j)[:, None], cache, window=window
        )
        nxt = jnp.argmax(D.logits(dp, dcfg, out[:, 0]), axis=-1).astype(jnp.int32)
        return (out[:, 0], D.to_target_ids(dp, nxt), cache), None

    def body(i, carry):
        h, tok, cache = carry
        (h, tok, cache), _ = jax.lax.scan(chained, (h, tok, cache), jnp.arange(K - 1))
        feats = aux + h[:, None, :1].astype(aux.dtype)  # depends on the carry: not hoisted
        hidden, _ = D.project(dp, dcfg, feats)
        toks = jnp.broadcast_to(tok[:, None], (B, K + 1))
        pos = start[:, None] + jnp.arange(K + 1, dtype=jnp.int32)
        last = jnp.full((B, 1), K, jnp.int32)
        out, cache = D.step(dp, dcfg, tp["embed"], toks, hidden, pos, cache, window=window, out_index=last)
        nxt = jnp.argmax(D.logits(dp, dcfg, out[:, 0]), axis=-1).astype(jnp.int32)
        return out[:, 0], D.to_target_ids(dp, nxt), cache

    return jax.lax.fori_loop(0, iters, body, (h, tok, dcache))


def bench_spec(args, cfg, params, ceiling) -> dict:
    ctx, B, Kmax = args.contexts[0], 1, args.max_k
    plan, knobs = make_plan(cfg, None, 0, ctx, args.steps + Kmax + 1)
    window = min(w for w in plan.windows if w >= ctx + Kmax + 1)
    rng = np.random.default_rng(1)
    prompt = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, ctx), dtype=np.int32))
    cache = prompt_state(params, plan, knobs, prompt, fill_chunk(B, args.tiny)).tcache
    start = jnp.full((B,), ctx, jnp.int32)

    verify_s = {}
    for T in range(1, Kmax + 2):
        toks = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32))

        def run(toks, T=T):
            nonlocal cache
            out, cache = verify_loop(params, cfg, cache, toks, start, args.iters, window)
            return out

        verify_s[T] = best_time(run, toks, repeats=args.repeats) / args.iters
        print(f"[bench]   verify T={T}: {1e3 * verify_s[T]:.3f} ms", file=sys.stderr, flush=True)

    dcfg = D.DraftConfig.for_target(cfg)
    dp = D.init_params(dcfg, jax.random.key(1))
    dcache = D.init_cache(dcfg, B, plan.S)
    h = jnp.zeros((B, dcfg.hidden_size), jnp.dtype(dcfg.dtype))
    tok = jnp.zeros((B,), jnp.int32)
    draft_s = {}
    for K in range(1, Kmax + 1):
        aux = jax.random.normal(jax.random.key(K), (B, K + 1, 3 * cfg.hidden_size), jnp.dtype(cfg.dtype))

        def run(aux, K=K):
            nonlocal dcache
            _, tok_out, dcache = draft_loop(
                params, dp, dcfg, dcache, aux, h, tok, start, K, args.iters, window
            )
            return tok_out

        draft_s[K] = best_time(run, aux, repeats=args.repeats) / args.iters
        print(f"[bench]   draft round K={K}: {1e3 * draft_s[K]:.3f} ms", file=sys.stderr, flush=True)

    ar = verify_s[1]
    taus = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    per_k = []
    for K in range(1, Kmax + 1):
        v, d = verify_s[K + 1], draft_s[K]
        moved = weight_bytes(cfg, params, B * (K + 1)) + kv_bytes(cfg, B, ctx + K + 1)
        per_k.append(
            {
                "K": K,
                "verify_ms": 1e3 * v,
                "verify_over_ar": v / ar,
                "verify_fraction_of_ceiling": moved / v / 1e9 / ceiling if ceiling else None,
                "draft_round_ms": 1e3 * d,
                "draft_over_verify": d / v,
                "tokens_per_s_at_tau": {f"{t:g}": t / (v + d) for t in taus if t <= K + 1},
                "speedup_over_ar_at_tau": {f"{t:g}": t * ar / (v + d) for t in taus if t <= K + 1},
            }
        )
    return {
        "batch": B,
        "context": ctx,
        "window": window,
        "iters": args.iters,
        "ar_step_ms": 1e3 * ar,
        "draft_vocab": dcfg.draft_vocab_size,
        "per_K": per_k,
    }


# ----------------------------------------------------------------------------------------------
# 4. HF transformers on the same weights.


def hf_model(cfg: ModelConfig, params: dict, device: str):
    """A `Qwen3ForCausalLM` in bf16 holding our params (config and tensors as `export_hf` writes)."""
    import torch
    import transformers

    from specexit_jax.convert import hf_config, hf_tensors

    hf_cfg = transformers.Qwen3Config.from_dict(hf_config(cfg))
    hf_cfg.bos_token_id = hf_cfg.eos_token_id = hf_cfg.pad_token_id = None
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.Qwen3ForCausalLM(hf_cfg)
    finally:
        torch.set_default_dtype(dtype)
    model.eval()

    table = hf_tensors(cfg, params)  # the converter's name table, read backwards
    named = dict(model.named_parameters())  # a tied lm_head is the embedding, listed once
    missing = set(named) - set(table)
    if missing:
        raise ValueError(f"HF parameters without a source: {sorted(missing)[:4]}")
    with torch.no_grad():
        for name, x in table.items():
            if name in named:  # a tied head has no lm_head.weight of its own
                named[name].copy_(_to_torch(x, device))
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def _to_torch(x, device: str):
    """A JAX array as a torch tensor on `device` (through DLPack when possible)."""
    import torch

    try:
        return torch.from_dlpack(x).to(device)
    except Exception:  # noqa: BLE001 - any DLPack gap: go through the host
        return torch.from_numpy(np.asarray(x.astype(jnp.float32))).to(device, torch.bfloat16)


def _hf_generate_s(model, ids, new_tokens: int, **kw) -> tuple[float, list[int]]:
    import torch

    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            **kw,
        )
    sync()
    return time.perf_counter() - t, out[0, ids.shape[1] :].tolist()


def _compile_steps(model):
    """`model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)`,
    used for the one-token steps; the prefill call stays eager, as in transformers' own
    static-cache generation (compiled, it would make the lazily created cache tensors CUDA-graph
    outputs, which the next replay overwrites)."""
    import torch

    eager = model.forward
    compiled = torch.compile(eager, mode="reduce-overhead", fullgraph=True)

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        return (compiled if ids is not None and ids.shape[-1] == 1 else eager)(*args, **kwargs)

    model.forward = forward


def _hf_compiled(model, ids, n: int) -> dict:
    """Static cache + CUDA graphs: our compile of the step forward; if that fails, transformers'
    built-in compilation of static-cache generation (same settings). Reports which one ran."""
    from transformers import CompileConfig

    ways = {
        "torch.compile(model.forward) for one-token steps": (
            _compile_steps,
            dict(cache_implementation="static", disable_compile=True),
        ),
        "transformers auto-compile (static cache)": (
            lambda m: None,
            dict(
                cache_implementation="static",
                compile_config=CompileConfig(fullgraph=True, mode="reduce-overhead"),
            ),
        ),
    }
    errors = {}
    for name, (prepare, kw) in ways.items():
        try:
            prepare(model)
            for _ in range(2):  # warm-up: compile and capture
                _hf_generate_s(model, ids, n, **kw)
            _hf_generate_s(model, ids, 1, **kw)  # the static cache keeps its size: no recompile
            t1, _ = _hf_generate_s(model, ids, 1, **kw)
            tn = min(_hf_generate_s(model, ids, n, **kw)[0] for _ in range(2))
            return {
                "method": name,
                "total_s": tn,
                "first_token_s": t1,
                "ms_per_token": 1e3 * (tn - t1) / (n - 1),
                **({"failed": errors} if errors else {}),
            }
        except Exception as e:  # noqa: BLE001 - try the next way
            errors[name] = _error(e)
            model.__dict__.pop("forward", None)  # back to the class's forward
    return {"error": "; ".join(f"{k}: {v}" for k, v in errors.items())}


def bench_hf(args, cfg, params, keep) -> dict:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    model = hf_model(cfg, params, device)
    ctx, n = args.contexts[0], args.steps
    prompt = keep.get("prompt") or np.random.default_rng(0).integers(0, cfg.vocab_size, ctx).tolist()
    ids = torch.tensor([prompt], device=device)
    res = {
        "device": device,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "context": ctx,
        "new_tokens": n,
    }

    _hf_generate_s(model, ids, 4)  # warm-up
    t1, _ = _hf_generate_s(model, ids, 1)
    tn, hf_tokens = _hf_generate_s(model, ids, n)
    res["eager"] = {"total_s": tn, "first_token_s": t1, "ms_per_token": 1e3 * (tn - t1) / (n - 1)}
    ours = keep.get("tokens")
    if ours:
        m = min(32, len(ours), len(hf_tokens))
        same = [a == b for a, b in zip(ours[:m], hf_tokens[:m])]
        res["agree_first"] = m
        res["agree_positions"] = sum(same)
        res["agree_prefix"] = same.index(False) if False in same else m

    if device != "cuda":
        res["compiled"] = {"skipped": "torch.compile with CUDA graphs runs on CUDA only"}
    else:
        res["compiled"] = _hf_compiled(model, ids, n)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------------------------
# Main.


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def guarded(results: dict, out: Path | None, name: str, fn, *args):
    """Run one part; on failure record and print its error, and go on. The figures so far are
    written to `out` after each part (so a run cut short keeps them)."""
    t = time.perf_counter()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn(*args)
    except Exception as e:  # noqa: BLE001 - one failing part must not stop the others
        traceback.print_exc(file=sys.stderr)
        results[name] = {"error": _error(e)}
    print(f"[bench] {name} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results[name]


def _f(x, fmt: str) -> str:
    """`x` formatted as `fmt` (e.g. ">8.2f"), or "-" at the same width when missing."""
    width = int("".join(c for c in fmt.split(".")[0] if c.isdigit()) or 0)
    return "-".rjust(width) if x is None else format(x, fmt)


def table(r: dict) -> str:
    out = [f"device: {r['device']}   model: {r['model']}"]
    bw = r.get("bandwidth", {})
    if "error" in bw:
        out.append(f"bandwidth: {bw['error']}")
    elif bw:
        out.append(
            f"read ceiling {bw['ceiling_GBps']:.0f} GB/s (sum {bw['read_sum_GBps']:.0f}, max "
            f"{bw['read_max_GBps']:.0f}); copy stream {bw['copy_GBps']:.0f} GB/s (read + write)"
        )
    ar = r.get("ar")
    if ar is not None:
        out.append("")
        out.append(
            "AR decode (engine.decode)   B   context   ms/token   tokens/s   MB/step    GB/s   of ceiling"
        )
    if isinstance(ar, dict):
        out.append(f"  {ar['error']}")
    for row in ar if isinstance(ar, list) else []:
        if "error" in row:
            out.append(f"{'':30}{row['batch']:>2} {row['context']:>9}   {row['error']}")
            continue
        out.append(
            f"{'':30}{row['batch']:>2} {row['context']:>9} {row['ms_per_step']:>10.2f} "
            f"{row['tokens_per_s']:>10.1f} {row['bytes_per_step'] / 1e6:>9.1f} {row['GBps']:>7.0f} "
            f"{_f(row['fraction_of_ceiling'], '>11.0%')}"
        )
    sp = r.get("spec", {})
    if sp:
        out.append("")
    if "error" in sp:
        out.append(f"speculative costs: {sp['error']}")
    elif sp:
        taus = ["1", "2", "3", "4", "5"]
        out.append(
            f"speculative costs (B={sp['batch']}, context {sp['context']}; AR step {sp['ar_step_ms']:.2f} ms)"
        )
        out.append(
            "   K   verify ms   x AR   draft ms   draft/verify   tokens/s at tau = "
            + "  ".join(f"{t:>6}" for t in taus)
        )
        for k in sp["per_K"]:
            tps = "  ".join(f"{_f(k['tokens_per_s_at_tau'].get(t), '>6.0f')}" for t in taus)
            out.append(
                f"  {k['K']:>2} {k['verify_ms']:>11.2f} {k['verify_over_ar']:>6.2f} {k['draft_round_ms']:>10.2f} "
                f"{k['draft_over_verify']:>14.2f}   {'':18}{tps}"
            )
    hf = r.get("hf", {})
    if hf:
        out.append("")
    if "error" in hf:
        out.append(f"HF transformers: {hf['error']}")
    elif hf:
        ours = [
            row
            for row in r.get("ar", [])
            if isinstance(row, dict)
            and row.get("batch") == 1
            and row.get("context") == hf["context"]
            and "ms_per_step" in row
        ]
        out.append(f"B=1, context {hf['context']}, {hf['new_tokens']} new tokens        ms/token")
        if ours:
            out.append(f"  ours (engine.decode)                     {ours[0]['ms_per_step']:>8.2f}")
        for name in ("eager", "compiled"):
            v = hf.get(name, {})
            shown = (
                _f(v.get("ms_per_token"), ">8.2f")
                if "ms_per_token" in v
                else v.get("error") or v.get("skipped")
            )
            out.append(f"  HF {name:<39} {shown}")
        if "method" in hf.get("compiled", {}):
            out.append(f"  (compiled: {hf['compiled']['method']})")
        if "agree_first" in hf:
            out.append(
                f"  greedy agreement with ours: {hf['agree_positions']}/{hf['agree_first']} positions, "
                f"first {hf['agree_prefix']} identical"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny shape and lengths (a CPU check, < 1 minute)")
    p.add_argument("--out", type=Path, help="write the JSON of all figures to this file")
    p.add_argument(
        "--parts", default="bandwidth,ar,spec,hf", help="comma-separated parts to run (default: all)"
    )
    p.add_argument(
        "--contexts", help="cached lengths for AR, the first also for spec and HF (default 1024,16384)"
    )
    p.add_argument("--batches", help="batch sizes for AR (default 1,16)")
    p.add_argument("--steps", type=int, help="decoded tokens per timing (default 128)")
    p.add_argument("--iters", type=int, help="passes per fori_loop in the spec part (default 64)")
    p.add_argument("--max-k", type=int, help="largest draft length K in the spec part (default 8)")
    p.add_argument("--repeats", type=int, default=5, help="best-of-N repeats (default 5)")
    p.add_argument("--stream-mib", type=int, help="array size for the bandwidth ceiling (default 4096 MiB)")
    args = p.parse_args(argv)
    tiny = args.tiny
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    args.contexts = ints(args.contexts) if args.contexts else ([64, 256] if tiny else [1024, 16384])
    args.batches = ints(args.batches) if args.batches else ([1, 4] if tiny else [1, 16])
    args.steps = args.steps or (32 if tiny else 128)
    args.iters = args.iters or (8 if tiny else 64)
    args.stream_mib = args.stream_mib or (64 if tiny else 4096)
    args.max_k = args.max_k or (4 if tiny else 8)
    parts = set(args.parts.split(","))

    cfg = TINY if tiny else QWEN3_4B
    dev = jax.devices()[0]
    results = {
        "device": f"{dev.platform} {dev.device_kind}",
        "jax": jax.__version__,
        "python": platform.python_version(),
        "model": "tiny" if tiny else "Qwen3-4B shape, random bf16",
        "config": cfg.to_dict(),
        "settings": {
            k: getattr(args, k) for k in ("contexts", "batches", "steps", "iters", "max_k", "repeats")
        },
    }
    params = M.init_params(cfg, jax.random.key(0))
    results["param_bytes"] = sum(x.nbytes for x in jax.tree.leaves(params))
    keep: dict = {}  # the B=1 prompt and our greedy tokens, for the HF comparison

    ceiling = None
    if "bandwidth" in parts:
        ceiling = guarded(results, args.out, "bandwidth", bench_bandwidth, args).get("ceiling_GBps")
    if "ar" in parts:
        guarded(results, args.out, "ar", bench_ar, args, cfg, params, ceiling, keep)
    if "spec" in parts:
        guarded(results, args.out, "spec", bench_spec, args, cfg, params, ceiling)
    if "hf" in parts:
        guarded(results, args.out, "hf", bench_hf, args, cfg, params, keep)

    line = json.dumps(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(line)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
