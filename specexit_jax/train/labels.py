"""Training labels of one trace, as numpy arrays (no JAX).

A trace (schema in `specexit_jax.traces`) is a prompt of `P` tokens and a completion whose first
`T = think_end` tokens are the thinking section. Per completion index `t` in `0 .. T-1`:

    progress   = t / T
    remain     = T - t            thinking tokens still to come, counting token t (so >= 1)
    confidence = the probe result of the latest boundary b <= t  (0 before the first boundary)

The answer part (`t >= T`, `</think>` included) and traces whose thinking never ended
(`think_end = -1`) carry no signal labels.

Alignment with the draft. The draft's signals come from `fc(aux_p)`, the target feature at row
position `p`, which has read tokens `0..p` and predicts token `p+1`. At inference the signals of a
feature are credited to the token it predicts (`generate` averages the signals of the features
that produced the newly accepted tokens), so row position `p` carries the labels of completion
index `t = p + 1 - P`. Example: prompt `[a, b, c]` (P = 3), completion of 8 tokens, `think_end
= 5`, boundaries `[1, 3]`, confident `[0, 1]`:

    row position p     2    3    4    5    6    7 ...
    completion t       0    1    2    3    4    (5 = </think>: no label)
    progress          0.0  0.2  0.4  0.6  0.8
    remain             5    4    3    2    1
    confidence         0    0    0    1    1

Token loss mask: `loss_mask[j]` is 1 where row token `j` is a completion token (answer included);
prompt and padding are 0. The loss shifts it to the positions that predict token `j`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROW_FIELDS = ("tokens", "loss_mask", "signal_mask", "confidence", "progress", "remain")


def completion_signals(
    n: int, think_end: int, boundaries: Sequence[int], confident: Sequence[int]
) -> dict[str, np.ndarray]:
    """Signal labels per completion index `t` in `[0, n)`: `mask` (inside thinking), `progress`,
    `remain` (in tokens) and `confidence`, each `[n]`."""
    t = np.arange(n)
    T = think_end
    mask = (t < T) if T >= 0 else np.zeros(n, bool)
    progress = np.where(mask, t / max(T, 1), 0.0).astype(np.float32)
    remain = np.where(mask, T - t, 0).astype(np.float32)
    # Index of the latest boundary <= t (-1 before the first one).
    latest = np.searchsorted(np.asarray(boundaries, np.int64), t, side="right") - 1
    probe = np.concatenate([[0.0], np.asarray(confident, np.float32)])
    confidence = np.where(mask, probe[latest + 1], 0.0).astype(np.float32)
    return {"mask": mask, "progress": progress, "remain": remain, "confidence": confidence}


def trace_row(trace: dict, seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """One training row `[S]` (S = `seq_len`) of a valid trace: prompt + completion, cut at `S`.

    Returns `ROW_FIELDS`: `tokens` int32 (padded with `pad_id`), `loss_mask` and `signal_mask`
    bool, and float32 `confidence`, `progress`, `remain` at the signal positions (0 elsewhere).
    """
    prompt, completion = trace["prompt"], trace["completion"]
    P, C, S = len(prompt), len(completion), seq_len
    n = min(P + C, S)
    tokens = np.full(S, pad_id, np.int32)
    tokens[:n] = np.asarray(list(prompt) + list(completion), np.int32)[:n]
    j = np.arange(S)
    row = {"tokens": tokens, "loss_mask": (j >= P) & (j < n)}
    sig = completion_signals(C, trace["think_end"], trace["boundaries"], trace["confident"])
    t = j + 1 - P  # completion index whose label row position j carries
    inside = (t >= 0) & (t < C) & (j < n)
    tc = np.clip(t, 0, C - 1)
    row["signal_mask"] = inside & sig["mask"][tc]
    for name in ("confidence", "progress", "remain"):
        row[name] = np.where(row["signal_mask"], sig[name][tc], 0.0).astype(np.float32)
    return row


__all__ = ["ROW_FIELDS", "completion_signals", "trace_row"]
