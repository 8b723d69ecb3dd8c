"""Hugging Face safetensors -> our checkpoint (targets and EAGLE-3 drafts), and targets back.

    python -m specexit_jax.convert --hf-dir DIR --out CKPT [--dtype bfloat16] [--overwrite]

Tensors are mapped by explicit name tables (HF name -> our leaf, layout). HF linear weights are
`[out, in]`; ours are `[in, out]` with attention heads split out:

    same    HF shape == ours                    norms, embeddings, d2t
    flat    HF [n*D]        -> ours [n,D]        q/k/v biases
    linear  HF [n*D, in]    -> ours [in,n,D]     q/k/v, and any plain [out,in] -> [in,out]
    heads   HF [out, N*D]   -> ours [N,D,out]    o_proj

A folder holds a target (Qwen3, Qwen2, Llama; `config.json` read by `model_config_from_hf`) or a
public EAGLE-3 draft (recognised by `draft_vocab_size` in `config.json`). Tensors are read one at
a time from `model.safetensors` or the shards of `model.safetensors.index.json`, so the peak memory
stays near the model's size. Tensors the table does not name (e.g. rotary `inv_freq`, `t2d`) are
ignored; every leaf of our params must be found, with the shape the config implies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from safetensors import safe_open
from safetensors.flax import save_file

from specexit_jax.checkpoint import (
    TOKENIZER_FILES,
    atomic_dir,
    leaf_path,
    load_checkpoint,
    param_shapes,
    save_checkpoint,
)
from specexit_jax.config import ModelConfig, rope_params, model_config_from_hf, read_json
from specexit_jax.draft import DraftConfig

DTYPES = ("bfloat16", "float32", "float16")

# layout -> (HF shape from our shape, HF -> ours, ours -> HF)
_LAYOUTS = {
    "same": (lambda s: s, lambda x, s: x, lambda y: y),
    "flat": (lambda s: (math.prod(s),), lambda x, s: x.reshape(s), lambda y: y.reshape(-1)),
    "linear": (
        lambda s: (math.prod(s[1:]), s[0]),
        lambda x, s: x.T.reshape(s),
        lambda y: y.reshape(y.shape[0], -1).T,
    ),
    "heads": (
        lambda s: (s[-1], math.prod(s[:-1])),
        lambda x, s: x.T.reshape(s),
        lambda y: y.reshape(-1, y.shape[-1]).T,
    ),
}

# Target: HF name -> (our leaf, layout). Entries whose leaf the config lacks (biases, q/k norms,
# an untied head) are skipped. `{i}` is the layer index.
_TARGET = {
    "model.embed_tokens.weight": ("embed", "same"),
    "model.norm.weight": ("norm", "same"),
    "lm_head.weight": ("lm_head", "linear"),
}
_TARGET_LAYER = {
    "model.layers.{i}.input_layernorm.weight": ("attn_norm", "same"),
    "model.layers.{i}.self_attn.q_proj.weight": ("wq", "linear"),
    "model.layers.{i}.self_attn.k_proj.weight": ("wk", "linear"),
    "model.layers.{i}.self_attn.v_proj.weight": ("wv", "linear"),
    "model.layers.{i}.self_attn.o_proj.weight": ("wo", "heads"),
    "model.layers.{i}.self_attn.q_proj.bias": ("bq", "flat"),
    "model.layers.{i}.self_attn.k_proj.bias": ("bk", "flat"),
    "model.layers.{i}.self_attn.v_proj.bias": ("bv", "flat"),
    "model.layers.{i}.self_attn.o_proj.bias": ("bo", "same"),
    "model.layers.{i}.self_attn.q_norm.weight": ("q_norm", "same"),
    "model.layers.{i}.self_attn.k_norm.weight": ("k_norm", "same"),
    "model.layers.{i}.post_attention_layernorm.weight": ("mlp_norm", "same"),
    "model.layers.{i}.mlp.gate_proj.weight": ("w_gate", "linear"),
    "model.layers.{i}.mlp.up_proj.weight": ("w_up", "linear"),
    "model.layers.{i}.mlp.down_proj.weight": ("w_down", "linear"),
}

# Public EAGLE-3 draft layout. `d2t` holds int64 offsets (target id = draft id + d2t[draft id]).
_DRAFT = {
    "fc.weight": ("fc", "linear"),
    "midlayer.hidden_norm.weight": ("hidden_norm", "same"),
    "midlayer.input_layernorm.weight": ("input_norm", "same"),
    "midlayer.post_attention_layernorm.weight": ("post_norm", "same"),
    "midlayer.self_attn.q_proj.weight": ("wq", "linear"),
    "midlayer.self_attn.k_proj.weight": ("wk", "linear"),
    "midlayer.self_attn.v_proj.weight": ("wv", "linear"),
    "midlayer.self_attn.o_proj.weight": ("wo", "heads"),
    "midlayer.mlp.gate_proj.weight": ("w_gate", "linear"),
    "midlayer.mlp.up_proj.weight": ("w_up", "linear"),
    "midlayer.mlp.down_proj.weight": ("w_down", "linear"),
    "norm.weight": ("norm", "same"),
    "lm_head.weight": ("lm_head", "linear"),
    "d2t": ("d2t", "same"),
    "embed_tokens.weight": ("embed", "same"),
}

_HF_ARCH = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}


def _target_table(cfg: ModelConfig) -> dict[str, tuple[tuple, str]]:
    """HF name -> (our leaf path, layout) for the leaves `cfg` has."""
    table = {name: ((leaf,), layout) for name, (leaf, layout) in _TARGET.items()}
    for i in range(cfg.num_layers):
        for name, (leaf, layout) in _TARGET_LAYER.items():
            table[name.format(i=i)] = (("layers", i, leaf), layout)
    return table


def _draft_table() -> dict[str, tuple[tuple, str]]:
    return {name: ((leaf,), layout) for name, (leaf, layout) in _DRAFT.items()}


class _Tensors:
    """The tensors of a HF folder: names, shapes and which file holds each; read one at a time."""

    def __init__(self, hf_dir: Path):
        self.dir = hf_dir
        single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no weight_map")
            files = [hf_dir / f for f in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"{index} names shard {f.name}, which is missing")
        elif single.is_file():
            files = [single]
        else:
            raise FileNotFoundError(
                f"{hf_dir}: no model.safetensors or model.safetensors.index.json"
            )
        self.file: dict[str, Path] = {}
        self.shape: dict[str, tuple[int, ...]] = {}
        for f in files:
            with _open(f) as st:
                for name in st.keys():
                    self.file[name] = f
                    self.shape[name] = tuple(st.get_slice(name).get_shape())

    def read(self, name: str) -> jax.Array:
        """One tensor, as a JAX array on the default device (bf16 included)."""
        with _open(self.file[name]) as st:
            try:
                return st.get_tensor(name)
            except Exception as e:  # noqa: BLE001 - a bad file is a user error
                reason = _first_line(e)
                raise ValueError(f"{self.file[name]}: cannot read {name} ({reason})") from None


def _open(f: Path):
    try:
        return safe_open(str(f), framework="flax")
    except Exception as e:  # noqa: BLE001 - a bad file is a user error
        raise ValueError(f"{f}: not a valid safetensors file ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _draft_config(hf: dict[str, Any], tensors: _Tensors, dtype: str) -> DraftConfig:
    """A `DraftConfig` from an EAGLE-3 `config.json`; signal rows and embeddings from tensors."""
    H, N = hf["hidden_size"], hf["num_attention_heads"]
    if "fc.weight" not in tensors.shape:
        raise ValueError("tensor fc.weight is missing")
    num_signals = tensors.shape["fc.weight"][0] - H
    if num_signals not in (0, 3):
        raise ValueError(
            f"fc.weight has {tensors.shape['fc.weight'][0]} output rows; expected hidden_size={H} "
            f"(plain EAGLE-3) or {H + 3} (with exit signals)"
        )
    theta, scaling = rope_params(hf)
    return DraftConfig(
        hidden_size=H,
        intermediate_size=hf["intermediate_size"],
        num_heads=N,
        num_kv_heads=hf.get("num_key_value_heads") or N,
        head_dim=hf.get("head_dim") or H // N,
        target_hidden_size=hf.get("target_hidden_size") or H,
        vocab_size=hf["vocab_size"],
        draft_vocab_size=hf["draft_vocab_size"],
        num_signals=num_signals,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        has_embed="embed_tokens.weight" in tensors.shape,
        dtype=dtype,
    )


def _read_params(tensors: _Tensors, table: dict, shapes: dict) -> dict:
    """Fill the params tree `shapes` from the tensors named in `table`, checking every shape."""
    source = {path: (name, layout) for name, (path, layout) in table.items()}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    plan = []
    for keypath, sd in leaves:
        path = leaf_path(keypath)
        name, layout = source[path]
        hf_shape = _LAYOUTS[layout][0](sd.shape)
        if name not in tensors.shape:
            if name != "d2t":
                raise ValueError(f"{tensors.dir}: missing tensor {name}")
        elif tensors.shape[name] != hf_shape:
            raise ValueError(
                f"{tensors.dir}: tensor {name} has shape {list(tensors.shape[name])}, "
                f"config.json implies {list(hf_shape)}"
            )
        plan.append((name, layout, sd))
    out = []
    with jax.default_device(jax.devices("cpu")[0]):  # host memory, whatever the accelerator
        for name, layout, sd in plan:
            if name not in tensors.shape:  # a draft without d2t: offsets 0 (the target's vocab)
                out.append(jnp.zeros(sd.shape, sd.dtype))
            else:
                out.append(_LAYOUTS[layout][1](tensors.read(name), sd.shape).astype(sd.dtype))
    return jax.tree.unflatten(treedef, out)


def convert_hf(
    hf_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16", overwrite: bool = False
) -> str:
    """Convert a HF target or EAGLE-3 draft folder into our checkpoint; returns its kind."""
    hf_dir = Path(hf_dir)
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir}: no such folder")
    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (--overwrite replaces it)")
    hf = read_json(hf_dir / "config.json")
    if not isinstance(hf, dict):
        raise ValueError(f"{hf_dir / 'config.json'}: expected a JSON object")
    tensors = _Tensors(hf_dir)
    kind = "draft" if "draft_vocab_size" in hf else "target"
    try:
        if kind == "draft":
            cfg = _draft_config(hf, tensors, dtype)
            table = _draft_table()
        else:
            cfg = model_config_from_hf(hf, dtype)
            table = _target_table(cfg)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{hf_dir / 'config.json'}: missing or invalid field ({e})") from None
    except ValueError as e:
        raise ValueError(f"{hf_dir / 'config.json'}: {e}") from None
    params = _read_params(tensors, table, param_shapes(cfg))
    extra = [hf_dir / f for f in TOKENIZER_FILES if (hf_dir / f).is_file()]
    save_checkpoint(out_dir, cfg, params, extra, overwrite=overwrite)
    return kind


def export_hf(ckpt_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> None:
    """Write a target checkpoint back as a HF folder (`config.json` + `model.safetensors`)."""
    cfg, params = load_checkpoint(ckpt_dir)
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"{ckpt_dir}: only target checkpoints can be exported")
    with atomic_dir(out_dir, overwrite) as tmp:
        save_file(hf_tensors(cfg, params), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg), indent=2) + "\n")
        for f in TOKENIZER_FILES:
            if (Path(ckpt_dir) / f).is_file():
                (tmp / f).write_bytes((Path(ckpt_dir) / f).read_bytes())


def hf_tensors(cfg: ModelConfig, params: dict) -> dict[str, jax.Array]:
    """Target params as HF-named tensors in HF layout (the name table read backwards)."""
    by_path = {leaf_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    return {
        name: _LAYOUTS[layout][2](by_path[path])
        for name, (path, layout) in _target_table(cfg).items()
        if path in by_path
    }


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """A HF `config.json` for `cfg` (top-level `rope_theta` / `rope_scaling` form)."""
    hf = {
        "architectures": [_HF_ARCH[cfg.arch]],
        "model_type": cfg.arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None
        if cfg.rope_scaling is None
        else {"rope_type": "llama3", **dataclasses.asdict(cfg.rope_scaling)},
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": cfg.dtype,
    }
    if cfg.arch != "qwen2":  # Qwen2's q/k/v biases are implied by the architecture
        hf["attention_bias"] = cfg.o_bias
    return hf


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(
        prog="python -m specexit_jax.convert",
        description="Convert a Hugging Face target (Qwen3, Qwen2, Llama) or EAGLE-3 draft folder "
        "into a specexit_jax checkpoint.",
    )
    p.add_argument("--hf-dir", required=True, help="HF folder: config.json + safetensors")
    p.add_argument("--out", required=True, help="checkpoint folder to create")
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="params dtype")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    try:
        kind = convert_hf(args.hf_dir, args.out, args.dtype, args.overwrite)
    except (OSError, ValueError) as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {kind} checkpoint {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
