"""Training rows and a batch iterator whose position can be saved and restored.

Draft mode: one trace per row (`labels.trace_row`), padded or cut to `S = seq_len`: the frozen
target runs on each row from position 0, so rows never mix traces. LM mode (training a target from
scratch): documents are concatenated, each ending with EOS, and cut into rows of `S` tokens (the
usual GPT recipe); the tail of the last row is padding with `loss_mask = 0`.

Sources: a JSONL file, or `demo:N[:SEED]` for `N` problems of the demo task (draft mode: the
task's own traces, `traces.demo_traces`; LM mode: prompt + completion text). LM JSONL lines hold
`{"tokens": [ids]}`, `{"text": str}` (needs a tokenizer) or `{"prompt": [ids], "completion": [ids]}`.

Order: epoch `e` visits the rows in `np.random.default_rng([seed, e]).permutation(N)`, in
`N // B` batches (the remainder is dropped). A `Position(epoch, index)` (index = batches taken in
the epoch) fixes everything that comes next, so saving it is saving the data state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from specexit_jax import traces as tr
from specexit_jax.train.labels import ROW_FIELDS, trace_row

Rows = dict  # field -> np.ndarray [N,S]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a batch iterator stands: `index` batches of `epoch` are taken."""

    epoch: int = 0
    index: int = 0


def draft_rows(source: str, seq_len: int, tok=None, pad_id: int = 0) -> Rows:
    """`labels.ROW_FIELDS` for every trace of `source` (a trace JSONL file or `demo:N[:SEED]`),
    each `[N,S]`. The demo source needs the demo tokenizer `tok`."""
    demo = tr.parse_demo_source(source)
    if demo is not None:
        if tok is None:
            raise ValueError(f"data source {source!r} needs a tokenizer (data.tokenizer: demo)")
        traces = tr.demo_traces(*demo, tok)
    else:
        traces = tr.read_traces(source)
    rows = [trace_row(t, seq_len, pad_id) for t in traces]
    return {k: np.stack([r[k] for r in rows]) for k in ROW_FIELDS}


def lm_documents(source: str, tok=None) -> list[list[int]]:
    """Token lists of a LM source: a JSONL file or `demo:N[:SEED]` (needs `tok`)."""
    demo = tr.parse_demo_source(source)
    if demo is not None:
        from specexit_jax.demo import task

        if tok is None:
            raise ValueError(f"data source {source!r} needs a tokenizer (data.tokenizer: demo)")
        return [tok.encode(task.render_prompt(s) + task.render_completion(s)) for s in task.make_dataset(*demo)]

    def check(obj):
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise ValueError("field 'text': expected a string")
            if tok is None:
                raise ValueError("'text' lines need a tokenizer (data.tokenizer)")
            return
        fields = ("tokens",) if "tokens" in obj else ("prompt", "completion")
        for f in fields:
            x = obj.get(f)
            if not isinstance(x, list) or not all(isinstance(t, int) and t >= 0 for t in x):
                raise ValueError(f"field {f!r}: expected token ids (a line holds tokens, text or prompt+completion)")

    docs = []
    for obj in tr.read_jsonl(source, check):
        if "text" in obj:
            docs.append(tok.encode(obj["text"]))
        else:
            docs.append(obj["tokens"] if "tokens" in obj else obj["prompt"] + obj["completion"])
    return docs


def pack_documents(docs: list[list[int]], seq_len: int, eos_id: int | None, pad_id: int = 0) -> Rows:
    """Concatenate documents (EOS appended where missing) into rows of `seq_len` tokens.

    Returns `tokens` int32 `[N,S]` and `loss_mask` bool `[N,S]` (False on the final padding).
    """
    stream: list[int] = []
    for d in docs:
        stream.extend(d)
        if eos_id is not None and (not d or d[-1] != eos_id):
            stream.append(eos_id)
    n_rows = -(-len(stream) // seq_len)
    tokens = np.full(n_rows * seq_len, pad_id, np.int32)
    tokens[: len(stream)] = stream
    mask = np.arange(n_rows * seq_len) < len(stream)
    return {"tokens": tokens.reshape(n_rows, seq_len), "loss_mask": mask.reshape(n_rows, seq_len)}


def completion_token_counts(rows: Rows, vocab_size: int) -> np.ndarray:
    """How often each target id is a completion token (`loss_mask`) in `rows`: `[V]` int64."""
    return np.bincount(rows["tokens"][rows["loss_mask"]], minlength=vocab_size)[:vocab_size]


def draft_vocab_offsets(counts: np.ndarray, draft_vocab_size: int) -> np.ndarray:
    """`d2t` offsets `[Vd]` of the `Vd` most frequent ids (ties: lower id first), sorted by id.

    Draft id `i` stands for target id `i + d2t[i]`, the layout of published EAGLE-3 drafts.
    """
    V, Vd = len(counts), draft_vocab_size
    if not 1 <= Vd <= V:
        raise ValueError(f"draft vocab size {Vd} must be in [1, {V}] (the target vocab)")
    chosen = np.sort(np.argsort(-counts, kind="stable")[:Vd])
    return (chosen - np.arange(Vd)).astype(np.int32)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of `epoch`: a permutation of `n` fixed by `(seed, epoch)`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batches(Iterator):
    """Endless shuffled batches `{field: [B,S]}` of `rows`, resumable from a `Position`."""

    def __init__(self, rows: Rows, batch_size: int, seed: int, position: Position = Position()):
        self.rows, self.batch_size, self.seed, self.position = rows, batch_size, seed, position
        self.n = len(next(iter(rows.values())))
        if self.n < batch_size:
            raise ValueError(f"{self.n} rows cannot fill a batch of {batch_size}")
        self.per_epoch = self.n // batch_size
        self._order = (None, None)  # (epoch, permutation), cached

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, index = self.position.epoch, self.position.index
        if index >= self.per_epoch:
            epoch, index = epoch + 1, 0
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.n, self.seed, epoch))
        take = self._order[1][index * self.batch_size : (index + 1) * self.batch_size]
        self.position = Position(epoch, index + 1)
        return {k: v[take] for k, v in self.rows.items()}


def eval_batches(rows: Rows, batch_size: int, max_batches: int) -> list[dict[str, np.ndarray]]:
    """The first `max_batches` full batches of `rows`, in file order."""
    n = min(len(next(iter(rows.values()))) // batch_size, max_batches)
    if n == 0:
        raise ValueError(f"eval data has fewer rows than one batch of {batch_size}")
    return [{k: v[i * batch_size : (i + 1) * batch_size] for k, v in rows.items()} for i in range(n)]


__all__ = [
    "Batches",
    "Position",
    "completion_token_counts",
    "draft_rows",
    "draft_vocab_offsets",
    "epoch_order",
    "eval_batches",
    "lm_documents",
    "pack_documents",
]
