"""The KV cache: preallocated per-layer buffers; which slots are valid is the caller's length.

A cache holds no lengths. Slot `t` of a row holds position `t`; the decode state keeps each row's
length, attention masks by position, and rollback after a rejected draft is only a smaller length
(stale slots are overwritten by the next write). The buffers are donated through `jax.jit`, so
writes happen in place.

Keys are `[B,Kv,S,D]` and values `[B,Kv,D,S]`: each attention product then contracts over the
buffer's last, contiguous axis (`q @ K^T` over `D`, `P @ V` over `S`), so neither reads the cache
through a transposed copy. Both keep `B, Kv` first, which is how a mesh splits them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """Per-layer keys `[B,Kv,S,D]` and values `[B,Kv,D,S]` (heads first, read in place)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @classmethod
    def init(cls, num_layers: int, B: int, S: int, Kv: int, D: int, dtype) -> "KVCache":
        k = tuple(jnp.zeros((B, Kv, S, D), dtype) for _ in range(num_layers))
        v = tuple(jnp.zeros((B, Kv, D, S), dtype) for _ in range(num_layers))
        return cls(k=k, v=v)
