"""The bundled demo model: it loads, answers a fixed problem correctly in every mode, the
default command runs, and the evaluation harness runs on a tiny subset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from specexit_jax.checkpoint import load_checkpoint
from specexit_jax.demo import demo_checkpoints, task
from specexit_jax.engine import generate
from specexit_jax.exit import ExitConfig
from specexit_jax.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    tpath, dpath = demo_checkpoints()
    tok = Tokenizer(tpath)
    ex = ExitConfig(think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                    step_split_ids=tok.step_split_ids)
    return load_checkpoint(tpath), load_checkpoint(dpath), tok, ex


def test_bundled_checkpoints_are_small_and_load_as_float32(demo):
    (cfg, tp), (dcfg, dp), _, _ = demo
    stored = sum(f.stat().st_size for p in demo_checkpoints() for f in Path(p).rglob("*") if f.is_file())
    assert stored <= 20e6  # params stored in bfloat16
    assert cfg.dtype == dcfg.dtype == "float32"
    floats = [x for x in jax.tree.leaves((tp, dp)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert sum(x.size for x in floats) * 4 > stored  # what runs is wider than what is stored


@pytest.mark.parametrize("mode", ["ar", "spec", "specexit"])
def test_demo_answers_a_fixed_problem(demo, mode):
    target, draft, tok, ex = demo
    sample = task.make_dataset(1, seed=2024)[0]
    prompt = tok.encode(task.render_prompt(sample))
    res = generate(target, draft, [prompt], max_new_tokens=400, mode=mode, exit=ex, eos_ids=tok.eos_ids)
    text = tok.decode(res.tokens[0])
    assert task.is_correct(sample, text), text
    stats = res.stats[0]
    assert stats["exit_reason"] in ("natural", "signal")
    if mode == "spec":
        assert stats["tau"] > 1.5  # the draft predicts its target's tokens


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_default_decode_command_runs_the_demo():
    proc = _run("specexit_jax.decode", "--json", "--max-new-tokens", "300")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["mode"] == "specexit" and len(out["tokens"]) == 1
    assert "</think>" in out["text"][0]


def test_eval_harness_on_a_tiny_subset():
    proc = _run("specexit_jax.eval", "--limit", "2", "--modes", "ar,specexit,budget,deer", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["n"] == 2 and set(out["modes"]) == {"ar", "specexit", "budget", "deer"}
    for m in out["modes"].values():
        assert {"accuracy", "think_tokens", "total_tokens", "latency_s", "tau"} <= set(m)
        assert 0.0 <= m["accuracy"] <= 1.0 and m["latency_s"] > 0
    assert out["modes"]["ar"]["speedup_vs_ar"] == 1.0


def test_harness_times_each_problem_repeatedly_and_keeps_the_fastest(demo, monkeypatch):
    from specexit_jax.eval import harness as H

    target, _, tok, ex = demo
    p = H.demo_problems(tok, 1, 0)[0]
    decode_s = iter([9.0, 5.0, 3.0, 4.0, 2.0, 7.0, 6.0])  # warm-up, then 3 runs per problem
    seeds, generate = [], H.generate

    def timed(*args, seed, **kw):
        seeds.append(seed)
        res = generate(*args, seed=seed, **kw)
        res.timing = {"prefill_s": 0.5, "decode_s": next(decode_s)}
        return res

    monkeypatch.setattr(H, "generate", timed)
    recs = H.run_mode("ar", [p, p], target, None, tok.decode, H.ModeSettings(ex), max_new_tokens=24,
                      num_draft_tokens=4, eos_ids=tok.eos_ids, repeats=3)
    assert [r["latency_s"] for r in recs] == [3.5, 2.5]
    assert seeds == [0, 0, 0, 0, 1, 1, 1]  # the repeats of a problem decode the same tokens
    assert recs[0]["tokens"] == recs[1]["tokens"] == generate(
        target, None, [p.prompt], max_new_tokens=24, eos_ids=tok.eos_ids).tokens[0]
