"""How well each exit signal tells a safe step boundary from an unsafe one, on the demo.

    python tools/exit_auroc.py [--limit 150] [--seed 0] [--temperature 1.0]

Decodes held-out demo problems with `specexit` and exits switched off (recording the draft's
signals), probes every thinking step boundary with the target (force `</think>`, grade the
answer), and prints AUROCs for two labels: `probe` (the forced answer there is right, the
confidence head's training label) and `safe` (it is right there and at every later boundary:
exiting is harmless). Scores per boundary: the draft's confidence from the feature that produced
the boundary token and from the one that read it, and the target's lowest probability of any
thinking token so far (at the sampling temperature; what the surprise veto reads).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from specexit_jax.checkpoint import load_checkpoint
from specexit_jax.demo import demo_checkpoints
from specexit_jax.engine import generate
from specexit_jax.eval import harness as H
from specexit_jax.exit import ExitConfig
from specexit_jax.model import target_logits
from specexit_jax.tokenizer import Tokenizer


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def token_probs(target, prompt: list[int], tokens: list[int], temperature: float) -> np.ndarray:
    """The target's probability of each generated token, at the sampling temperature."""
    cfg, tp = target
    seq = prompt + tokens
    logits = target_logits(tp, cfg, jnp.asarray([seq]))[0, len(prompt) - 1 : len(seq) - 1]
    logp = jax.nn.log_softmax(logits / temperature, axis=-1)
    return np.exp(np.asarray(logp)[np.arange(len(tokens)), tokens])


def boundary_rows(args) -> dict[str, np.ndarray]:
    """Per thinking step boundary: the scores and the two labels."""
    tpath, dpath = demo_checkpoints()
    target, draft, tok = load_checkpoint(tpath), load_checkpoint(dpath), Tokenizer(tpath)
    problems = H.demo_problems(tok, args.limit, args.seed)
    never = ExitConfig(confidence=1.0, think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                       step_split_ids=tok.step_split_ids, record_signals=True)
    records = []
    for i, p in enumerate(problems):
        res = generate(target, draft, [p.prompt], max_new_tokens=512, mode="specexit", exit=never,
                       eos_ids=tuple(tok.eos_ids), temperature=args.temperature, seed=args.seed + i)
        toks, st = res.tokens[0], res.stats[0]
        records.append({"tokens": toks, "think_tokens": st["think_tokens"], "correct": p.grade(tok.decode(toks)),
                        "conf": np.asarray(st["signals"]["raw"])[:, 0]})
    oracle = H.oracle_exits(problems, records, target, tok.decode, think_end_id=tok.think_end_id,
                            step_split_ids=tok.step_split_ids, eos_ids=tok.eos_ids)
    rows = {k: [] for k in ("conf_producer", "conf_reader", "min_target_p", "probe", "safe")}
    for p, r, o in zip(problems, records, oracle):
        toks = r["tokens"]
        end = toks.index(tok.think_end_id) if tok.think_end_id in toks else len(toks)
        bounds = [b for b in range(end) if toks[b] in tok.step_split_ids]
        lowest = np.minimum.accumulate(token_probs(target, p.prompt, toks, args.temperature))
        for k, b in enumerate(bounds):
            rows["conf_producer"].append(r["conf"][b])  # signals are credited to the token produced
            rows["conf_reader"].append(r["conf"][min(b + 1, len(toks) - 1)])
            rows["min_target_p"].append(lowest[b])
            rows["probe"].append(bool(o["probes"][k]))
            rows["safe"].append(bool(r["correct"] and all(o["probes"][k:])))
    return {k: np.asarray(v) for k, v in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)
    R = boundary_rows(args)
    scores = ("conf_producer", "conf_reader", "min_target_p")
    subsets = {
        "all boundaries": np.ones_like(R["safe"]),
        "confident (reader > 0.5)": R["conf_reader"] > 0.5,
        "not vetoed (min target p >= 0.2)": R["min_target_p"] >= 0.2,
    }
    print(f"{len(R['safe'])} boundaries; safe {R['safe'].mean():.3f}")
    for name, m in subsets.items():
        for label in ("probe", "safe"):
            cells = "  ".join(f"{s} {auroc(R[s][m], R[label][m]):.3f}" for s in scores)
            print(f"{name:<34} n={int(m.sum()):<5} label {label:<5} AUROC  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
