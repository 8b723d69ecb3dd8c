"""The KV cache: preallocated per-layer buffers; which slots are valid is the caller's length.

A cache holds no lengths. Slot `t` of a row holds position `t`; the decode state keeps each row's
length, attention masks by position, and rollback after a rejected draft is only a smaller length
(stale slots are overwritten by the next write). The buffers are donated through `jax.jit`, so
writes happen in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """Per-layer keys and values, each `[B,Kv,S,D]` (heads ahead of slots, read in place)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @classmethod
    def init(cls, num_layers: int, B: int, S: int, Kv: int, D: int, dtype) -> "KVCache":
        z = lambda: jnp.zeros((B, Kv, S, D), dtype)  # noqa: E731
        return cls(k=tuple(z() for _ in range(num_layers)), v=tuple(z() for _ in range(num_layers)))
