"""HF <-> our checkpoints: exact tensors, sharded files, dtypes, drafts and user errors."""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from safetensors.numpy import load_file, save_file

import hf_models
from specexit_jax import draft
from specexit_jax.checkpoint import load_checkpoint, save_checkpoint
from specexit_jax.config import model_config_from_hf, read_json
from specexit_jax.convert import convert_hf, export_hf


def hf_tensors(hf_dir) -> dict[str, np.ndarray]:
    return load_file(hf_dir / "model.safetensors")


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(hf_models.FAMILIES))
def test_round_trip_hf_ours_hf_is_exact(tiny_model, family, tmp_path):
    m = tiny_model(family)
    export_hf(m.ckpt_dir, tmp_path / "hf")
    original, exported = hf_tensors(m.hf_dir), hf_tensors(tmp_path / "hf")
    assert sorted(exported) == sorted(original)
    for name, x in original.items():
        assert exported[name].dtype == x.dtype, name
        np.testing.assert_array_equal(exported[name], x, err_msg=name)
    assert model_config_from_hf(read_json(tmp_path / "hf" / "config.json")) == m.cfg


def test_exported_folder_loads_in_transformers_with_the_same_logits(tiny_model, tmp_path):
    m = tiny_model("llama3")
    export_hf(m.ckpt_dir, tmp_path / "hf")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    tokens = torch.arange(200).reshape(1, 200) % m.cfg.vocab_size
    with torch.no_grad():
        np.testing.assert_array_equal(
            back(tokens).logits.numpy(), m.torch_model(tokens).logits.numpy()
        )


def test_sharded_checkpoint_converts_like_unsharded(tiny_model, tmp_path):
    m = tiny_model("qwen3_untied")
    m.torch_model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 2
    cfg, params = hf_models.convert_and_load(tmp_path / "hf", tmp_path / "ckpt")
    assert cfg == m.cfg
    assert_trees_equal(params, m.params)


def test_bfloat16_conversion_rounds_each_weight_once(tiny_model, tmp_path):
    m = tiny_model("qwen2")
    cfg, params = hf_models.convert_and_load(m.hf_dir, tmp_path / "ckpt", dtype="bfloat16")
    assert cfg.dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    assert_trees_equal(params, jax.tree.map(lambda x: x.astype(jnp.bfloat16), m.params))


def test_bfloat16_safetensors_are_read_exactly(tiny_model, tmp_path):
    m = tiny_model("qwen3_tied")
    hf_dir = shutil.copytree(m.hf_dir, tmp_path / "hf")
    tensors = safetensors.torch.load_file(hf_dir / "model.safetensors")
    safetensors.torch.save_file(
        {k: v.bfloat16() for k, v in tensors.items()},
        hf_dir / "model.safetensors",
        {"format": "pt"},
    )
    _, params = hf_models.convert_and_load(hf_dir, tmp_path / "ckpt", dtype="float32")
    assert_trees_equal(
        params, jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), m.params)
    )


# --- the command line and its errors ------------------------------------------------------------


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "specexit_jax.convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help():
    r = run_cli("--help")
    assert r.returncode == 0
    assert "--hf-dir" in r.stdout and "--dtype" in r.stdout and "--overwrite" in r.stdout


def test_cli_converts_and_refuses_to_overwrite(tiny_model, tmp_path):
    m = tiny_model("qwen3_tied")
    r = run_cli("--hf-dir", m.hf_dir, "--out", tmp_path / "ckpt", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    _, params = load_checkpoint(tmp_path / "ckpt")
    assert_trees_equal(params, m.params)
    r = run_cli("--hf-dir", m.hf_dir, "--out", tmp_path / "ckpt")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "already exists" in r.stderr
    r = run_cli("--hf-dir", m.hf_dir, "--out", tmp_path / "ckpt", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(tmp_path / "ckpt")[0].dtype == "bfloat16"


def _drop_file(name):
    return lambda d: (d / name).unlink()


def _edit_config(drop=(), **changes):
    def edit(d):
        cfg = {k: v for k, v in read_json(d / "config.json").items() if k not in drop}
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))

    return edit


def _edit_tensors(fn):
    def edit(d):
        tensors = load_file(d / "model.safetensors")
        fn(tensors)
        save_file(tensors, str(d / "model.safetensors"))

    return edit


def _truncate(d):
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _drop_a_shard(d):
    weight_map = read_json(d / "model.safetensors.index.json")["weight_map"]
    (d / weight_map["model.layers.1.mlp.up_proj.weight"]).unlink()


BAD_INPUTS = {
    "missing dir": (None, "no such folder"),
    "missing config.json": (_drop_file("config.json"), "config.json: no such file"),
    "corrupt config.json": (
        lambda d: (d / "config.json").write_text('{"hidden_size": 6'),
        "not valid JSON",
    ),
    "no safetensors": (_drop_file("model.safetensors"), "no model.safetensors"),
    "truncated safetensors": (_truncate, "not a valid safetensors file"),
    "index names a missing shard": (_drop_a_shard, "which is missing"),
    "unknown architecture": (
        _edit_config(architectures=["GPT2LMHeadModel"]),
        "unsupported architecture",
    ),
    "missing config field": (
        _edit_config(drop=["hidden_size"]),
        "missing or invalid field ('hidden_size')",
    ),
    "wrong tensor shape": (
        _edit_tensors(
            lambda t: t.update(
                {"model.layers.2.mlp.gate_proj.weight": np.zeros((7, 64), np.float32)}
            )
        ),
        "gate_proj.weight has shape [7, 64], config.json implies [128, 64]",
    ),
    "missing tensor": (
        _edit_tensors(lambda t: t.pop("model.layers.3.self_attn.k_norm.weight")),
        "missing tensor",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_input_is_one_line_error_and_no_output(tiny_model, tmp_path, case):
    m = tiny_model("qwen3_untied")
    break_it, message = BAD_INPUTS[case]
    hf_dir = tmp_path / "hf"
    if break_it is not None:
        if case == "index names a missing shard":
            m.torch_model.save_pretrained(hf_dir, max_shard_size="20KB")
        else:
            shutil.copytree(m.hf_dir, hf_dir)
        break_it(hf_dir)
    r = run_cli("--hf-dir", hf_dir, "--out", tmp_path / "ckpt")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "ckpt").exists()
    assert [p.name for p in tmp_path.iterdir()] in ([], ["hf"])  # no temporary folder left either


# --- checkpoints --------------------------------------------------------------------------------


def test_load_checkpoint_restores_into_the_given_sharding(tiny_model):
    m = tiny_model("qwen2")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("tensor",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    seen = []

    def by_leaf(path, sd):
        seen.append(path)
        return sharding

    for shardings in (jax.tree.map(lambda _: sharding, m.params), by_leaf):
        _, params = load_checkpoint(m.ckpt_dir, shardings=shardings)
        assert all(x.sharding == sharding for x in jax.tree.leaves(params))
        assert_trees_equal(params, m.params)
    assert ("layers", 0, "wq") in seen and ("embed",) in seen


def test_load_checkpoint_casts_to_dtype(tiny_model):
    m = tiny_model("qwen3_tied")
    cfg, params = load_checkpoint(m.ckpt_dir, dtype=jnp.bfloat16)
    assert cfg.dtype == "bfloat16" and params["embed"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(params["embed"]), np.asarray(m.params["embed"].astype(jnp.bfloat16))
    )


def test_failed_save_leaves_nothing_and_existing_checkpoints_are_kept(tiny_model, tmp_path):
    m = tiny_model("qwen3_tied")
    with pytest.raises(ValueError, match="Unsupported type"):  # Orbax fails mid-save
        save_checkpoint(tmp_path / "ckpt", m.cfg, {"embed": object()})
    assert list(tmp_path.iterdir()) == []
    save_checkpoint(tmp_path / "ckpt", m.cfg, m.params)
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "ckpt", m.cfg, m.params)
    doubled = jax.tree.map(lambda x: 2 * x, m.params)
    save_checkpoint(tmp_path / "ckpt", m.cfg, doubled, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert_trees_equal(load_checkpoint(tmp_path / "ckpt")[1], doubled)


def test_load_checkpoint_errors_name_the_path(tiny_model, tmp_path):
    m = tiny_model("qwen3_tied")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nothing")
    ckpt = shutil.copytree(m.ckpt_dir, tmp_path / "ckpt")
    meta = read_json(ckpt / "config.json")
    (ckpt / "config.json").write_text(json.dumps(dict(meta, kind="encoder")))
    with pytest.raises(ValueError, match="unknown kind 'encoder'"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text(
        json.dumps(dict(meta, config=dict(meta["config"], num_layers=9)))
    )
    with pytest.raises(ValueError, match=r"params: cannot restore params"):
        load_checkpoint(ckpt)


# --- EAGLE-3 drafts -----------------------------------------------------------------------------


def np_rms(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def np_rope(x, theta):
    """Half-split RoPE of `x [T,n,D]` at positions 0..T-1."""
    T, _, D = x.shape
    ang = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def np_eagle3_layer(t, tokens, hidden, embed, heads, kv_heads, eps=1e-5, theta=10000.0):
    """The public EAGLE-3 midlayer from raw HF tensors (`[out, in]` linears), one row, causal."""
    T, Hd = hidden.shape
    D = Hd // heads
    lin = lambda x, name: x @ t[name].T.astype(np.float64)  # noqa: E731
    x = np.concatenate(
        [
            np_rms(embed[tokens], t["midlayer.input_layernorm.weight"], eps),
            np_rms(hidden, t["midlayer.hidden_norm.weight"], eps),
        ],
        -1,
    )
    q = np_rope(lin(x, "midlayer.self_attn.q_proj.weight").reshape(T, heads, D), theta)
    k = np_rope(lin(x, "midlayer.self_attn.k_proj.weight").reshape(T, kv_heads, D), theta)
    v = lin(x, "midlayer.self_attn.v_proj.weight").reshape(T, kv_heads, D)
    k, v = np.repeat(k, heads // kv_heads, 1), np.repeat(v, heads // kv_heads, 1)
    s = np.einsum("tnd,snd->nts", q, k) / np.sqrt(D) + np.triu(np.full((T, T), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("nts,snd->tnd", p, v).reshape(T, heads * D)
    h = hidden + lin(o, "midlayer.self_attn.o_proj.weight")
    y = np_rms(h, t["midlayer.post_attention_layernorm.weight"], eps)
    g, u = lin(y, "midlayer.mlp.gate_proj.weight"), lin(y, "midlayer.mlp.up_proj.weight")
    h = h + lin(g / (1 + np.exp(-g)) * u, "midlayer.mlp.down_proj.weight")
    return h, lin(np_rms(h, t["norm.weight"], eps), "lm_head.weight")


@pytest.mark.usefixtures("fp32_matmuls")
@pytest.mark.parametrize("num_signals,with_embed", [(3, False), (0, True)])
def test_eagle3_draft_conversion_matches_the_public_layout(tmp_path, num_signals, with_embed):
    t = hf_models.save_eagle3_draft(tmp_path / "hf", num_signals=num_signals, with_embed=with_embed)
    assert convert_hf(tmp_path / "hf", tmp_path / "ckpt", dtype="float32") == "draft"
    dcfg, dp = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(dcfg, draft.DraftConfig)
    assert (dcfg.num_signals, dcfg.has_embed) == (num_signals, with_embed)
    assert (dcfg.hidden_size, dcfg.target_hidden_size, dcfg.vocab_size, dcfg.draft_vocab_size) == (
        64,
        96,
        400,
        120,
    )

    rng = np.random.default_rng(3)
    T = 24
    aux = rng.standard_normal((1, T, 3 * 96)).astype(np.float32)
    h, signals = draft.project(dp, dcfg, jnp.asarray(aux))
    raw = aux[0].astype(np.float64) @ t["fc.weight"].T
    np.testing.assert_allclose(np.asarray(h[0]), raw[:, :64], atol=1e-5)
    if num_signals:
        expected = np.stack(
            [1 / (1 + np.exp(-raw[:, 64])), 1 / (1 + np.exp(-raw[:, 65])), np.exp(raw[:, 66])], -1
        )
        np.testing.assert_allclose(np.asarray(signals[0]), expected, rtol=1e-5)
    else:
        assert signals is None

    tokens = rng.integers(0, 400, (1, T)).astype(np.int32)
    target_embed = (0.08 * rng.standard_normal((400, 64))).astype(np.float32)
    embed = t["embed_tokens.weight"] if with_embed else target_embed
    positions = jnp.arange(T, dtype=jnp.int32)[None]
    out, _ = draft.step(dp, dcfg, jnp.asarray(target_embed), jnp.asarray(tokens), h, positions)
    ref_h, ref_logits = np_eagle3_layer(
        t, tokens[0], np.asarray(h[0], np.float64), embed.astype(np.float64), 4, 2
    )
    np.testing.assert_allclose(np.asarray(out[0]), ref_h, atol=1e-4)
    np.testing.assert_allclose(np.asarray(draft.logits(dp, dcfg, out)[0]), ref_logits, atol=1e-4)

    assert dp["d2t"].dtype == jnp.int32
    ids = np.arange(120)
    np.testing.assert_array_equal(
        np.asarray(draft.to_target_ids(dp, jnp.asarray(ids))), ids + t["d2t"]
    )
    assert np.flatnonzero(t["t2d"]).tolist() == (ids + t["d2t"]).tolist()


def test_eagle3_draft_without_d2t_maps_ids_to_themselves(tmp_path):
    hf_models.save_eagle3_draft(tmp_path / "hf", draft_vocab=400, with_d2t=False)
    convert_hf(tmp_path / "hf", tmp_path / "ckpt", dtype="bfloat16")
    dcfg, dp = load_checkpoint(tmp_path / "ckpt")
    assert dcfg.dtype == "bfloat16" and dp["fc"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(dp["d2t"]), np.zeros(400, np.int32))


def test_eagle3_draft_with_a_bad_signal_count_is_refused(tmp_path):
    hf_models.save_eagle3_draft(tmp_path / "hf", num_signals=2)
    r = run_cli("--hf-dir", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "fc.weight has 66 output rows" in r.stderr
    assert not (tmp_path / "ckpt").exists()
