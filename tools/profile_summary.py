"""Where the device time goes: run a function under `jax.profiler` and sum its kernels.

    from profile_summary import profile
    summary = profile(lambda: step(...), "prof/", repeats=2)   # {"total_ms", "kinds", "top"}

    python tools/profile_summary.py prof/          # summarise a trace written earlier

The trace (`create_perfetto_trace=True`) is read back; kernel events of the device lanes (GPU/TPU;
on CPU the XLA ops) are summed by name, per repeat, and grouped into kinds: matmul (cuBLAS /
cuDNN / CUTLASS kernels), collective (NCCL), fusion (XLA's generated kernels: elementwise,
reductions, gathers), copy and other.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
from pathlib import Path

import jax

_KINDS = (
    ("collective", re.compile(r"nccl|all-reduce|all-gather|reduce-scatter|collective", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|sm\d+_|dot|convolution|cudnn", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy", re.I)),
    ("fusion", re.compile(r"fusion|reduce|loop_|input_|triton|transpose|gather|scatter|select", re.I)),
)


def kind_of(name: str) -> str:
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return "other"


def summarize(trace_dir: str | Path, repeats: int = 1, top: int = 25) -> dict:
    """Kernel time per repeat from the newest perfetto trace under `trace_dir`."""
    files = sorted(Path(trace_dir).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(files[-1]) as f:
        events = json.load(f)["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {pid for pid, n in names.items() if re.search(r"/device:(GPU|TPU)", n)}
    if not device:  # CPU: XLA ops run on the host threads
        device = {pid for pid, n in names.items() if "/host:CPU" in n}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in device}
    # A GPU lane appears twice (the HLO ops and the kernels of each stream): count one of them.
    lanes = ({t for t, n in threads.items() if n == "XLA Ops"}
             or {t for t, n in threads.items() if n.startswith("Stream")} or set(threads))
    by_name: dict[str, float] = collections.Counter()
    for e in events:
        if (e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in lanes
                and not e["name"].startswith(("$", "Pjit", "Thunk"))):
            by_name[e["name"]] += e.get("dur", 0.0) / 1e3 / repeats  # us -> ms per repeat
    kinds: dict[str, float] = collections.Counter()
    for name, ms in by_name.items():
        kinds[kind_of(name)] += ms
    total = sum(by_name.values())
    rows = [{"name": n[:120], "kind": kind_of(n), "ms": ms, "share": ms / max(total, 1e-9)}
            for n, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]]
    lane_names = sorted({threads.get(t, "?") for t in lanes})
    return {"total_ms": total, "kinds": dict(kinds), "top": rows, "lanes": lane_names[:8]}


def profile(fn, trace_dir: str | Path, repeats: int = 2, top: int = 25) -> dict:
    """Call `fn()` (already compiled) `repeats` times under the profiler and summarise."""
    jax.block_until_ready(fn())
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for _ in range(repeats):
            jax.block_until_ready(fn())
    return summarize(trace_dir, repeats, top)


def format_summary(s: dict) -> str:
    lines = [f"lanes: {', '.join(s['lanes'])}", f"device kernel time {s['total_ms']:.2f} ms per call; by kind: "
             + ", ".join(f"{k} {v:.2f} ms ({v / max(s['total_ms'], 1e-9):.0%})" for k, v in
                         sorted(s["kinds"].items(), key=lambda kv: -kv[1]))]
    lines += [f"  {r['ms']:8.3f} ms {r['share']:5.1%} {r['kind']:<10} {r['name']}" for r in s["top"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_summary(summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)))
