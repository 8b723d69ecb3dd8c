"""Draft-training benchmark: tokens/s and MFU of the library's own train step, on 1..N devices.

    python tools/bench_train.py [--devices 1,2] [--batch-per-device 4] [--remat none] [--out FILE]  # GPU
    python tools/bench_train.py --remat full,dots,none --target-layers 4 --profile prof/     # compare
    python tools/bench_train.py --tiny                                                       # CPU check

The step is `train.trainer.build(...).train_step`, exactly what `python -m specexit_jax.train`
runs: a frozen Qwen3-4B-shaped target (random bf16 weights; hidden 2560, 36 layers, vocab 151,936)
computes its logits and the features of three layers over rows of 2,048 tokens inside the jitted
step; the EAGLE-3 draft with signal heads (one layer shaped like the target's, a 32,000-id draft
vocab) is unrolled 7 steps (training-time test) and updated by AdamW, in mixed precision
(`compute_dtype: bfloat16`: float32 params and optimizer state, bf16 matmuls). The rows are
synthetic traces of random tokens (speed does not depend on the values).

`--remat` runs each `loss.remat` choice (what the backward pass recomputes) and reports its peak
memory; `--profile DIR` also sums the device kernels of two steps by name and kind
(`profile_summary.py`); `--target-layers` shrinks the target for quick comparisons of the draft.
For each device count n the mesh is `fsdp=n` (params, optimizer state and rows split n ways) and
the global batch is n x `--batch-per-device` rows (weak scaling). Timed: the whole train step, and
the frozen target's part alone (its forward pass and the soft labels over the draft vocab, the same
computation jitted on its own); the draft's share is the difference.

FLOPs (model FLOPs, causal attention counts only the unmasked half; the recomputation of
`jax.checkpoint` is not counted):
    target   forward only: 2 x (layer weights) + 2 x H x V (output head) per token, plus
             attention 2 x T x N x D per layer per token (QK^T and PV over T/2 keys on average)
    draft    3 x forward (forward + backward) of: fc (3H -> H + 3) once per token, and per unrolled
             step the layer (q/k/v from 2H, o, gated MLP), attention over the step-0 keys (as the
             target) and the output head H x Vd
MFU = FLOPs / time / peak; peak = 989 TFLOP/s (H200 SXM dense bf16, the data-sheet figure). A
best-of-N bf16 matmul (8192^3) measured in the same run shows what the chip gives in practice.
The JSON of all figures is printed as one line (and written to `--out`), then a short table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench_decode import best_time  # noqa: E402
from profile_summary import format_summary, profile  # noqa: E402

from specexit_jax import model as M  # noqa: E402
from specexit_jax import sharding as shd  # noqa: E402
from specexit_jax.config import ModelConfig  # noqa: E402
from specexit_jax.train import config as C  # noqa: E402
from specexit_jax.train import trainer  # noqa: E402
from specexit_jax.train.losses import target_view  # noqa: E402

PEAK_BF16 = 989e12  # H200 SXM, dense bf16 (data sheet)

QWEN3_4B = ModelConfig(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
    num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
    qk_norm=True, max_position_embeddings=40960, arch="qwen3", dtype="bfloat16",
)
TINY = dataclasses.replace(
    QWEN3_4B, vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, max_position_embeddings=1024,
)


def target_flops_per_token(cfg: ModelConfig, T: int) -> float:
    H, N, Kv, D, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    layer = H * (N + 2 * Kv) * D + N * D * H + 3 * H * F
    attention = 2 * T * N * D
    return cfg.num_layers * (2 * layer + attention) + 2 * H * cfg.vocab_size


def draft_flops_per_token(cfg: ModelConfig, T: int, Vd: int, unroll: int) -> float:
    """Forward + backward (3x forward) of the draft's training step, per token."""
    H, N, Kv, D, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    step = 2 * (2 * H * (N + 2 * Kv) * D + N * D * H + 3 * H * F + H * Vd) + 2 * T * N * D
    return 3 * (2 * 3 * H * (H + 3) + unroll * step)


def synthetic_traces(path: Path, n: int, T: int, vocab: int, seed: int = 0) -> None:
    """`n` traces of random tokens in the trace schema, each filling a row of `T` tokens."""
    rng = np.random.default_rng(seed)
    P = 64
    with path.open("w") as f:
        for _ in range(n):
            completion = rng.integers(0, vocab, T - P).tolist()
            think_end = T - P - 32
            boundaries = list(range(40, think_end, 40))
            f.write(json.dumps({
                "prompt": rng.integers(0, vocab, P).tolist(), "completion": completion,
                "think_end": think_end, "boundaries": boundaries,
                "confident": rng.integers(0, 2, len(boundaries)).tolist(),
            }) + "\n")


def bench_matmul(n: int, repeats: int) -> dict:
    a = jnp.ones((n, n), jnp.bfloat16)
    s = best_time(jax.jit(lambda x: x @ x), a, repeats=repeats)
    return {"n": n, "TFLOPs": 2 * n**3 / s / 1e12}


def bench_mesh(args, cfg: ModelConfig, n: int, remat: str, traces: Path, work: Path) -> dict:
    B = n * args.batch_per_device
    d = {
        "mode": "draft", "seed": 0, "mesh": f"fsdp={n}", "compute_dtype": "bfloat16",
        "model": {**dataclasses.asdict(cfg), "rope_scaling": None},
        "draft": {"vocab_size": args.draft_vocab, "num_signals": 3},
        "data": {"train": str(traces), "seq_len": args.seq, "batch_size": B},
        "optim": {"lr": 1e-4, "warmup_steps": 10, "total_steps": 1000},
        "loss": {"unroll": args.unroll, "remat": remat},
        "run": {"out": str(work)},
    }
    tcfg = C.from_dict(d)
    mesh = shd.make_mesh(tcfg.mesh, jax.devices()[:n])
    t0 = time.perf_counter()
    run = trainer.build(tcfg, mesh, work)
    state = run.init_state()
    rows = run.task.train_rows
    batch = trainer.put_batch({k: v[:B] for k, v in rows.items()}, run.batch_sh)
    frozen = run.task.frozen

    # the whole train step (state donated, so it is threaded through)
    state, _ = run.train_step(state, frozen, batch)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = run.train_step(state, frozen, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    summary = None
    if args.profile:
        def one_step():
            nonlocal state
            state, m = run.train_step(state, frozen, batch)
            return m

        summary = profile(one_step, Path(args.profile) / f"{n}dev_{remat}", repeats=2)
        print(format_summary(summary), file=sys.stderr, flush=True)
    stats = jax.devices()[0].memory_stats() or {}

    # the frozen target's part alone
    draft_ids = jnp.arange(args.draft_vocab) + state["consts"]["d2t"]

    @jax.jit
    def target_part(frozen, tokens):
        Bt, T = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (Bt, T))
        logits, aux, _ = M.forward(frozen, cfg, tokens, positions)
        probs, top1 = target_view(logits, draft_ids)
        return probs, top1, aux

    target_s = best_time(target_part, frozen, batch["tokens"], repeats=args.steps)
    tokens = B * args.seq
    tf = target_flops_per_token(cfg, args.seq) * tokens
    df = draft_flops_per_token(cfg, args.seq, args.draft_vocab, args.unroll) * tokens
    draft_s = max(step_s - target_s, 1e-9)
    peak = PEAK_BF16 * n
    return {
        "devices": n, "mesh": tcfg.mesh, "remat": remat, "global_batch": B, "seq": args.seq, "compile_s": compile_s,
        "step_s": step_s, "step_times": times, "target_s": target_s, "draft_s": draft_s,
        "tokens_per_s": tokens / step_s, "target_TFLOP": tf / 1e12, "draft_TFLOP": df / 1e12,
        "mfu_total": (tf + df) / step_s / peak, "mfu_target": tf / target_s / peak,
        "mfu_draft": df / draft_s / peak, "loss": float(metrics["loss"]),
        "peak_GB": stats.get("peak_bytes_in_use", 0) / 1e9, "profile": summary,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a quick check on CPU")
    ap.add_argument("--devices", default="1,2", help="device counts to run (default 1,2; skips those absent)")
    ap.add_argument("--batch-per-device", type=int, default=4, help="rows per device (default 4)")
    ap.add_argument("--seq", type=int, default=None, help="row length (default 2048; --tiny 128)")
    ap.add_argument("--draft-vocab", type=int, default=None, help="draft vocab (default 32000; --tiny 256)")
    ap.add_argument("--unroll", type=int, default=7, help="unrolled draft steps (default 7)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--remat", default="none", help="loss.remat values to run, comma-separated: full,dots,none")
    ap.add_argument("--target-layers", type=int, default=None, help="fewer target layers (quick comparisons)")
    ap.add_argument("--profile", help="also profile each run into this folder and print its top kernels")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else QWEN3_4B
    if args.target_layers:
        cfg = dataclasses.replace(cfg, num_layers=args.target_layers)
    args.seq = args.seq or (128 if args.tiny else 2048)
    args.draft_vocab = args.draft_vocab or (256 if args.tiny else 32000)
    counts = [int(x) for x in args.devices.split(",") if x]
    result = {
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "model": "tiny" if args.tiny else "qwen3-4b", "unroll": args.unroll, "draft_vocab": args.draft_vocab,
        "peak_TFLOPs": PEAK_BF16 / 1e12, "runs": [],
    }
    try:
        result["matmul"] = bench_matmul(512 if args.tiny else 8192, repeats=args.steps)
    except Exception as e:  # noqa: BLE001 - report and go on
        result["matmul"] = {"error": f"{type(e).__name__}: {e}"}
    with tempfile.TemporaryDirectory() as tmp:
        traces = Path(tmp) / "traces.jsonl"
        synthetic_traces(traces, max(counts) * args.batch_per_device, args.seq, cfg.vocab_size)
        for remat in args.remat.split(","):
            for n in counts:
                if n > jax.device_count():
                    print(f"[bench_train] skip {n} devices: only {jax.device_count()}", file=sys.stderr)
                    continue
                try:
                    row = bench_mesh(args, cfg, n, remat, traces, Path(tmp) / f"run{n}_{remat}")
                except Exception as e:  # noqa: BLE001 - one failing size must not stop the others
                    traceback.print_exc()
                    row = {"devices": n, "remat": remat, "error": f"{type(e).__name__}: {str(e)[:500]}"}
                print(f"[bench_train] {row}", file=sys.stderr, flush=True)
                result["runs"].append(row)
    for remat in args.remat.split(","):
        ok = [r for r in result["runs"] if "error" not in r and r["remat"] == remat]
        for r in ok:
            r["scaling_efficiency"] = r["tokens_per_s"] / (ok[0]["tokens_per_s"] / ok[0]["devices"] * r["devices"])
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(f"\nmatmul bf16: {result['matmul'].get('TFLOPs', float('nan')):.0f} TFLOP/s")
    print("devices | remat | batch x seq | step s | tokens/s | target s | draft s | MFU total | MFU target | "
          "MFU draft | scaling | peak GB")
    for r in result["runs"]:
        if "error" in r:
            print(f"{r['devices']} | {r['remat']} | error: {r['error'][:100]}")
            continue
        print(f"{r['devices']} | {r['remat']} | {r['global_batch']} x {r['seq']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
              f"{r['target_s']:.3f} | {r['draft_s']:.3f} | {r['mfu_total']:.1%} | {r['mfu_target']:.1%} | "
              f"{r['mfu_draft']:.1%} | {r.get('scaling_efficiency', 1.0):.2f} | {r['peak_GB']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
