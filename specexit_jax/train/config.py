"""The training config: YAML -> frozen dataclasses, checked with one-line errors.

Schema (every key optional unless marked; unknown keys are errors):

    mode: draft              # draft (EAGLE-3 draft + signal heads) | lm (a target from scratch)
    seed: 0                  # init and data order
    mesh: ""                 # "data=2,fsdp=2,tensor=2"; unnamed axes 1, one may be -1; "" = all on data
    init_scale: 0.02         # std of fresh weights (lm: the model; draft: a random target from `model`)
    compute_dtype: float32   # matmul dtype of the trained model: float32 | bfloat16 (mixed precision:
                             # params and optimizer state stay float32, the loss is float32)
    target: CKPT             # draft mode: the frozen target checkpoint (or give `model`)
    model: {ModelConfig}     # lm: the model to train; draft: a random target (tests, smoke runs);
                             # the fields of config.ModelConfig (vocab_size, hidden_size, ... required)
    draft:
      vocab_size: null       # draft vocab Vd: the Vd most frequent completion tokens (null: target's)
      num_signals: 3         # 3: SpecExit signal rows in fc; 0: a plain EAGLE-3 draft
      init: null             # a draft checkpoint to start from (e.g. a converted EAGLE-3 draft)
    data:
      train: FILE            # required: trace JSONL (draft) / LM JSONL, or demo:N[:SEED]
      eval: null             # same kinds; evaluated every run.eval_every steps
      tokenizer: null        # folder (copied into the export), or "demo" (the demo tokenizer)
      seq_len: 512
      batch_size: 8          # global rows per step
      eval_batches: 8
    optim:                   # AdamW + linear warmup + cosine decay to 10% + global-norm clipping
      lr: 1.0e-4
      warmup_steps: 100
      total_steps: 1000
      clip_norm: 1.0
      weight_decay: 0.01     # not on rank-1 leaves (norms)
    loss: {unroll: 7, step_decay: 0.8, token: 1.0, confidence: 0.5, progress: 0.5, remain: 0.1,
           remat: full}      # what the backward pass recomputes: full (least memory) | dots | none
    run:
      out: runs/train        # checkpoints/, metrics.jsonl, config.yaml, final/ (the export)
      save_every: 500
      keep: 3
      log_every: 10
      eval_every: 500

`apply_overrides` takes `key.sub=value` strings (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from specexit_jax.config import ModelConfig, RopeScaling
from specexit_jax.sharding import parse_mesh_spec
from specexit_jax.train.losses import LossConfig
from specexit_jax.train.ttt import REMAT

MODES = ("draft", "lm")
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DraftSpec:
    """The draft to train (its layer shapes are one layer of the target)."""

    vocab_size: int | None = None
    num_signals: int = 3
    init: str | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Data sources, tokenizer and batch shape."""

    train: str = ""
    eval: str | None = None
    tokenizer: str | None = None
    seq_len: int = 512
    batch_size: int = 8
    eval_batches: int = 8


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup + cosine decay and gradient clipping."""

    lr: float = 1e-4
    warmup_steps: int = 100
    total_steps: int = 1000
    clip_norm: float = 1.0
    weight_decay: float = 0.01


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where outputs go and how often to log, evaluate and checkpoint."""

    out: str = "runs/train"
    save_every: int = 500
    keep: int = 3
    log_every: int = 10
    eval_every: int = 500


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The whole training config (schema in the module docstring)."""

    mode: str = "draft"
    seed: int = 0
    mesh: str = ""
    init_scale: float = 0.02
    compute_dtype: str = "float32"
    target: str | None = None
    model: ModelConfig | None = None
    draft: DraftSpec = DraftSpec()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Value rules: (section.key, predicate, what it must be).
_RULES = [
    ("mode", lambda v: v in MODES, f"one of {', '.join(MODES)}"),
    ("init_scale", lambda v: v > 0, "> 0"),
    ("compute_dtype", lambda v: v in COMPUTE_DTYPES, f"one of {', '.join(COMPUTE_DTYPES)}"),
    ("draft.vocab_size", lambda v: v is None or v >= 1, ">= 1"),
    ("draft.num_signals", lambda v: v in (0, 3), "0 or 3"),
    ("data.seq_len", lambda v: v >= 4, ">= 4"),
    ("data.batch_size", lambda v: v >= 1, ">= 1"),
    ("data.eval_batches", lambda v: v >= 1, ">= 1"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("optim.total_steps", lambda v: v >= 1, ">= 1"),
    ("optim.clip_norm", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("loss.unroll", lambda v: v >= 1, ">= 1"),
    ("loss.step_decay", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("loss.token", lambda v: v >= 0, ">= 0"),
    ("loss.confidence", lambda v: v >= 0, ">= 0"),
    ("loss.progress", lambda v: v >= 0, ">= 0"),
    ("loss.remain", lambda v: v >= 0, ">= 0"),
    ("loss.remat", lambda v: v in REMAT, f"one of {', '.join(REMAT)}"),
    ("run.save_every", lambda v: v >= 1, ">= 1"),
    ("run.keep", lambda v: v >= 1, ">= 1"),
    ("run.log_every", lambda v: v >= 1, ">= 1"),
    ("run.eval_every", lambda v: v >= 1, ">= 1"),
]


def _check_type(where: str, value, hint) -> Any:
    """`value` as the annotated type (ints are accepted for floats), or a one-line error."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for t in options:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t in (int, str, bool) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
    raise ValueError(f"config {where}: expected {names}, got {value!r}")


def _build(cls, d, where: str):
    """Build dataclass `cls` from mapping `d`, rejecting unknown keys and wrong types."""
    if not isinstance(d, dict):
        raise ValueError(f"config {where or 'file'}: expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in known:
            raise ValueError(f"config: unknown key {where + '.' if where else ''}{key} (known: {', '.join(known)})")
    kw = {}
    for key, value in d.items():
        name = f"{where}.{key}" if where else key
        hint = hints[key]
        if isinstance(hint, types.UnionType) and ModelConfig in typing.get_args(hint):
            kw[key] = None if value is None else _model(value, name)
        elif dataclasses.is_dataclass(hint):
            kw[key] = _build(hint, value, name)
        else:
            kw[key] = _check_type(name, value, hint)
    try:
        return cls(**kw)
    except ValueError as e:
        raise ValueError(f"config {where or 'file'}: {e}") from None


def _model(d, where: str) -> ModelConfig:
    """A `ModelConfig` from its fields (`vocab_size`, `hidden_size`, ... as in config.py)."""
    required = [f.name for f in dataclasses.fields(ModelConfig) if f.default is dataclasses.MISSING]
    missing = [k for k in required if not isinstance(d, dict) or k not in d]
    if missing:
        raise ValueError(f"config {where}: missing {', '.join(missing)}")
    d = dict(d)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = dataclasses.asdict(_build(RopeScaling, d["rope_scaling"], f"{where}.rope_scaling"))
    rope = d.pop("rope_scaling", None)
    cfg = _build(ModelConfig, d, where)
    return dataclasses.replace(cfg, rope_scaling=RopeScaling(**rope) if rope else None)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_mesh(spec: str) -> None:
    """Syntax of a mesh spec (the device count is checked when the mesh is made)."""
    sizes = [p.partition("=")[2] for p in spec.replace(" ", "").split(",") if p]
    n = 1
    for v in sizes:
        n *= int(v) if v.isdigit() and int(v) > 0 else 1
    try:
        parse_mesh_spec(spec, n)
    except ValueError as e:
        raise ValueError(f"config mesh: {e}") from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Value checks that need more than a type; returns `cfg`."""
    for key, ok, what in _RULES:
        if not ok(_get(cfg, key)):
            raise ValueError(f"config {key}: must be {what}, got {_get(cfg, key)!r}")
    if not cfg.data.train:
        raise ValueError("config data.train: required (a JSONL file or demo:N[:SEED]; or pass --traces)")
    _check_mesh(cfg.mesh)
    if cfg.mode == "lm":
        if cfg.model is None:
            raise ValueError("config model: required in lm mode (the model to train)")
        if cfg.target is not None:
            raise ValueError("config target: lm mode trains a model from scratch; remove target")
    elif (cfg.target is None) == (cfg.model is None):
        raise ValueError("config target: draft mode needs a target checkpoint or a random target in model (one)")
    return cfg


def from_dict(d: dict) -> TrainConfig:
    """A checked `TrainConfig` from a parsed YAML mapping."""
    return validate(_build(TrainConfig, d, ""))


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return d or {}


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Set `section.key=value` entries (values parsed as YAML) in a copy of `d`."""
    if not isinstance(d, dict):
        raise ValueError(f"config file: expected a mapping, got {type(d).__name__}")
    d = yaml.safe_load(yaml.safe_dump(d))  # deep copy of plain data
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        node = d
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: value is not valid YAML") from None
    return d


def load(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read, override and check a training config."""
    return from_dict(apply_overrides(read_yaml(path), list(overrides)))


__all__ = [
    "DataConfig",
    "DraftSpec",
    "LossConfig",
    "MODES",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load",
    "read_yaml",
]
