"""Sharded training on 8 fake CPU devices equals single-device training; params land where the
sharding table says; mesh mistakes are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax import sharding as shd
from specexit_jax.config import ModelConfig
from specexit_jax.train import config as C

ROOT = Path(__file__).resolve().parents[1]

# One train step on mesh data=2,fsdp=2,tensor=2 and on one device, in a fresh process (the fake
# device count must be set before JAX starts). Prints a JSON summary.
SCRIPT = r"""
import json, sys
from pathlib import Path
import jax, numpy as np
from specexit_jax import sharding as shd
from specexit_jax.train import config as C, data, trainer

cfg = C.from_dict(json.loads(sys.argv[1]))
out = Path(sys.argv[2])

def one_step(mesh):
    run = trainer.build(cfg, mesh, out)
    state = run.init_state()
    batch = next(data.Batches(run.task.train_rows, cfg.data.batch_size, cfg.seed))
    state, metrics = run.train_step(state, run.task.frozen, trainer.put_batch(batch, run.batch_sh))
    return run, state, metrics

run8, s8, m8 = one_step(shd.make_mesh("data=2,fsdp=2,tensor=2"))
_, s1, m1 = one_step(shd.make_mesh("", jax.devices()[:1]))
diff = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in
                        zip(jax.tree.leaves(a), jax.tree.leaves(b)))
mu = s8["opt_state"][1][0].mu
try:
    shd.param_shardings(shd.make_mesh("data=2,tensor=4"), s8["params"])
    kv_error = None
except ValueError as e:
    kv_error = str(e)
print(json.dumps({
    "devices": len(jax.devices()),
    "loss": [float(m8["loss"]), float(m1["loss"])],
    "params_diff": diff(s8["params"], s1["params"]),
    "mu_min_max": min(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(mu)),
    "opt_diff": diff(s8["opt_state"], s1["opt_state"]),
    "specs": {k: str(tuple(v.sharding.spec)) for k, v in s8["params"].items()},
    "mu_specs": {k: str(tuple(v.sharding.spec)) for k, v in mu.items()},
    "target_specs": {k: str(tuple(v.sharding.spec)) for k, v in run8.task.frozen["layers"][0].items()},
    "embed_spec": str(tuple(run8.task.frozen["embed"].sharding.spec)),
    "wq_shard_shape": list(s8["params"]["wq"].addressable_shards[0].data.shape),
    "wq_shape": list(s8["params"]["wq"].shape),
    "kv_error": kv_error,
}))
"""


def spec(*axes) -> str:
    return str(tuple(P(*axes)))


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sharded")
    cfg = {
        "mode": "draft",
        "init_scale": 0.3,
        "model": dict(vocab_size=116, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=256),
        "draft": {"vocab_size": 48},
        "data": {"train": "demo:16:0", "tokenizer": "demo", "seq_len": 64, "batch_size": 4},
        "optim": {"lr": 1e-4, "warmup_steps": 0, "total_steps": 10},
        "loss": {"unroll": 3},
        "run": {"out": str(root)},
    }
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cfg), str(root)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_step_equals_single_device_step(result):
    assert result["devices"] == 8
    loss8, loss1 = result["loss"]
    assert loss8 == pytest.approx(loss1, rel=1e-5)
    assert result["mu_min_max"] > 0  # every leaf got a gradient, so every weight moved by ~lr = 1e-4
    assert result["params_diff"] < 1e-6
    assert result["opt_diff"] < 1e-6


def test_param_leaves_carry_the_table_shardings(result):
    s = result["specs"]
    assert s["fc"] == spec("fsdp", None)  # the signal columns stay whole
    assert s["wq"] == s["wk"] == s["wv"] == spec("fsdp", "tensor", None)
    assert s["wo"] == spec("tensor", None, "fsdp")
    assert s["w_gate"] == s["w_up"] == spec("fsdp", "tensor")
    assert s["w_down"] == spec("tensor", "fsdp")
    assert s["lm_head"] == spec("fsdp", "tensor")
    assert s["norm"] == s["hidden_norm"] == spec()
    assert result["mu_specs"] == s  # Adam moments live where their params do
    t = result["target_specs"]
    assert t["wq"] == spec("fsdp", "tensor", None) and t["w_down"] == spec("tensor", "fsdp")
    assert result["embed_spec"] == spec("tensor", "fsdp")
    H2, N, D = result["wq_shape"]
    assert result["wq_shard_shape"] == [H2 // 2, N // 2, D]


def test_kv_heads_that_do_not_divide_the_tensor_axis_are_a_one_line_error(result):
    err = result["kv_error"]
    assert err.startswith("param wk: dim 1 (kv_heads = 2) does not divide over mesh axis 'tensor' (size 4)")
    assert "replicate KV heads or pick another tensor size" in err and "\n" not in err


def test_leaf_spec_rules_without_devices():
    mesh = {"data": 1, "fsdp": 4, "tensor": 2}
    assert shd.leaf_spec("layers.3.wq", (64, 8, 16), mesh) == P("fsdp", "tensor", None)
    assert shd.leaf_spec("layers.3.attn_norm", (64,), mesh) == P()
    assert shd.leaf_spec("embed", (100, 64), {"data": 1, "fsdp": 4, "tensor": 1}) == P(None, "fsdp")
    with pytest.raises(ValueError, match=r"^param embed: dim 0 \(vocab = 101\) does not divide over mesh axis"):
        shd.leaf_spec("embed", (101, 64), mesh)
    with pytest.raises(ValueError, match="no sharding rule for 'cache'"):
        shd.leaf_spec("cache", (4, 4), mesh)


@pytest.mark.parametrize(
    "text,n,message",
    [
        ("data=2,fsdp=2,tensor=2", 4, "mesh data=2,fsdp=2,tensor=2 needs 8 devices, have 4"),
        ("data=-1,fsdp=-1", 8, "only one axis may be -1"),
        ("data=3,fsdp=-1", 8, "8 devices do not split into groups of 3"),
        ("model=2", 2, "expected NAME=SIZE with NAME in data, fsdp, tensor"),
        ("data=x", 2, "size of 'data' is not an integer"),
    ],
)
def test_mesh_spec_errors_are_one_line(text, n, message):
    with pytest.raises(ValueError) as e:
        shd.parse_mesh_spec(text, n)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mesh_spec_fills_the_rest():
    assert shd.parse_mesh_spec("tensor=2,fsdp=-1", 8) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert shd.parse_mesh_spec("", 8) == {"data": 8, "fsdp": 1, "tensor": 1}


# Published shapes (config.json of each model) of the targets the shipped configs train drafts for.
REAL_TARGETS = {
    "qwen3_4b_draft.yaml": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_layers=36,
                                num_heads=32, num_kv_heads=8, head_dim=128, qk_norm=True, tie_word_embeddings=True),
    "qwen3_8b_draft.yaml": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_layers=36,
                                num_heads=32, num_kv_heads=8, head_dim=128, qk_norm=True),
    "r1_distill_llama_8b_draft.yaml": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                           num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128),
}


@pytest.mark.parametrize("name", sorted(REAL_TARGETS))
def test_real_configs_shard_over_one_8_gpu_host(name):
    """Shapes only (no weights, no devices): every leaf divides its mesh axis, the batch divides
    the row shards, and the frozen bf16 target plus the fp32 draft with its two Adam moments
    take under 4 GiB per device (2.5 for the 8B models), leaving the H200 to activations."""
    cfg = C.load(ROOT / "configs" / name)
    mesh = shd.parse_mesh_spec(cfg.mesh, 8)
    assert cfg.data.batch_size % (mesh["data"] * mesh["fsdp"]) == 0
    tcfg = ModelConfig(**REAL_TARGETS[name], dtype="bfloat16")
    dcfg = D.DraftConfig.for_target(tcfg, cfg.draft.vocab_size, cfg.draft.num_signals)
    per_device = 0.0
    for shapes, copies, itemsize in ((M.param_shapes(tcfg), 1, 2), (D.param_shapes(dcfg), 3, 4)):
        specs = jax.tree.leaves(shd.param_specs(mesh, shapes), is_leaf=lambda x: isinstance(x, P))
        for sd, spec in zip(jax.tree.leaves(shapes), specs):
            ways = np.prod([mesh[a] for ax in spec if ax for a in ((ax,) if isinstance(ax, str) else ax)])
            per_device += copies * itemsize * np.prod(sd.shape) / ways
    assert per_device < 4 * 2**30, f"{per_device / 2**30:.1f} GiB per device"
