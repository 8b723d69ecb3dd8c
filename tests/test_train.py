"""Draft and LM training: the unrolled loss matches decoding, loss falls, resume is exact, bad
configs fail with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax import traces
from specexit_jax.checkpoint import load_checkpoint
from specexit_jax.config import ModelConfig
from specexit_jax.demo.tokenizer_build import build_tokenizer
from specexit_jax.tokenizer import Tokenizer
from specexit_jax.sharding import make_mesh
from specexit_jax.train import config as C
from specexit_jax.train import data, trainer
from specexit_jax.train.__main__ import main as train_main
from specexit_jax.train.losses import LossConfig, signal_losses, target_view
from specexit_jax.train.ttt import unroll

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=116, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=8, max_position_embeddings=512)


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Runs in this module compile the same programs; a persistent cache compiles each once."""
    old = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("traces")
    build_tokenizer(root / "tok")
    path = root / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in traces.demo_traces(64, 0, Tokenizer(root / "tok"))))
    return path


def draft_config(out: Path, train: Path, **sections) -> dict:
    d = {
        "mode": "draft",
        "seed": 0,
        "init_scale": 0.3,
        "model": dict(TINY),
        "draft": {"vocab_size": 48},
        "data": {"train": str(train), "seq_len": 96, "batch_size": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 5, "total_steps": 40, "weight_decay": 0.0},
        "loss": {"unroll": 3},
        "run": {"out": str(out), "save_every": 1000, "log_every": 10, "eval_every": 1000, "keep": 2},
    }
    for name, values in sections.items():
        d[name] = {**d[name], **values} if isinstance(values, dict) else values
    return d


def metrics(out: Path, split: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def quiet(*_):
    pass


# --- the unrolled loss --------------------------------------------------------------------------


def test_unrolled_draft_equals_the_decode_chain():
    """Step i at index t of the training unroll = the i-th chained draft step after real position
    t in decoding (draft.step over a cache, ground-truth tokens), for every i and t."""
    cfg = ModelConfig(**TINY)
    dcfg = D.DraftConfig.for_target(cfg)
    rng = np.random.default_rng(0)  # norms away from one too: a swapped norm shows
    tp = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype), M.param_shapes(cfg))
    dp = {k: jnp.asarray(0.2 * rng.normal(size=s.shape), jnp.float32) for k, s in D.param_shapes(dcfg).items()}
    dp["d2t"] = jnp.zeros(dcfg.draft_vocab_size, jnp.int32)
    T, steps = 12, 4
    x = jax.random.randint(jax.random.key(2), (1, T), 0, cfg.vocab_size)
    positions = jnp.arange(T)[None]
    aux = M.forward(tp, cfg, x, positions)[1]
    hidden0, raw = D.project_raw(dp, dcfg, aux)
    h_ref, sig_ref = D.project(dp, dcfg, aux)
    np.testing.assert_array_equal(hidden0, h_ref)
    np.testing.assert_allclose(D.signals_from_raw(raw), sig_ref, rtol=1e-6)
    outs = unroll(dp, dcfg, tp["embed"], x, hidden0, steps)

    @jax.jit
    def decode_chain(dp):
        """Row r of a batch decodes after real position t = r: catch-up over the real pairs
        (later slots are overwritten by the chain before they are read), then the chain."""
        R = T - steps  # the last position with a real token for every step
        t = jnp.arange(R)
        pairs = jnp.pad(x[:, 1:], ((0, 0), (0, 1)))
        h, cache = D.step(dp, dcfg, tp["embed"], jnp.repeat(pairs, R, 0), jnp.repeat(hidden0, R, 0),
                          jnp.repeat(positions, R, 0), D.init_cache(dcfg, R, 32))
        h = h[t, t]
        chain = [h]
        for i in range(1, steps):
            h, cache = D.step(dp, dcfg, tp["embed"], x[0, t + 1 + i][:, None], h[:, None], (t + i)[:, None], cache)
            h = h[:, 0]
            chain.append(h)
        return chain

    for i, h in enumerate(decode_chain(dp)):
        np.testing.assert_allclose(outs[i][0, : T - steps], h, atol=1e-5, err_msg=f"step {i}")


def test_target_view_renormalises_over_the_draft_vocab():
    logits = jnp.log(jnp.array([[[1.0, 2.0, 3.0, 4.0]]]))
    probs, top1 = target_view(logits, jnp.array([1, 3]))
    np.testing.assert_allclose(probs[0, 0], [2 / 6, 4 / 6], rtol=1e-6)
    assert int(top1[0, 0]) == 3


def test_signal_losses_at_zero_outputs_match_hand_values():
    batch = {
        "signal_mask": jnp.array([[True, True, False]]),
        "confidence": jnp.array([[0.0, 1.0, 0.0]]),
        "progress": jnp.array([[0.0, 0.5, 0.0]]),
        "remain": jnp.array([[4.0, 2.0, 0.0]]),
    }
    total, m = signal_losses(jnp.zeros((1, 3, 3)), batch, LossConfig(confidence=1.0, progress=2.0, remain=3.0))
    log2 = np.log(2.0)
    assert float(m["confidence_loss"]) == pytest.approx(log2)  # BCE at sigmoid(0) = 1/2
    assert float(m["progress_loss"]) == pytest.approx(log2)
    assert float(m["remain_loss"]) == pytest.approx((np.log(4) ** 2 + np.log(2) ** 2) / 2)
    assert float(m["confidence_mae"]) == pytest.approx(0.5)
    assert float(m["progress_mae"]) == pytest.approx(0.25)  # |0.5 - 0| and |0.5 - 0.5|, then mean
    assert float(m["remain_mae"]) == pytest.approx((3 + 1) / 2)  # exp(0) = 1 token
    assert float(total) == pytest.approx(log2 + 2 * log2 + 3 * float(m["remain_loss"]), rel=1e-6)


# --- training runs ------------------------------------------------------------------------------


def test_draft_loss_falls_and_the_export_loads(tmp_path, trace_file):
    cfg = C.from_dict(draft_config(tmp_path / "run", trace_file, data={"tokenizer": "demo"}))
    final = trainer.train(cfg, log=quiet)
    log = metrics(tmp_path / "run")
    first, last = log[0], log[-1]
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert last["loss"] < 0.92 * first["loss"]
    assert last["token_loss"] < first["token_loss"] - 0.3
    assert last["top1_step0"] > 1.5 * first["top1_step0"]
    assert last["confidence_loss"] < first["confidence_loss"]
    dcfg, dp = load_checkpoint(final)
    assert isinstance(dcfg, D.DraftConfig) and dcfg.draft_vocab_size == 48 and dcfg.num_signals == 3
    assert (final / "tokenizer.json").is_file()
    # the draft vocab holds the 48 most frequent completion tokens, among them </think>
    ids = np.asarray(D.to_target_ids(dp, jnp.arange(48)))
    assert np.all(np.diff(ids) > 0) and Tokenizer(final).think_end_id in ids


@pytest.mark.parametrize("mode", ["draft", "lm"])
def test_bfloat16_compute_keeps_float32_params_and_the_float32_loss(tmp_path, trace_file, mode):
    """Mixed precision: the step computes in bf16 from float32 master params; the loss equals the
    float32 loss to bf16 accuracy and the updated params are still float32."""
    d = draft_config(tmp_path / "run", trace_file)
    if mode == "lm":
        d = {**d, "mode": "lm", "data": {**d["data"], "train": "demo:16:0", "tokenizer": "demo"}}
        d.pop("draft")
    losses = {}
    for dtype in ("float32", "bfloat16"):
        run = trainer.build(C.from_dict({**d, "compute_dtype": dtype}), make_mesh(""), tmp_path)
        batch = trainer.put_batch(next(data.Batches(run.task.train_rows, 8, 0)), run.batch_sh)
        state, m = run.train_step(run.init_state(), run.task.frozen, batch)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
        losses[dtype] = float(m["loss"])
    assert np.isfinite(losses["bfloat16"])
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_einsum_f32_runs_its_gradients_in_the_input_dtype():
    """fp32 inputs: value and gradients of the plain einsum exactly; bf16 inputs: an fp32 value,
    bf16 gradients (no fp32 matmul in the backward pass) close to the fp32 ones."""
    from specexit_jax.layers import einsum_f32

    ka, kb, kg = jax.random.split(jax.random.key(0), 3)
    a, b = jax.random.normal(ka, (3, 5, 8)), jax.random.normal(kb, (8, 7))
    g = jax.random.normal(kg, (3, 5, 7))
    plain = lambda a, b: jnp.sum(jnp.einsum("btd,dv->btv", a, b) * g)  # noqa: E731
    mixed = lambda a, b: jnp.sum(einsum_f32("btd,dv->btv", a, b) * g)  # noqa: E731
    for x, y in zip(jax.grad(plain, (0, 1))(a, b), jax.grad(mixed, (0, 1))(a, b)):
        np.testing.assert_array_equal(x, y)
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    assert einsum_f32("btd,dv->btv", a16, b16).dtype == jnp.float32
    dots = [line for line in jax.jit(jax.grad(mixed, (0, 1))).lower(a16, b16).as_text().splitlines()
            if "dot_general" in line]
    assert dots and not any("f32>" in line for line in dots)  # bf16 products (the plain einsum: fp32)
    for x, y in zip(jax.grad(plain, (0, 1))(a, b), jax.grad(mixed, (0, 1))(a16, b16)):
        assert y.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(y, np.float32), x, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("remat", ["dots", "none"])
def test_remat_choices_give_the_same_loss_and_gradients(tmp_path, trace_file, remat):
    """`loss.remat` trades memory for recomputation only: loss and gradients equal "full"."""
    d = draft_config(tmp_path / "run", trace_file)
    grads = {}
    for choice in ("full", remat):
        run = trainer.build(C.from_dict({**d, "loss": {**d["loss"], "remat": choice}}), make_mesh(""), tmp_path)
        batch = trainer.put_batch(next(data.Batches(run.task.train_rows, 8, 0)), run.batch_sh)
        state = run.init_state()
        grads[choice] = jax.grad(lambda p: run.task.objective(p, state["consts"], run.task.frozen, batch)[0])(
            state["params"]
        )
    for x, y in zip(jax.tree.leaves(grads["full"]), jax.tree.leaves(grads[remat])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_resume_after_a_kill_reaches_the_uninterrupted_result(tmp_path, trace_file):
    """Run A saves at step 3 and runs to 5, and its step-5 checkpoint is lost (a kill before it
    was written); `--resume` to 10 then equals run B, 10 steps in one go."""
    base = draft_config(tmp_path / "a", trace_file, optim={"total_steps": 10}, run={"save_every": 3, "log_every": 1})
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(base))
    assert train_main(["--config", str(path), "--steps", "5"]) == 0
    ckpts = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.name.isdigit()) == ["3", "5"]
    import shutil

    shutil.rmtree(ckpts / "5")
    assert train_main(["--config", str(path), "--resume"]) == 0
    assert train_main(["--config", str(path), "--out", str(tmp_path / "b")]) == 0
    (_, a), (_, b) = load_checkpoint(tmp_path / "a" / "final"), load_checkpoint(tmp_path / "b" / "final")
    for (path_a, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path_a))
    la, lb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["step"] for r in la] == list(range(1, 11))  # steps 4, 5 of the killed run replaced
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-6)


def test_lm_mode_learns_the_demo_text(tmp_path):
    d = {
        "mode": "lm",
        "model": dict(TINY),
        "data": {"train": "demo:64:0", "eval": "demo:16:1", "tokenizer": "demo", "seq_len": 128, "batch_size": 8,
                 "eval_batches": 1},
        "optim": {"lr": 1e-2, "warmup_steps": 5, "total_steps": 40, "weight_decay": 0.0},
        "run": {"out": str(tmp_path / "lm"), "log_every": 10, "eval_every": 40, "save_every": 1000},
    }
    final = trainer.train(C.from_dict(d), log=quiet)
    cfg, _ = load_checkpoint(final)
    assert cfg == ModelConfig(**TINY)
    tok = Tokenizer(final)  # the demo tokenizer, exported along
    rows = data.pack_documents(data.lm_documents("demo:16:1", tok), 128, tok.eos_ids[0])
    counts = np.bincount(rows["tokens"][rows["loss_mask"]])
    p = counts[counts > 0] / counts.sum()
    unigram = -(p * np.log(p)).sum()  # the loss of a model that ignores the context (~3.2)
    train_log, eval_log = metrics(tmp_path / "lm"), metrics(tmp_path / "lm", "eval")
    assert train_log[0]["loss"] > unigram  # starts near uniform (log 116 = 4.75)
    assert eval_log[-1]["loss"] < unigram - 0.6


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    cfg = C.load(ROOT / "configs" / name)
    assert cfg.mode in C.MODES


BAD_CONFIGS = [
    ({"optim": {"lrr": 1}}, "unknown key optim.lrr"),
    ({"optim": {"lr": -1}}, "optim.lr: must be > 0"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected float"),
    ({"mode": "rl"}, "mode: must be one of draft, lm"),
    ({"mesh": "data=2,model=4"}, "config mesh: mesh spec"),
    ({"loss": {"step_decay": 1.5}}, "loss.step_decay: must be in (0, 1]"),
    ({"model": {"hidden_size": 32}}, "model: missing vocab_size"),
    ({"target": "x", "model": dict(TINY)}, "draft mode needs a target checkpoint or a random target"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIGS)
def test_bad_config_is_a_one_line_error_with_status_2(tmp_path, capsys, change, message, trace_file):
    d = draft_config(tmp_path / "run", trace_file)
    d.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    assert train_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config") and message in err and err.count("\n") == 1


def test_cli_exits_2_with_one_line_on_a_bad_override(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "specexit_jax.train", "--config", str(ROOT / "configs" / "tiny_draft.yaml"),
         "--set", "data.batch_size=0"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: config data.batch_size: must be >= 1, got 0\n"


def test_missing_trace_file_is_a_one_line_error(tmp_path, capsys, trace_file):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(draft_config(tmp_path / "run", tmp_path / "nope.jsonl")))
    assert train_main(["--config", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.jsonl'}: no such file\n"
