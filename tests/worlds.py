"""Shared tiny worlds for the decode tests: one model config, a random target and draft, a
"cycle" target with a draft that predicts it exactly, and an independent greedy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax.config import ModelConfig

V = 64
CFG = ModelConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=16, qk_norm=True)
DCFG = D.DraftConfig.for_target(CFG)
T_REF = 128


def random_world():
    """A random target (peaked enough for clear greedy choices) and a random draft."""
    return M.init_params(CFG, jax.random.key(0), scale=0.4), D.init_params(DCFG, jax.random.key(1), scale=0.3)


def cycle_world(seed: int = 0, wrong_positions=()):
    """A target whose greedy next token is `f(last)` (one cycle through the vocab: every layer's
    `wo` and `w_down` are zero, the embeddings one-hot, the head a lookup table), and a draft
    that predicts it exactly: `fc` maps the feature of token `t` to a point on a circle at
    angle `pos(f(t))`, the draft's MLP rotates by one step, its head reads the angle, and `d2t`
    maps cycle positions back to token ids. Cycle positions in `wrong_positions` are mapped to a
    wrong id, so drafts of those tokens are rejected."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(V)  # position on the cycle -> token id
    pos = np.argsort(perm)
    f = np.empty(V, np.int64)
    f[perm] = perm[(np.arange(V) + 1) % V]
    H = CFG.hidden_size
    tp = jax.tree.map(np.array, M.init_params(CFG, jax.random.key(seed), scale=0.4))
    tp["embed"] = np.eye(V, H, dtype=np.float32) * 2.0
    for lp in tp["layers"]:
        lp["wo"][:] = 0.0
        lp["w_down"][:] = 0.0
    lm = 0.1 * rng.standard_normal((H, V)).astype(np.float32)
    lm[np.arange(V), f] = 3.0
    tp["lm_head"] = lm
    dp = jax.tree.map(np.array, D.init_params(DCFG, jax.random.key(seed + 1), scale=0.3))
    Hd, F = DCFG.hidden_size, DCFG.intermediate_size
    step = 2 * np.pi / V
    circle = lambda a: np.stack([np.cos(step * a), np.sin(step * a), np.ones(np.shape(a))], -1)
    fc = np.zeros((3 * H, Hd + 3), np.float32)
    fc[np.arange(V), :3] = circle(pos + 1) / 2.0  # feature of token t -> position of f(t)
    dp["fc"] = fc
    dp["wo"][:] = 0.0
    rms2 = 2.0 / Hd  # mean square of the draft hidden (|h|^2 = 2)
    gate = 40.0 * np.sqrt(rms2)  # silu(40) = 40 to fp32 precision: the MLP is linear in h
    dp["w_gate"] = np.zeros((Hd, F), np.float32)
    dp["w_gate"][2, :2] = gate
    dp["w_up"] = np.zeros((Hd, F), np.float32)
    dp["w_up"][0, 0] = dp["w_up"][1, 1] = 1.0
    rot = np.array([[np.cos(step), -np.sin(step)], [np.sin(step), np.cos(step)]])
    dp["w_down"] = np.zeros((F, Hd), np.float32)
    dp["w_down"][:2, :2] = ((rot - np.eye(2)) * rms2 / gate).T
    dp["lm_head"] = np.zeros((Hd, V), np.float32)
    dp["lm_head"][0] = 10 * np.cos(step * np.arange(V))
    dp["lm_head"][1] = 10 * np.sin(step * np.arange(V))
    target_ids = perm.copy()
    for a in wrong_positions:
        target_ids[a] = perm[(a + 7) % V]
    dp["d2t"] = (target_ids - np.arange(V)).astype(np.int32)
    return jax.tree.map(jnp.asarray, tp), jax.tree.map(jnp.asarray, dp), f, perm


def greedy_reference(tp, prompts, n, T=T_REF):
    """Greedy decoding by repeated full (cache-free) target passes over right-padded rows (causal,
    so the padding does not reach the position read); also the smallest gap between the best and
    second-best logit met on the way (how safe an exact comparison is)."""
    B = len(prompts)
    seqs = [list(p) for p in prompts]
    gap = np.inf
    for _ in range(n):
        buf = np.zeros((B, T), np.int32)
        for b, s in enumerate(seqs):
            buf[b, : len(s)] = s
        logits = np.asarray(M.target_logits(tp, CFG, jnp.asarray(buf)))
        for b, s in enumerate(seqs):
            top2 = np.sort(logits[b, len(s) - 1])[-2:]
            gap = min(gap, top2[1] - top2[0])
            s.append(int(logits[b, len(s) - 1].argmax()))
    return [s[len(p):] for s, p in zip(seqs, prompts)], gap
