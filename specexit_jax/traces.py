"""Thinking traces for draft training: the target's own completions, probed at step boundaries.

    python -m specexit_jax.traces --target CKPT --prompts FILE --out FILE.jsonl \\
        [--max-new-tokens N --temperature T --batch-size B --probe-answer-tokens N]

The target writes a completion for each prompt. Inside its thinking section, at every step-boundary
token (the tokenizer's blank-line tokens), we ask offline whether stopping there still answers
correctly: the prefix up to and including the boundary gets `</think>` plus the tokens the chat
template puts between thinking and answer, the target greedily decodes a short answer (batched
with `generate`), and a grader checks it. This moves the probing cost of DEER-like methods from
inference to training.

Prompts (JSONL, one object a line): `{"prompt": [ids]}` or `{"question": str}` (rendered with the
tokenizer's chat template), plus `"answer": str` for grading; or `demo:N[:SEED]` for `N` problems
of the demo task.

Trace schema (JSONL, one object a line; checked by `validate_trace`):

    prompt      [ids]   non-empty
    completion  [ids]   non-empty, the target's output (EOS included when it stopped)
    think_end   int     index of `</think>` in completion, or -1 when thinking never ended
    boundaries  [int]   increasing indices of step-boundary tokens, inside the thinking section
    confident   [0|1]   per boundary: forcing `</think>` right after it answers correctly
    answer      str     optional: the reference answer
    correct     0|1     optional: whether the full completion answers correctly
    question    str     optional: the question text

Other keys are allowed and ignored. Traces whose thinking never ended are kept (the draft still
learns their tokens) but not probed: their boundaries and confident lists are empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

OPTIONAL_STR = ("answer", "question")
GRADERS = ("auto", "demo", "exact", "gsm8k", "math500", "aime")

Grader = Callable[[dict, str], bool]
"""`grader(item, text) -> correct`: `item` is the prompt line, `text` the decoded answer part."""


# ---------------------------------------------------------------------------------------------
# Schema


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _int_list(obj: dict, name: str, allow_empty: bool) -> list:
    x = obj.get(name)
    if not isinstance(x, list) or not all(_is_int(v) for v in x):
        raise ValueError(f"trace field {name!r}: expected a list of integers")
    if not x and not allow_empty:
        raise ValueError(f"trace field {name!r}: must not be empty")
    return x


def validate_trace(obj) -> None:
    """Raise a one-line `ValueError` naming the field when `obj` breaks the trace schema."""
    if not isinstance(obj, dict):
        raise ValueError(f"trace: expected a JSON object, got {type(obj).__name__}")
    for name in ("prompt", "completion", "think_end", "boundaries", "confident"):
        if name not in obj:
            raise ValueError(f"trace field {name!r}: missing")
    for name in ("prompt", "completion"):
        if any(t < 0 for t in _int_list(obj, name, allow_empty=False)):
            raise ValueError(f"trace field {name!r}: token ids must be >= 0")
    C = len(obj["completion"])
    think_end = obj["think_end"]
    if not _is_int(think_end) or not -1 <= think_end < C:
        raise ValueError(f"trace field 'think_end': expected -1 or an index in [0, {C}), got {think_end!r}")
    limit = think_end if think_end >= 0 else C
    boundaries = _int_list(obj, "boundaries", allow_empty=True)
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
        raise ValueError("trace field 'boundaries': indices must be strictly increasing")
    if boundaries and not 0 <= boundaries[0] <= boundaries[-1] < limit:
        raise ValueError(f"trace field 'boundaries': indices must lie inside the thinking section [0, {limit})")
    confident = obj["confident"]
    if not isinstance(confident, list) or any(c not in (0, 1) or isinstance(c, float) for c in confident):
        raise ValueError("trace field 'confident': expected a list of 0/1")
    if len(confident) != len(boundaries):
        raise ValueError(
            f"trace field 'confident': {len(confident)} values for {len(boundaries)} boundaries"
        )
    for name in OPTIONAL_STR:
        if name in obj and not isinstance(obj[name], str):
            raise ValueError(f"trace field {name!r}: expected a string")
    if "correct" in obj and (obj["correct"] not in (0, 1) or isinstance(obj["correct"], float)):
        raise ValueError("trace field 'correct': expected 0 or 1")


def read_jsonl(path: str | Path, check: Callable[[dict], None] | None = None) -> list[dict]:
    """Objects of a JSONL file (blank lines skipped); errors say `FILE:LINE: ...`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = []
    with path.open("rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if check is not None:
                    check(obj)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
            except ValueError as e:
                raise ValueError(f"{path}:{i}: {e}") from None
            out.append(obj)
    if not out:
        raise ValueError(f"{path}: no records")
    return out


def read_traces(path: str | Path) -> list[dict]:
    """Validated traces of a JSONL file."""
    return read_jsonl(path, validate_trace)


# ---------------------------------------------------------------------------------------------
# Marking a completion


def think_end_index(completion: Sequence[int], think_end_id: int) -> int:
    """Index of the first `</think>` in `completion`, or -1."""
    return next((i for i, t in enumerate(completion) if t == think_end_id), -1)


def boundary_indices(completion: Sequence[int], think_end: int, split_ids: Sequence[int]) -> list[int]:
    """Indices of step-boundary tokens inside the thinking section (none when it never ended)."""
    split = set(split_ids)
    return [i for i, t in enumerate(completion[: max(think_end, 0)]) if t in split]


def answer_prefix_ids(tok) -> list[int]:
    """The tokens the chat template puts between `</think>` and the answer (e.g. "\\n\\n").

    Read from the template's no-thinking prompt (`<think>\\n\\n</think>\\n\\n` in Qwen3 style):
    what follows its last `</think>`; empty when the template writes no `</think>`.
    """
    ids = tok.chat_prompt("x", thinking=False)
    ends = [i for i, t in enumerate(ids) if t == tok.think_end_id]
    return ids[ends[-1] + 1 :] if ends else []


# ---------------------------------------------------------------------------------------------
# Grading


def _answer_text(text: str, eos_texts: Sequence[str]) -> str:
    tail = text.rpartition("</think>")[2]
    for e in eos_texts:
        tail = tail.replace(e, "")
    return tail.strip()


def is_demo_question(question) -> bool:
    """Whether `question` is a demo-task question (so the demo grader can check it)."""
    from specexit_jax.demo import task

    if not isinstance(question, str):
        return False
    try:
        task.solve(question)
    except ValueError:
        return False
    return True


def grader_for(item: dict, name: str) -> str:
    """The concrete grader for `item`: `auto` is `demo` for demo questions, else `exact`.

    Raises a one-line `ValueError` when `item` lacks what that grader needs.
    """
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; choose from {', '.join(GRADERS)}")
    if name == "auto":
        name = "demo" if is_demo_question(item.get("question")) else "exact"
    if name == "demo" and not is_demo_question(item.get("question")):
        raise ValueError("grader 'demo' needs a demo-task 'question'")
    if name != "demo" and not isinstance(item.get("answer"), str):
        raise ValueError(f"grader {name!r} needs an 'answer' string")
    return name


def make_grader(name: str, eos_texts: Sequence[str] = ()) -> Grader:
    """A grader by name: `demo` (the demo task's `is_correct`), `exact` (the text after `</think>`,
    EOS removed and stripped, equals `answer`), a benchmark's (`gsm8k`, `math500`, `aime`), or
    `auto` (per item: demo for demo questions, else exact)."""
    from specexit_jax.demo import task
    from specexit_jax.eval.benchmarks import grade

    def grader(item: dict, text: str) -> bool:
        kind = grader_for(item, name)
        if kind == "demo":
            return task.is_correct(item["question"], text)
        if kind == "exact":
            return _answer_text(text, eos_texts) == item["answer"].strip()
        return grade(kind, text, item["answer"])

    return grader


# ---------------------------------------------------------------------------------------------
# Prompts and the synthetic demo traces


def parse_demo_source(source: str) -> tuple[int, int] | None:
    """`"demo:N[:SEED]"` -> `(N, SEED)`; None for anything else (a file path)."""
    if not source.startswith("demo:"):
        return None
    parts = source.split(":")[1:]
    try:
        n, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise ValueError(f"data source {source!r}: expected demo:N or demo:N:SEED") from None
    if n < 1 or len(parts) > 2:
        raise ValueError(f"data source {source!r}: expected demo:N or demo:N:SEED with N >= 1")
    return n, seed


def read_prompts(source: str, tok) -> list[dict]:
    """Prompt items `{"prompt": [ids], "question"?, "answer"?}` from a JSONL file or `demo:N[:SEED]`."""
    demo = parse_demo_source(source)
    if demo is not None:
        from specexit_jax.demo import task

        samples = task.make_dataset(*demo)
        return [
            {"prompt": tok.encode(task.render_prompt(s)), "question": s.question, "answer": s.answer}
            for s in samples
        ]

    def check(obj):
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        if "prompt" in obj:
            p = obj["prompt"]
            if not isinstance(p, list) or not p or not all(_is_int(t) and t >= 0 for t in p):
                raise ValueError("field 'prompt': expected a non-empty list of token ids")
        elif not isinstance(obj.get("question"), str):
            raise ValueError("needs 'prompt' (token ids) or 'question' (text)")
        if "answer" in obj and not isinstance(obj["answer"], str):
            raise ValueError("field 'answer': expected a string")

    items = read_jsonl(source, check)
    for item in items:
        if "prompt" not in item:
            item["prompt"] = tok.chat_prompt(item["question"])
    return items


def demo_traces(n: int, seed: int, tok) -> list[dict]:
    """`n` traces of the demo task as its generator writes them (no model involved).

    Boundary `k` (the blank line that ends thinking step `k`) is confident when the current
    answer after step `k` is the right one, which is what a probe there would find.
    """
    from specexit_jax.demo import task

    out = []
    for s in task.make_dataset(n, seed):
        completion = tok.encode(task.render_completion(s))
        think_end = think_end_index(completion, tok.think_end_id)
        boundaries = boundary_indices(completion, think_end, tok.step_split_ids)
        assert len(boundaries) == len(s.thinking_steps), "every demo step ends with one blank line"
        confident = [int(a == s.answer) for a in s.step_answers]
        out.append(
            {
                "prompt": tok.encode(task.render_prompt(s)),
                "completion": completion,
                "think_end": think_end,
                "boundaries": boundaries,
                "confident": confident,
                "answer": s.answer,
                "correct": 1,
                "question": s.question,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Generation and probing


def generate_padded(target, prompts: list[list[int]], batch_size: int, **kw) -> list[list[int]]:
    """`generate(target, prompts, **kw).tokens` over fixed-size batches (the last one padded), so
    each shape compiles once."""
    from specexit_jax.engine import generate

    out: list[list[int]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        out.extend(generate(target, prompts=padded, **kw).tokens[: len(chunk)])
    return out


def probe_prefixes(trace: dict, think_end_id: int, answer_prefix: Sequence[int]) -> list[list[int]]:
    """Per boundary `b`: prompt + completion[: b+1] + `</think>` + the template's answer prefix."""
    head = list(trace["prompt"])
    c = trace["completion"]
    return [head + list(c[: b + 1]) + [think_end_id] + list(answer_prefix) for b in trace["boundaries"]]


def make_traces(
    target,
    items: list[dict],
    tok,
    *,
    grader: Grader,
    max_new_tokens: int = 1024,
    temperature: float = 0.6,
    batch_size: int = 8,
    probe_answer_tokens: int = 16,
    seed: int = 0,
) -> Iterator[dict]:
    """Yield one trace per item (in order), generated and probed in batches of `batch_size`."""
    forced = [tok.think_end_id, *answer_prefix_ids(tok)]
    eos = list(tok.eos_ids)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        completions = generate_padded(
            target,
            [it["prompt"] for it in chunk],
            batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            eos_ids=eos,
            seed=seed + start,
        )
        traces = []
        for item, completion in zip(chunk, completions):
            think_end = think_end_index(completion, tok.think_end_id)
            trace = {
                "prompt": list(item["prompt"]),
                "completion": completion,
                "think_end": think_end,
                "boundaries": boundary_indices(completion, think_end, tok.step_split_ids),
            }
            trace.update({k: item[k] for k in OPTIONAL_STR if k in item})
            trace["correct"] = int(grader(item, tok.decode(completion)))
            traces.append(trace)
        owners = [i for i, tr in enumerate(traces) for _ in tr["boundaries"]]
        prefixes = [p for tr in traces for p in probe_prefixes(tr, forced[0], forced[1:])]
        order = sorted(range(len(prefixes)), key=lambda k: len(prefixes[k]))  # little padding per batch
        answers: list[list[int]] = [[] for _ in prefixes]
        if prefixes:
            sorted_answers = generate_padded(
                target, [prefixes[k] for k in order], batch_size, max_new_tokens=probe_answer_tokens, eos_ids=eos
            )
            for k, ans in zip(order, sorted_answers):
                answers[k] = ans
        for tr in traces:
            tr["confident"] = []
        for i, ans in zip(owners, answers):
            traces[i]["confident"].append(int(grader(chunk[i], tok.decode(forced + ans))))
        yield from traces


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = _Parser(
        prog="python -m specexit_jax.traces",
        description="Generate thinking traces with the target and probe each step boundary for an "
        "early exit (see the module docstring for the JSONL schemas).",
    )
    p.add_argument("--target", required=True, help="target checkpoint folder")
    p.add_argument("--prompts", required=True, help="prompts JSONL, or demo:N[:SEED] for the demo task")
    p.add_argument("--out", required=True, help="trace JSONL file to write")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the target folder)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="completion budget (default 1024)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per generate call (default 8)")
    p.add_argument("--probe-answer-tokens", type=int, default=16, help="answer tokens per probe (default 16)")
    p.add_argument("--grader", default="auto", choices=GRADERS, help="answer grader (default auto)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--think-end-id", type=int, help="</think> id, when the vocabulary lacks it")
    p.add_argument("--step-split-ids", type=_ids, help="step-boundary ids, when the vocabulary lacks them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    for name in ("max_new_tokens", "batch_size", "probe_answer_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.temperature < 0:
        p.error("--temperature must be >= 0")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        p.exit(2, f"error: {out} exists (pass --overwrite to replace it)\n")
    try:
        n, stats = _run(args, out)
    except (OSError, ValueError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps({"traces": n, **stats}))
    return 0


def _run(args, out: Path) -> tuple[int, dict]:
    from tqdm import tqdm

    from specexit_jax.checkpoint import load_checkpoint
    from specexit_jax.tokenizer import Tokenizer

    tok = Tokenizer(args.tokenizer or args.target, think_end_id=args.think_end_id, step_split_ids=args.step_split_ids)
    items = read_prompts(args.prompts, tok)[: args.limit]
    for i, item in enumerate(items):
        try:
            grader_for(item, args.grader)
        except ValueError as e:
            raise ValueError(f"{args.prompts}: prompt {i}: {e}") from None
    target = load_checkpoint(args.target)
    grader = make_grader(args.grader, [tok.decode([e]) for e in tok.eos_ids])
    t0 = time.perf_counter()
    think, confident, boundaries, correct, n = [], 0, 0, 0, 0
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w") as f, tqdm(total=len(items), unit="trace", disable=None) as bar:
        traces = make_traces(
            target,
            items,
            tok,
            grader=grader,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.batch_size,
            probe_answer_tokens=args.probe_answer_tokens,
            seed=args.seed,
        )
        for tr in traces:
            validate_trace(tr)
            f.write(json.dumps(tr) + "\n")
            n += 1
            think.append(tr["think_end"])
            boundaries += len(tr["boundaries"])
            confident += sum(tr["confident"])
            correct += tr["correct"]
            bar.update()
    tmp.replace(out)
    ended = [t for t in think if t >= 0]
    return n, {
        "accuracy": round(correct / max(n, 1), 4),
        "thinking_ended": round(len(ended) / max(n, 1), 4),
        "mean_thinking_tokens": round(float(np.mean(ended)), 1) if ended else None,
        "boundaries": boundaries,
        "confident_share": round(confident / max(boundaries, 1), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
