"""Sharded decoding benchmark: per-token latency of the library's decode loop on 1 vs n devices.

    python tools/bench_mesh.py [--meshes ",tensor=2,data=2"] [--batches 1,16] [--out FILE]  # GPUs
    python tools/bench_mesh.py --tiny                                                     # CPU check

On random bf16 weights of a Qwen3-8B-shaped target (hidden 4096, 36 layers, 32 heads, 8 KV heads,
head_dim 128, MLP 12288, vocab 151936, untied head), plain greedy decoding (`engine.prefill` /
`engine.decode`, the loop `generate` runs) with 1k cached tokens, 128 new tokens per row, for each
mesh spec (the empty spec is one device) and batch size. The params are placed by
`sharding.param_shardings` (heads, KV heads, MLP columns and vocab on `tensor`) and the plan carries
the mesh, so the caches and the decode state are pinned as `generate(..., mesh=...)` pins them.

Per row: ms per decode step, tokens/s, the bytes a step must read per device (the weights and KV
of its shard; see tools/bench_decode.py) against that device's time, and for every mesh of n
devices its speedup over one device at the same batch and the fraction of the ideal n-fold speedup
it reaches. The decoded tokens of every mesh are compared with the single-device tokens: the mean
count of identical leading tokens per row is reported. Random weights give nearly flat logits, so
a different bf16 summation order (a split matmul) can flip a near-tie and the rows then part ways;
exact agreement of sharded decoding is tested in float32 (tests/test_sharded_decode.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_decode import kv_bytes, prompt_state, weight_bytes  # noqa: E402

from specexit_jax import engine as G  # noqa: E402
from specexit_jax import model as M  # noqa: E402
from specexit_jax import sharding as SH  # noqa: E402
from specexit_jax.config import ModelConfig  # noqa: E402

QWEN3_8B = ModelConfig(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32,
    num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
    qk_norm=True, max_position_embeddings=40960, arch="qwen3", dtype="bfloat16",
)
TINY = dataclasses.replace(
    QWEN3_8B, vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, max_position_embeddings=4096,
)


def decode_once(cfg, params, mesh, prompt: np.ndarray, steps: int, chunk: int) -> dict:
    """Prefill `prompt [B,P]`, then time `steps` greedy tokens. Two untimed calls of 2 rounds each
    come first: the first compiles for the prefilled state's layout, the second for the layout
    the loop itself returns (what the timed call gets)."""
    B, P = prompt.shape
    plan, knobs, *_ = G.setup(cfg, None, [[0] * P] * B, max_new_tokens=steps, max_len=P + steps + 1, mesh=mesh)
    tp = params if mesh is None else jax.device_put(params, SH.param_shardings(mesh, params))
    st = prompt_state(tp, plan, knobs, jnp.asarray(prompt), chunk)
    for _ in range(2):
        st = G.decode(tp, None, plan, knobs, st, jnp.int32(2))
    L0, n0 = (int(v) for v in jax.device_get((st.length[0], st.n_out[0])))
    t = time.perf_counter()
    st = G.decode(tp, None, plan, knobs, st, jnp.int32(1 << 30))
    st.n_out.block_until_ready()
    dt = time.perf_counter() - t
    n = int(st.n_out[0]) - n0
    n_dev = 1 if mesh is None else mesh.size
    tensor = 1 if mesh is None else mesh.shape["tensor"]
    rows = B // (n_dev // tensor)  # rows per device
    moved = (weight_bytes(cfg, params, rows) + kv_bytes(cfg, rows, L0 + (n + 1) / 2)) / tensor
    return {
        "steps": n,
        "ms_per_step": 1e3 * dt / n,
        "tokens_per_s": B * n / dt,
        "bytes_per_device_step": moved,
        "GBps_per_device": moved / (dt / n) / 1e9,
        "tokens": np.asarray(st.tokens[:, : int(st.n_out[0])]).tolist(),
    }


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two rows share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _measure(cfg, params, mesh, prompt, steps, chunk, base: dict) -> dict:
    """One mesh and batch; the single-device run (`mesh` None) is stored in `base` by batch, and
    later meshes are compared with it."""
    B = prompt.shape[0]
    row = {"devices": 1 if mesh is None else mesh.size}
    r = decode_once(cfg, params, mesh, prompt, steps, chunk)
    toks = r.pop("tokens")
    row.update(r)
    if mesh is None:
        base[B] = (r["ms_per_step"], toks)
    elif B in base:
        ms1, toks1 = base[B]
        row["speedup"] = ms1 / r["ms_per_step"]
        row["fraction_of_ideal"] = row["speedup"] / row["devices"]
        row["identical_prefix"] = float(np.mean([_common_prefix(a, b) for a, b in zip(toks1, toks)]))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a quick check on CPU")
    ap.add_argument("--meshes", default=",tensor=2,data=2",
                    help='mesh specs of one axis each, comma-separated; the empty first entry is one device '
                         '(default ",tensor=2,data=2"); for specs of several axes separate by ";"')
    ap.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    ap.add_argument("--context", type=int, default=None, help="cached tokens (default 1024; --tiny 64)")
    ap.add_argument("--steps", type=int, default=None, help="decoded tokens per row (default 128; --tiny 16)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else QWEN3_8B
    ctx = args.context or (64 if args.tiny else 1024)
    steps = args.steps or (16 if args.tiny else 128)
    sep = ";" if ";" in args.meshes else ","
    specs = [s for i, s in enumerate(args.meshes.split(sep)) if s or i == 0]  # "" only first
    batches = [int(b) for b in args.batches.split(",") if b]

    params = jax.jit(lambda k: M.init_params(cfg, k, 0.02))(jax.random.key(0))
    rng = np.random.default_rng(0)
    result = {
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
        "jax": jax.__version__, "model": "tiny" if args.tiny else "qwen3-8b", "context": ctx, "steps": steps,
        "rows": [],
    }
    base = {}
    for B in batches:
        prompt = rng.integers(0, cfg.vocab_size, (B, ctx), dtype=np.int32)
        chunk = 16 if args.tiny else max(16, min(512, 2048 // B))
        for spec in specs:
            row = {"mesh": spec or "one device", "batch": B}
            try:
                mesh = G._mesh(spec) if spec else None
                if mesh is not None and B % SH.batch_shards(mesh):
                    row["skipped"] = f"batch {B} does not split over {SH.batch_shards(mesh)} row shards"
                else:
                    row.update(_measure(cfg, params, mesh, prompt, steps, chunk, base))
            except Exception as e:  # noqa: BLE001 - one failing mesh must not stop the others
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            print(f"[bench_mesh] {row}", file=sys.stderr, flush=True)
            result["rows"].append(row)
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(f"\n{result['model']}, context {ctx}, {steps} new tokens, {result['device']}")
    print("mesh | batch | ms/token | tokens/s | GB/s per device | speedup | of ideal | identical prefix")
    for r in result["rows"]:
        if "error" in r or "skipped" in r:
            print(f"{r['mesh']} | {r['batch']} | {r.get('error', r.get('skipped'))[:100]}")
            continue
        print(f"{r['mesh']} | {r['batch']} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:,.0f} | "
              f"{r['GBps_per_device']:,.0f} | {r.get('speedup', 1.0):.2f}x | {r.get('fraction_of_ideal', 1.0):.0%} | "
              f"{r.get('identical_prefix', steps):.0f}/{steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
