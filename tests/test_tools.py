"""The benchmark tools run end to end at tiny shapes on CPU (their GPU figures are in the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def test_bench_train_reports_throughput_mfu_and_a_kernel_profile(tmp_path):
    import bench_train

    out = tmp_path / "train.json"
    assert bench_train.main(["--tiny", "--devices", "1", "--steps", "1", "--remat", "full",
                             "--profile", str(tmp_path / "prof"), "--out", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["remat"] == "full" and run["tokens_per_s"] > 0 and 0 < run["mfu_draft"] < 1
    assert run["target_s"] < run["step_s"] and run["draft_s"] > 0
    prof = run["profile"]
    assert prof["total_ms"] > 0 and prof["top"] and sum(prof["kinds"].values()) > 0


def test_bench_mesh_compares_a_tensor_split_with_one_device(tmp_path):
    out = tmp_path / "mesh.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(ROOT / "tools" / "bench_mesh.py"), "--tiny", "--meshes", ",tensor=2",
                    "--batches", "2", "--steps", "8", "--out", str(out)], check=True, env=env, cwd=ROOT,
                   capture_output=True, timeout=600)
    one, split = json.loads(out.read_text())["rows"]
    assert one["mesh"] == "one device" and split["mesh"] == "tensor=2" and split["devices"] == 2
    assert split["speedup"] > 0 and 0 <= split["identical_prefix"] <= 8


def test_profile_rounds_times_an_ar_step_a_spec_round_and_its_parts(tmp_path):
    import profile_rounds

    out = tmp_path / "rounds.json"
    assert profile_rounds.main(["--iters", "2", "--repeats", "1", "--context", "32", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["ar_step_ms"] > 0 and r["spec_round_ms"] > 0
    assert set(r["parts_ms"]) == {"draft_chain", "verify", "target_T1", "accept", "commit", "catch_up"}


def test_sweep_demo_runs_every_method_over_its_knob(tmp_path):
    import sweep_demo

    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    assert sweep_demo.main(["--limit", "1", "--max-new-tokens", "64", "--out", str(out), "--plot", str(png)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert {r["method"] for r in runs.values()} == {
        "ar", "spec", "specexit (EWMA)", "specexit (boundary, veto)", "budget", "deer"}
    assert all(r["n"] == 1 and r["latency_s"] > 0 for r in runs.values())
    assert png.stat().st_size > 0


def test_exit_sweep_tunes_then_confirms_on_other_problems(tmp_path, capsys):
    import exit_sweep

    out = tmp_path / "tune.json"
    assert exit_sweep.main(["--tune-limit", "1", "--confirm-limit", "1", "--max-new-tokens", "64",
                            "--out", str(out)]) == 0
    tuned = json.loads(out.read_text())
    conf, surprise = tuned["pick"]
    assert tuned["tune_seed"] == 0 and "ar" in tuned["runs"] and 0 < conf < 1
    printed = capsys.readouterr().out
    assert f"--exit-surprise {0 if surprise is None else surprise}" in printed
    assert "specexit" in printed.split("confirming:")[1]


def test_build_demo_installs_params_stored_narrow_that_load_wide(tmp_path):
    import build_demo
    import jax
    import jax.numpy as jnp

    from specexit_jax.checkpoint import load_checkpoint
    from specexit_jax.demo import demo_checkpoints

    src = Path(demo_checkpoints()[1])
    build_demo.install(src, tmp_path / "draft", "bfloat16")
    (cfg, want), (cfg2, got) = load_checkpoint(src), load_checkpoint(tmp_path / "draft")
    assert cfg2 == cfg and cfg2.dtype == "float32"
    files = lambda d: {f.name for f in d.iterdir() if f.is_file()}  # noqa: E731
    assert files(tmp_path / "draft") == files(src)  # config and tokenizer files
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        assert g.dtype == w.dtype
        assert jnp.array_equal(g, w.astype(jnp.bfloat16).astype(w.dtype))
