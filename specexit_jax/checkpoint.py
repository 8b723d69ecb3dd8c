"""Our checkpoint format: a folder with our config as JSON and the params as an Orbax checkpoint.

    CKPT/config.json    {"kind": "target" | "draft", "config": {...}, "format_version": 1}
    CKPT/params/        Orbax checkpoint of the params pytree (layouts in model.py / draft.py)
    CKPT/tokenizer.json ...   tokenizer files copied along from the source model, when present

A checkpoint is written into a temporary folder beside its destination and renamed into place
only when complete, so a failed save never leaves a half-written checkpoint behind. Loading
restores against the abstract tree of `param_shapes(cfg)`, straight into the requested shardings,
so a model too large for one device never has to exist on one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from specexit_jax import draft, model
from specexit_jax.config import ModelConfig, read_json
from specexit_jax.draft import DraftConfig

FORMAT_VERSION = 1

# Files a tokenizer (and generation defaults) may need; copied along when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)

_KINDS = {"target": (ModelConfig, model.param_shapes), "draft": (DraftConfig, draft.param_shapes)}

Config = Union[ModelConfig, DraftConfig]
LeafPath = tuple[Union[str, int], ...]
Shardings = Union[Any, Callable[[LeafPath, jax.ShapeDtypeStruct], jax.sharding.Sharding]]


def kind_of(cfg: Config) -> str:
    """ "target" or "draft"."""
    return "draft" if isinstance(cfg, DraftConfig) else "target"


def param_shapes(cfg: Config) -> dict:
    """The abstract params tree of a target or draft config."""
    return _KINDS[kind_of(cfg)][1](cfg)


def leaf_path(keypath) -> LeafPath:
    """A JAX key path as plain names and indices, e.g. `("layers", 3, "wq")`."""
    return tuple(getattr(k, "key", getattr(k, "idx", None)) for k in keypath)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder `path.tmp-XXXX` that replaces `path` only if the block succeeds.

    An existing `path` is an error unless `overwrite`. Written by one process.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (overwrite=True replaces it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f"{path.name}.old-{tmp.name[len(path.name) + 5 :]}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    path: str | Path,
    cfg: Config,
    params: dict,
    extra_files: Sequence[str | Path] = (),
    *,
    overwrite: bool = False,
) -> None:
    """Write `params` (target or draft, per the type of `cfg`) and copy `extra_files` along."""
    meta = {"kind": kind_of(cfg), "config": cfg.to_dict(), "format_version": FORMAT_VERSION}
    with atomic_dir(path, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        with _checkpointer() as ckptr:
            ckptr.save(tmp / "params", args=ocp.args.StandardSave(params))


def load_config(path: str | Path) -> Config:
    """The `ModelConfig` or `DraftConfig` of a checkpoint, without reading its params."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    meta = read_json(path / "config.json")
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path / 'config.json'}: not a specexit_jax checkpoint config "
            f"(format_version {FORMAT_VERSION} expected)"
        )
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ValueError(
            f"{path / 'config.json'}: unknown kind {kind!r} (expected target or draft)"
        )
    try:
        return _KINDS[kind][0].from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'}: invalid {kind} config ({e})") from None


def load_checkpoint(
    path: str | Path, shardings: Shardings | None = None, dtype: Any = None
) -> tuple[Config, dict]:
    """Read a checkpoint written by `save_checkpoint` (or `convert`).

    `shardings`: a pytree of `jax.sharding.Sharding` matching the params, or a callable
    `(leaf_path, ShapeDtypeStruct) -> Sharding`; each array is restored straight into its
    sharding. Default: everything on the first local device. `dtype` casts the floating params
    (and the returned config says so); default: the config's dtype, whatever dtype the params
    are stored in (the bundled demo stores bfloat16 and computes in float32).
    """
    path = Path(path).absolute()
    cfg = load_config(path)
    if dtype is not None:
        cfg = dataclasses.replace(cfg, dtype=jnp.dtype(dtype).name)
    abstract = _with_shardings(param_shapes(cfg), shardings)
    try:
        with _checkpointer() as ckptr:
            params = ckptr.restore(path / "params", args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001 - any restore failure is a bad checkpoint for the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ValueError(f"{path / 'params'}: cannot restore params ({reason})") from None
    return cfg, params


def _checkpointer() -> ocp.Checkpointer:
    """A synchronous Orbax checkpointer: a save is complete (or has failed) when it returns."""
    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def _with_shardings(abstract: dict, shardings: Shardings | None) -> dict:
    """Attach a sharding to every `ShapeDtypeStruct` of `abstract`."""
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = lambda path, sd: device  # noqa: E731
    attach = lambda sd, sh: jax.ShapeDtypeStruct(sd.shape, sd.dtype, sharding=sh)  # noqa: E731
    if callable(shardings):
        return jax.tree_util.tree_map_with_path(
            lambda p, sd: attach(sd, shardings(leaf_path(p), sd)), abstract
        )
    return jax.tree.map(attach, abstract, shardings)


__all__ = [
    "TOKENIZER_FILES",
    "atomic_dir",
    "kind_of",
    "leaf_path",
    "load_checkpoint",
    "load_config",
    "param_shapes",
    "save_checkpoint",
]
