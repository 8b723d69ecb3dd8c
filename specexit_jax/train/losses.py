"""Losses and metrics: the draft's unrolled token loss plus its signal losses, and a plain LM loss.

Shapes: `B` rows, `T` positions, `V` target vocab, `Vd` draft vocab, `Ht`/`Hd` hidden sizes.

Token loss ("training-time test", see `ttt.py`). Step `i` output at index `t` predicts `x[t+2+i]`;
its target is the frozen target's distribution at row position `t+1+i` restricted to the draft
vocab: the target's logits gathered at the draft vocab's target ids (`d2t`) and softmaxed, which
is the target's probabilities there renormalised. Soft cross-entropy, averaged over the positions
whose predicted token is a completion token, then summed over steps with weights `decay**i`.

Signal losses, on the raw `fc` outputs `r` at the thinking positions (`labels.py`):

    confidence  BCE(sigmoid(r0), confidence label 0/1)
    progress    BCE(sigmoid(r1), t/T): a soft label, minimised at sigmoid(r1) = t/T and bounded
                like the confidence term (an MSE on a sigmoid has vanishing gradients near 0 and 1)
    remain      MSE(r2, log(remain)). Inference reads remain = exp(r2) in tokens, and inside
                thinking remain = T - t >= 1, so log(remain) is finite and exp(r2) estimates the
                remaining tokens themselves (regressing log(remain + 1) would make exp(r2) read
                one token high).

Metrics (all scalars): `loss`, `token_loss`, per step `loss_step{i}` and `top1_step{i}` (the
draft's argmax, as a target id, equals the target's argmax over the full vocab: the greedy
acceptance of that step when earlier steps were right), `{confidence,progress,remain}_loss` and
`_mae` (remain MAE in tokens). Confidence AUROC is computed on the host by `auroc`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax.config import ModelConfig
from specexit_jax.train.ttt import rematerialize, shift_left, unroll


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Unrolled steps, their decay, the weight of each term, and what the backward pass recomputes
    (`ttt.rematerialize`: "full" least memory, "dots" or "none" faster when memory allows)."""

    unroll: int = 7
    step_decay: float = 0.8
    token: float = 1.0
    confidence: float = 0.5
    progress: float = 0.5
    remain: float = 0.1
    remat: str = "full"


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def target_view(target_logits: jax.Array, draft_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Target logits `[B,T,V]` -> its distribution over the draft vocab `[B,T,Vd]` (renormalised)
    and its full-vocab argmax `[B,T]`."""
    probs = jax.nn.softmax(jnp.take(target_logits, draft_ids, axis=-1).astype(jnp.float32), axis=-1)
    return probs, jnp.argmax(target_logits, axis=-1).astype(jnp.int32)


def token_losses(dp, dcfg, outs, target_probs, target_top1, loss_mask, cfg: LossConfig):
    """Weighted soft cross-entropy of the unrolled outputs `outs` (each `[B,T,Hd]`)."""

    def step_terms(dp, h, probs, top1, mask):
        logits = D.logits(dp, dcfg, h)
        ce = -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
        hit = D.to_target_ids(dp, jnp.argmax(logits, axis=-1).astype(jnp.int32)) == top1
        return _masked_mean(ce, mask), _masked_mean(hit.astype(jnp.float32), mask)

    step_terms = rematerialize(step_terms, cfg.remat)  # "full": no [B,T,Vd] tensor kept
    total, metrics = 0.0, {}
    for i, h in enumerate(outs):
        loss, top1 = step_terms(
            dp, h, shift_left(target_probs, 1 + i), shift_left(target_top1, 1 + i), shift_left(loss_mask, 2 + i)
        )
        total = total + cfg.step_decay**i * loss
        metrics[f"loss_step{i}"], metrics[f"top1_step{i}"] = loss, top1
    metrics["token_loss"] = total
    return total, metrics


def signal_losses(raw: jax.Array, batch: dict, cfg: LossConfig):
    """The three signal terms on raw outputs `raw [B,T,3]` against the row labels in `batch`."""
    m = batch["signal_mask"]
    remain = jnp.maximum(batch["remain"], 1.0)
    terms = {
        "confidence": optax.sigmoid_binary_cross_entropy(raw[..., 0], batch["confidence"]),
        "progress": optax.sigmoid_binary_cross_entropy(raw[..., 1], batch["progress"]),
        "remain": jnp.square(raw[..., 2] - jnp.log(remain)),
    }
    errors = {
        "confidence": jnp.abs(jax.nn.sigmoid(raw[..., 0]) - batch["confidence"]),
        "progress": jnp.abs(jax.nn.sigmoid(raw[..., 1]) - batch["progress"]),
        "remain": jnp.abs(jnp.exp(raw[..., 2]) - remain),
    }
    total, metrics = 0.0, {}
    for name, term in terms.items():
        metrics[f"{name}_loss"] = _masked_mean(term, m)
        metrics[f"{name}_mae"] = _masked_mean(errors[name], m)
        total = total + getattr(cfg, name) * metrics[f"{name}_loss"]
    return total, metrics


def draft_loss(dp, dcfg: D.DraftConfig, embed, aux, target_logits, batch: dict, cfg: LossConfig):
    """Total draft loss and its metrics.

    `aux [B,T,3Ht]` and `target_logits [B,T,V]` come from the frozen target over
    `batch["tokens"] [B,T]`; `batch` holds the row fields of `labels.trace_row`.
    """
    hidden0, raw = D.project_raw(dp, dcfg, aux)
    outs = unroll(dp, dcfg, embed, batch["tokens"], hidden0, cfg.unroll, cfg.remat)
    draft_ids = D.to_target_ids(dp, jnp.arange(dcfg.draft_vocab_size))
    probs, top1 = target_view(target_logits, draft_ids)
    tok_loss, metrics = token_losses(dp, dcfg, outs, probs, top1, batch["loss_mask"], cfg)
    loss = cfg.token * tok_loss
    if raw is not None:
        sig_loss, sig_metrics = signal_losses(raw, batch, cfg)
        loss = loss + sig_loss
        metrics.update(sig_metrics)
    metrics["loss"] = loss
    return loss, metrics


def lm_loss(params, cfg: ModelConfig, tokens: jax.Array, loss_mask: jax.Array):
    """Next-token cross-entropy of a target over `tokens [B,T]`, on the tokens where `loss_mask`.

    Metrics: `loss`, `accuracy` (greedy next-token), `perplexity` (exp of the loss).
    """
    B, T = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    logits = M.forward(params, cfg, tokens, positions)[0][:, :-1]
    labels, mask = tokens[:, 1:], loss_mask[:, 1:]
    loss = _masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)
    acc = _masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)
    return loss, {"loss": loss, "accuracy": acc, "perplexity": jnp.exp(loss)}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count one half); NaN when
    only one class is present."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel() > 0.5
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each tie group
    rank_sum = mean_rank[inverse][labels].sum()
    return float((rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0))


__all__ = ["LossConfig", "auroc", "draft_loss", "lm_loss", "signal_losses", "target_view", "token_losses"]
