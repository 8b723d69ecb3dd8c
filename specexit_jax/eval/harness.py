"""Evaluation harness: every decode mode on the same problems, measured in one run.

For each problem and mode (batch 1, so latency is per problem; the modes of one problem run one
after another), record correctness, thinking tokens, total tokens, latency and tokens per round
(tau). Each compiled program is warmed up on an untimed run first, so latencies exclude
compilation; with `repeats > 1` each problem is timed that many times and the fastest run counts
(on a shared machine other work only ever adds time). With `oracle=True`, the AR traces are
probed at every step boundary (force `</think>`, decode the answer greedily, grade it) to find
the oracle exit: the first boundary after which the forced answer is right and never changes.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, Sequence

from specexit_jax.exit import ExitConfig
from specexit_jax.engine import generate, prompt_bucket


@dataclasses.dataclass(frozen=True)
class EvalProblem:
    """A prompt with its grader (`grade(generated_text) -> bool`)."""

    id: str
    prompt: list[int]
    grade: Callable[[str], bool]


def demo_problems(tok, limit: int, seed: int) -> list[EvalProblem]:
    """`limit` held-out problems of the demo task (seeds offset by 10,000, apart from the
    seeds the demo models were trained on), graded by the task's own checker."""
    from specexit_jax.demo import task

    return [
        EvalProblem(f"demo-{i}", tok.encode(task.render_prompt(s)), lambda text, s=s: task.is_correct(s, text))
        for i, s in enumerate(task.make_dataset(limit, seed=10_000 + seed))
    ]


@dataclasses.dataclass(frozen=True)
class ModeSettings:
    """What each mode adds to the common settings."""

    exit: ExitConfig
    budget_tokens: int = 64
    deer_threshold: float = 0.95
    deer_probe_ids: tuple[int, ...] = ()


def _mode_exit(mode: str, s: ModeSettings) -> ExitConfig:
    ex = s.exit
    if mode == "budget":
        return dataclasses.replace(ex, max_think_tokens=s.budget_tokens)
    if mode == "deer":
        return dataclasses.replace(ex, probe_threshold=s.deer_threshold, probe_ids=s.deer_probe_ids)
    return ex


def run_arms(
    arms: dict[str, tuple[str, ModeSettings]],
    problems: Sequence[EvalProblem],
    target,
    draft,
    decode_text: Callable[[list[int]], str],
    *,
    max_new_tokens: int,
    num_draft_tokens: int,
    eos_ids: Sequence[int],
    temperature: float = 0.0,
    seed: int = 0,
    repeats: int = 1,
    progress: Callable | None = None,
) -> dict[str, list[dict]]:
    """Per-problem records of every arm: a name for a mode with its settings (a sweep has many
    arms of one mode).

    Problems run in the outer loop and arms in the inner one, so a slow spell of a shared machine
    falls on every arm alike and the latency ratios between arms stay fair.
    """
    calls = {}
    for name, (mode, settings) in arms.items():
        use_draft = None if mode == "ar" else draft  # baselines get speculation too, when available
        calls[name] = use_draft, dict(
            max_new_tokens=max_new_tokens,
            mode=mode,
            exit=_mode_exit(mode, settings),
            num_draft_tokens=num_draft_tokens,
            eos_ids=tuple(eos_ids),
            temperature=temperature,
        )
    warmed: set[tuple[str, int]] = set()
    records: dict[str, list[dict]] = {name: [] for name in arms}
    for i, p in enumerate(problems):
        bucket = prompt_bucket(len(p.prompt))
        for name, (use_draft, kw) in calls.items():
            if (name, bucket) not in warmed:
                generate(target, use_draft, [p.prompt], seed=seed, **kw)
                warmed.add((name, bucket))
            runs = [generate(target, use_draft, [p.prompt], seed=seed + i, **kw) for _ in range(repeats)]
            res = runs[0]
            toks, st = res.tokens[0], res.stats[0]
            records[name].append(
                {
                    "id": p.id,
                    "correct": bool(p.grade(decode_text(toks))),
                    "think_tokens": st["think_tokens"],
                    "total_tokens": len(toks),
                    "latency_s": min(r.timing["prefill_s"] + r.timing["decode_s"] for r in runs),
                    "rounds": st["rounds"],
                    "exit_reason": st["exit_reason"],
                    "tokens": toks,
                }
            )
            if progress:
                progress()
    return records


def run_modes(modes: Sequence[str], problems, target, draft, decode_text, settings: ModeSettings, **kw):
    """Per-problem records of every mode, all with the same settings (`run_arms`)."""
    return run_arms({mode: (mode, settings) for mode in modes}, problems, target, draft, decode_text, **kw)


def run_mode(mode: str, problems, target, draft, decode_text, settings: ModeSettings, **kw) -> list[dict]:
    """Per-problem records for one mode."""
    return run_modes([mode], problems, target, draft, decode_text, settings, **kw)[mode]


def summarize(records: list[dict]) -> dict:
    """Means over problems; tau = all tokens / all rounds."""
    reasons: dict[str, int] = {}
    for r in records:
        reasons[r["exit_reason"]] = reasons.get(r["exit_reason"], 0) + 1
    return {
        "n": len(records),
        "accuracy": statistics.fmean(r["correct"] for r in records),
        "think_tokens": statistics.fmean(r["think_tokens"] for r in records),
        "total_tokens": statistics.fmean(r["total_tokens"] for r in records),
        "latency_s": statistics.fmean(r["latency_s"] for r in records),
        "tau": sum(r["total_tokens"] for r in records) / max(1, sum(r["rounds"] for r in records)),
        "exit_reasons": reasons,
    }


def add_speedups(modes: dict[str, dict]) -> None:
    """Latency ratios against `ar` and `spec` (where those modes ran)."""
    for base in ("ar", "spec"):
        if base in modes:
            for m in modes.values():
                m[f"speedup_vs_{base}"] = modes[base]["latency_s"] / m["latency_s"]


def oracle_exits(
    problems: Sequence[EvalProblem],
    ar_records: Sequence[dict],
    target,
    decode_text: Callable[[list[int]], str],
    *,
    think_end_id: int,
    step_split_ids: Sequence[int],
    eos_ids: Sequence[int],
    answer_tokens: int = 12,
    batch_size: int = 32,
) -> list[dict]:
    """Probe the AR traces at every thinking step boundary and find the oracle exit.

    Returns per problem: `oracle_think` (thinking tokens when exiting at the oracle boundary,
    or the AR thinking tokens when no boundary qualifies), `first_correct_think` (thinking
    tokens at the first boundary whose forced answer is right), and `probes` (0/1 per boundary).
    """
    jobs = []  # (problem index, boundary index in completion)
    for i, rec in enumerate(ar_records):
        toks = rec["tokens"]
        end = toks.index(think_end_id) if think_end_id in toks else len(toks)
        jobs.extend((i, b) for b in range(end) if toks[b] in step_split_ids)
    verdict: dict[tuple[int, int], bool] = {}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        prompts = [problems[i].prompt + ar_records[i]["tokens"][: b + 1] + [think_end_id] for i, b in chunk]
        res = generate(target, None, prompts, max_new_tokens=answer_tokens, eos_ids=tuple(eos_ids))
        for (i, b), toks in zip(chunk, res.tokens):
            verdict[(i, b)] = bool(problems[i].grade(decode_text([think_end_id] + toks)))
    out = []
    for i, rec in enumerate(ar_records):
        bs = sorted(b for (j, b) in verdict if j == i)
        probes = [verdict[(i, b)] for b in bs]
        oracle = rec["think_tokens"]
        if rec["correct"]:
            for k in range(len(bs) - 1, -1, -1):
                if not probes[k]:
                    break
                oracle = bs[k] + 1
        first = next((b + 1 for b, ok in zip(bs, probes) if ok), rec["think_tokens"])
        out.append({"oracle_think": oracle, "first_correct_think": first, "probes": [int(p) for p in probes]})
    return out


def oracle_summary(ar_records: Sequence[dict], oracle: Sequence[dict], modes: dict[str, dict]) -> dict:
    """Oracle savings, and the share of them each mode captures."""
    ar_think = statistics.fmean(r["think_tokens"] for r in ar_records)
    o_think = statistics.fmean(o["oracle_think"] for o in oracle)
    saving = ar_think - o_think
    first_wrong = [not o["probes"][0] for o in oracle if o["probes"]]
    summary = {
        "ar_think_tokens": ar_think,
        "oracle_think_tokens": o_think,
        "post_answer_fraction": saving / ar_think if ar_think else 0.0,
        "first_boundary_wrong": statistics.fmean(first_wrong) if first_wrong else 0.0,
        "captured": {},
    }
    for name, m in modes.items():
        summary["captured"][name] = (ar_think - m["think_tokens"]) / saving if saving > 0 else 0.0
    return summary
