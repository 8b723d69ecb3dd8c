"""One device mesh with axes ("data", "fsdp", "tensor") and the rules that place params on it.

    mesh = make_mesh("data=2,fsdp=2,tensor=2")      # or make_mesh() = every device on "data"
    shardings = param_shardings(mesh, params)        # a NamedSharding per leaf (arrays or shapes)
    batch = batch_sharding(mesh)                     # [B, ...] split over ("data", "fsdp")

Placement is two small tables. `PARAM_AXES` names the logical axes of every leaf of the target and
draft layouts (model.py, draft.py docstrings) by its last path component; `MESH_AXES` maps
logical axes to mesh axes:

    vocab, heads, kv_heads, mlp  -> "tensor"     (columns of the big matmuls)
    embed                        -> "fsdp"       (the other big dim: ZeRO-3 style)
    head_dim, signal columns     -> replicated
    batch                        -> ("data", "fsdp")

Leaves of rank 1 (norms, biases, `d2t`) are small and replicated. A dimension that does not divide
its mesh axis is a one-line `ValueError` naming the param, the dim and the axis. The same rules
serve training and sharded decoding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")

# Last path component -> logical axis per dim (None: replicated). Target and draft share names.
PARAM_AXES: dict[str, tuple[str | None, ...]] = {
    "embed": ("vocab", "embed"),  # [V,H]
    "lm_head": ("embed", "vocab"),  # [H,V] / draft [Hd,Vd]
    "wq": ("embed", "heads", "head_dim"),  # [H,N,D] / draft [2Hd,N,D]
    "wk": ("embed", "kv_heads", "head_dim"),  # [H,Kv,D]
    "wv": ("embed", "kv_heads", "head_dim"),
    "wo": ("heads", "head_dim", "embed"),  # [N,D,H]
    "bq": ("heads", "head_dim"),  # [N,D]
    "bk": ("kv_heads", "head_dim"),  # [Kv,D]
    "bv": ("kv_heads", "head_dim"),
    "w_gate": ("embed", "mlp"),  # [H,F]
    "w_up": ("embed", "mlp"),
    "w_down": ("mlp", "embed"),  # [F,H]
    "fc": ("embed", "signals"),  # draft [3Ht, Hd+S]: the output dim carries the 3 signal columns
}

MESH_AXES: dict[str, str | tuple[str, ...] | None] = {
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "embed": "fsdp",
    "head_dim": None,
    "signals": None,
    "batch": ("data", "fsdp"),
}

# What to do when a logical axis does not divide its mesh axis.
_ADVICE = {
    "kv_heads": "KV heads must divide the tensor axis: replicate KV heads or pick another tensor size",
    "heads": "query heads must divide the tensor axis: pick another tensor size",
    "vocab": "the vocab must divide the tensor axis: pad the vocab or pick another tensor size",
    "mlp": "the MLP width must divide the tensor axis: pick another tensor size",
    "embed": "the hidden size must divide the fsdp axis: pick another fsdp size",
}


def parse_mesh_spec(spec: str | None, n_devices: int) -> dict[str, int]:
    """`"data=2,fsdp=-1"` -> `{"data": 2, "fsdp": n/2, "tensor": 1}`.

    Unnamed axes are 1; one axis may be -1 (the devices left over). An empty spec puts every device
    on "data". The sizes must multiply to `n_devices`.
    """
    sizes: dict[str, int] = {}
    for part in (spec or "").replace(" ", "").split(","):
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq or name not in AXES:
            raise ValueError(f"mesh spec {spec!r}: expected NAME=SIZE with NAME in {', '.join(AXES)}")
        if name in sizes:
            raise ValueError(f"mesh spec {spec!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh spec {spec!r}: size of {name!r} is not an integer") from None
        if sizes[name] < 1 and sizes[name] != -1:
            raise ValueError(f"mesh spec {spec!r}: size of {name!r} must be >= 1 or -1")
    if not sizes:
        sizes = {"data": -1}
    rest = [a for a, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError(f"mesh spec {spec!r}: only one axis may be -1")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if rest:
        if n_devices % fixed:
            raise ValueError(f"mesh spec {spec!r}: {n_devices} devices do not split into groups of {fixed}")
        sizes[rest[0]] = n_devices // fixed
    shape = {a: sizes.get(a, 1) for a in AXES}
    if int(np.prod(list(shape.values()))) != n_devices:
        desc = ",".join(f"{a}={s}" for a, s in shape.items())
        raise ValueError(f"mesh {desc} needs {int(np.prod(list(shape.values())))} devices, have {n_devices}")
    return shape


def make_mesh(spec: str | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with axes `AXES`, sized by `parse_mesh_spec`."""
    devices = list(jax.devices() if devices is None else devices)
    shape = parse_mesh_spec(spec, len(devices))
    return jax.make_mesh(
        tuple(shape[a] for a in AXES), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices
    )


def maybe_initialize_distributed(environ=os.environ) -> bool:
    """Start `jax.distributed` when the environment describes several processes; True if it did."""
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(environ["JAX_NUM_PROCESSES"]),
            process_id=int(environ["JAX_PROCESS_ID"]),
        )
        return True
    counts = (environ.get("SLURM_NTASKS"), environ.get("OMPI_COMM_WORLD_SIZE"))
    if any(c and int(c) > 1 for c in counts) or "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()
        return True
    return False


def _path_name(path) -> str:
    """A key path as `a.b.0.c` (for messages)."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def leaf_spec(name: str, shape: Sequence[int], mesh_shape: Mapping[str, int]) -> PartitionSpec:
    """The `PartitionSpec` of a leaf called `name` (its dotted path) with `shape`.

    Rank-1 leaves are replicated; other leaves follow `PARAM_AXES` of the last path component.
    """
    if len(shape) <= 1:
        return PartitionSpec()
    last = name.rsplit(".", 1)[-1]
    if last not in PARAM_AXES:
        raise ValueError(f"param {name}: no sharding rule for {last!r} (known: {', '.join(PARAM_AXES)})")
    logical = PARAM_AXES[last]
    if len(logical) != len(shape):
        raise ValueError(f"param {name}: shape {tuple(shape)} does not match its axes {logical}")
    out = []
    for dim, (size, axis) in enumerate(zip(shape, logical)):
        mesh_axis = MESH_AXES[axis] if axis else None
        n = int(np.prod([mesh_shape[a] for a in _as_tuple(mesh_axis)]))
        if size % n:
            advice = _ADVICE.get(axis, "pick another mesh size")
            raise ValueError(
                f"param {name}: dim {dim} ({axis} = {size}) does not divide over mesh axis "
                f"{mesh_axis!r} (size {n}); {advice}"
            )
        out.append(mesh_axis if n > 1 else None)
    return PartitionSpec(*out)


def _as_tuple(axis) -> tuple[str, ...]:
    return () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)


def param_specs(mesh_shape: Mapping[str, int], params_or_shapes) -> dict:
    """A `PartitionSpec` per leaf of a params pytree (arrays or `ShapeDtypeStruct`s) for a mesh of
    `mesh_shape` (e.g. `{"data": 1, "fsdp": 8, "tensor": 1}`); no devices needed."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: leaf_spec(_path_name(p), x.shape, mesh_shape), params_or_shapes
    )


def param_shardings(mesh: Mesh, params_or_shapes) -> dict:
    """A `NamedSharding` per leaf of a params pytree (arrays or `ShapeDtypeStruct`s)."""
    specs = param_specs(dict(mesh.shape), params_or_shapes)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays `[B, ...]`: rows split over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(MESH_AXES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (scalars, metrics, small state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch dim is split: `B` must be a multiple of this."""
    return int(np.prod([mesh.shape[a] for a in _as_tuple(MESH_AXES["batch"])]))


__all__ = [
    "AXES",
    "MESH_AXES",
    "PARAM_AXES",
    "batch_sharding",
    "batch_shards",
    "leaf_spec",
    "make_mesh",
    "maybe_initialize_distributed",
    "param_shardings",
    "param_specs",
    "parse_mesh_spec",
    "replicated",
]
