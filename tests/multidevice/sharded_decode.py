"""Run on 8 fake CPU devices (see tests/test_sharded_decode.py): sharded decoding and restore."""

import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402

from specexit_jax import draft as D  # noqa: E402
from specexit_jax import model as M  # noqa: E402
from specexit_jax.checkpoint import load_checkpoint, param_shapes, save_checkpoint  # noqa: E402
from specexit_jax.config import ModelConfig  # noqa: E402
from specexit_jax.exit import ExitConfig  # noqa: E402
from specexit_jax.engine import generate  # noqa: E402
from specexit_jax.sharding import make_mesh, param_shardings  # noqa: E402

assert len(jax.devices()) == 8

cfg = ModelConfig(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=4,
    num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True,
)
tp = M.init_params(cfg, jax.random.key(0), scale=0.3)
dcfg = D.DraftConfig.for_target(cfg)
dp = D.init_params(dcfg, jax.random.key(3), scale=0.3)
prompts = [[1, 2, 3, 4, 5], [7, 8, 9], list(range(10, 30)), [20]]
# No active signal, so every boundary exits; a token that plain decoding emits mid-way in row 0 is the step split, so
# specexit rows cut at different times (or not at all).
plain = generate((cfg, tp), None, prompts=prompts, max_new_tokens=24).tokens
split = plain[0][5]
ex = ExitConfig(think_end_id=cfg.vocab_size - 1, step_split_ids=(split,), signals=())

failures = []
for mode in ("ar", "spec", "specexit"):
    kw = dict(prompts=prompts, max_new_tokens=24, mode=mode, num_draft_tokens=3, exit=ex)
    ref = generate((cfg, tp), (dcfg, dp), **kw)
    for spec in ("tensor=2", "data=2,tensor=2", "data=4"):
        got = generate((cfg, tp), (dcfg, dp), mesh=spec, **kw)
        if got.tokens != ref.tokens:
            failures.append(f"{mode} {spec}: {got.tokens} != {ref.tokens}")
    if mode == "specexit" and not any(s["exit_reason"] == "signal" for s in ref.stats):
        failures.append("specexit reference never exited: the test would not cover exits")

# A batch that does not divide the row shards is padded, and the padding is dropped.
odd = generate((cfg, tp), None, prompts=prompts[:3], max_new_tokens=8, mesh="data=2")
if odd.tokens != generate((cfg, tp), None, prompts=prompts[:3], max_new_tokens=8).tokens:
    failures.append("padded batch differs")

# KV heads that do not divide the tensor axis: a clear error with the rule.
try:
    generate((cfg, tp), None, prompts=prompts, max_new_tokens=4, mesh="tensor=4")
    failures.append("tensor=4 with 2 KV heads did not raise")
except ValueError as e:
    if "KV heads" not in str(e):
        failures.append(f"unhelpful error: {e}")

# Restore straight into a sharding.
path = sys.argv[1]
save_checkpoint(path, cfg, tp)
mesh = make_mesh("data=2,fsdp=2,tensor=2")
want = param_shardings(mesh, param_shapes(cfg))
_, restored = load_checkpoint(path, shardings=want)
for (kp, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(want)):
    if leaf.sharding != sh:
        failures.append(f"{jax.tree_util.keystr(kp)}: {leaf.sharding} != {sh}")
wq = restored["layers"][0]["wq"]
if tuple(wq.sharding.spec) != (("fsdp"), "tensor", None) and tuple(wq.sharding.spec) != ("fsdp", "tensor", None):
    failures.append(f"wq spec {wq.sharding.spec}")

print("\n".join(failures) if failures else "OK")
sys.exit(1 if failures else 0)
