"""Synthetic reasoning task for the demo model: left-to-right arithmetic mod 100.

A problem is a short chain such as ``compute 12+7*3-5 left to right mod 100``.
The thinking is a list of steps, one per paragraph (joined by a blank line):

* a first pass computes the chain one operation per step (``12+7=19``); with
  probability :data:`SLIP_PROB` one step slips to a wrong value that is carried
  forward;
* when a slip happened, re-checks walk the chain from the start
  (``check: 12+7=19 ok``) until they hit the slip
  (``check: 19*3=58 wrong, 57``), then the rest of the chain is recomputed;
* once the answer is settled, a geometric number (mean about
  :data:`MEAN_EXTRA_CHECKS`, at most :data:`MAX_EXTRA_CHECKS`) of redundant
  re-checks walk the chain again.

The thinking is closed by a blank line, ``</think>`` and the answer ``answer: 4``. Each step
records the *current answer* after it (the latest computed value, i.e. what a
forced answer at that boundary would be), which defines the oracle exit
boundary used to score early-exit predictors.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MOD = 100
MIN_OPS, MAX_OPS = 3, 6
ADD_OPERANDS = range(1, 10)
MUL_OPERANDS = range(2, 6)
SLIP_PROB = 0.25
SLIP_DELTAS = (-10, -2, -1, 1, 2, 10)
MEAN_EXTRA_CHECKS = 3.0
MAX_EXTRA_CHECKS = 12

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
STEP_SEP = "\n\n"
WORDS = ("compute", "left", "to", "right", "mod", "check", "ok", "wrong", "answer")
"""Every word the task renders; the demo tokenizer keeps each as one token."""

POST_ANSWER_TARGET = (0.40, 0.50)
"""Target band for the share of thinking tokens after the oracle exit boundary."""
FIRST_PASS_WRONG_TARGET = (0.15, 0.30)
"""Target band for the share of problems whose first pass ends on a wrong value."""

_QUESTION_RE = re.compile(rf"compute (\d+)((?:[+\-*]\d+)+) left to right mod {MOD}")
_OP_RE = re.compile(r"([+\-*])(\d+)")
_ANSWER_RE = re.compile(r"answer:\s*(-?\d+)")


@dataclass(frozen=True)
class Sample:
    """One problem with its reasoning trace.

    ``step_answers[i]`` is the current answer after ``thinking_steps[i]``:
    computing steps and corrections set it, ``ok`` re-checks leave it as is.
    ``first_pass_wrong`` says whether the first pass ended on a wrong value
    (it is then corrected later in the thinking).
    """

    question: str
    thinking_steps: tuple[str, ...]
    answer: str
    step_answers: tuple[str, ...]
    first_pass_wrong: bool

    @property
    def first_correct_step(self) -> int:
        """Index of the oracle exit boundary, see :func:`oracle_exit_boundary`."""
        return oracle_exit_boundary(self)


@dataclass(frozen=True)
class TaskStats:
    """Calibration statistics of a set of samples; the ``*_tokens`` lengths include the prompt."""

    n: int
    post_answer_token_fraction: float
    mean_post_answer_fraction: float
    first_pass_wrong_fraction: float
    mean_steps: float
    mean_tokens: float
    min_tokens: int
    p95_tokens: int
    max_tokens: int


def _apply(value: int, op: str, operand: int) -> int:
    if op == "+":
        return (value + operand) % MOD
    if op == "-":
        return (value - operand) % MOD
    return (value * operand) % MOD


def _step(value: int, op: str, operand: int, result: int) -> str:
    return f"{value}{op}{operand}={result}"


def _extra_checks(rng: random.Random) -> int:
    """Geometric count of redundant re-checks, capped at ``MAX_EXTRA_CHECKS``."""
    keep, count = MEAN_EXTRA_CHECKS / (1.0 + MEAN_EXTRA_CHECKS), 0
    while count < MAX_EXTRA_CHECKS and rng.random() < keep:
        count += 1
    return count


def make_sample(rng: random.Random) -> Sample:
    """Draw one problem and its reasoning trace from ``rng``."""
    start = rng.randrange(MOD)
    ops = []
    for _ in range(rng.randint(MIN_OPS, MAX_OPS)):
        op = rng.choice("+-*")
        ops.append((op, rng.choice(MUL_OPERANDS if op == "*" else ADD_OPERANDS)))
    chain = "".join(f"{op}{b}" for op, b in ops)
    question = f"compute {start}{chain} left to right mod {MOD}"
    truth = [start]
    for op, b in ops:
        truth.append(_apply(truth[-1], op, b))

    slip_at = rng.randrange(len(ops)) if rng.random() < SLIP_PROB else -1
    steps: list[str] = []
    answers: list[int] = []
    value = start
    for i, (op, b) in enumerate(ops):
        result = _apply(value, op, b)
        if i == slip_at:
            result = (result + rng.choice(SLIP_DELTAS)) % MOD
        steps.append(_step(value, op, b, result))
        answers.append(result)
        value = result
    first_pass = value

    if slip_at >= 0:
        for i in range(slip_at):
            steps.append(f"check: {steps[i]} ok")
            answers.append(value)
        steps.append(f"check: {steps[slip_at]} wrong, {truth[slip_at + 1]}")
        answers.append(truth[slip_at + 1])
        for i in range(slip_at + 1, len(ops)):
            op, b = ops[i]
            steps.append(_step(truth[i], op, b, truth[i + 1]))
            answers.append(truth[i + 1])

    for j in range(_extra_checks(rng)):
        i = j % len(ops)
        op, b = ops[i]
        steps.append(f"check: {_step(truth[i], op, b, truth[i + 1])} ok")
        answers.append(truth[-1])

    return Sample(
        question=question,
        thinking_steps=tuple(steps),
        answer=str(truth[-1]),
        step_answers=tuple(str(a) for a in answers),
        first_pass_wrong=first_pass != truth[-1],
    )


def make_dataset(n: int, seed: int) -> list[Sample]:
    """``n`` samples drawn deterministically from ``seed``."""
    rng = random.Random(seed)
    return [make_sample(rng) for _ in range(n)]


def render_prompt(sample: Sample) -> str:
    """Chat-formatted prompt, ending with the opened thinking block."""
    return f"{IM_START}user\n{sample.question}{IM_END}\n{IM_START}assistant\n{THINK_START}\n"


def render_thinking(sample: Sample) -> str:
    """The thinking steps joined by blank lines."""
    return STEP_SEP.join(sample.thinking_steps)


def render_completion(sample: Sample) -> str:
    """Thinking, ``</think>``, the answer, and the end-of-turn marker.

    The thinking ends with a step boundary, like every step, so ``</think>`` always follows a
    blank line: exactly what a forced exit (cut after a boundary, then ``</think>``) produces.
    """
    return f"{render_thinking(sample)}{STEP_SEP}{THINK_END}\n\nanswer: {sample.answer}{IM_END}"


def solve(question: str) -> str:
    """True answer of a question, recomputed from its text alone.

    Raises ``ValueError`` if the text is not a task question.
    """
    match = _QUESTION_RE.search(question)
    if match is None:
        raise ValueError(f"not a task question: {question!r}")
    value = int(match.group(1)) % MOD
    for op, operand in _OP_RE.findall(match.group(2)):
        value = _apply(value, op, int(operand))
    return str(value)


def extract_answer(text: str) -> str | None:
    """Answer given in a model output, as a normalised integer string.

    Reads the last ``answer: N`` after the last ``</think>`` (or anywhere when
    there is no ``</think>``); a text that is just an integer is its own answer.
    Returns ``None`` when no answer is found.
    """
    tail = text.rsplit(THINK_END, 1)[-1]
    found = _ANSWER_RE.findall(tail)
    if found:
        return str(int(found[-1]))
    bare = tail.replace(IM_END, "").strip()
    return str(int(bare)) if re.fullmatch(r"-?\d+", bare) else None


def is_correct(sample_or_question: Sample | str, answer_text: str) -> bool:
    """Whether ``answer_text`` (any model output) answers the question correctly."""
    question = sample_or_question.question if isinstance(sample_or_question, Sample) else sample_or_question
    predicted = extract_answer(answer_text)
    return predicted == solve(question)


def oracle_exit_boundary(sample: Sample) -> int:
    """First step index after which the current answer is right and never changes.

    Exiting at boundary ``i`` keeps ``thinking_steps[: i + 1]`` and closes the
    thinking; from the returned index on every such exit answers correctly.
    """
    if not sample.step_answers or sample.step_answers[-1] != sample.answer:
        raise ValueError("the thinking does not end on the sample's answer")
    boundary = len(sample.step_answers) - 1
    while boundary > 0 and sample.step_answers[boundary - 1] == sample.answer:
        boundary -= 1
    return boundary


def calibration_stats(samples: Sequence[Sample], count_tokens: Callable[[str], int]) -> TaskStats:
    """Statistics of ``samples``, counting tokens with ``count_tokens(text)``.

    ``post_answer_token_fraction`` is the token-weighted share of thinking
    tokens after the oracle exit boundary; ``mean_post_answer_fraction`` is the
    same share averaged per sample.
    """
    after_total = thinking_total = 0
    fractions, lengths = [], []
    for sample in samples:
        thinking = count_tokens(render_thinking(sample))
        kept = STEP_SEP.join(sample.thinking_steps[: oracle_exit_boundary(sample) + 1])
        after = thinking - count_tokens(kept)
        after_total += after
        thinking_total += thinking
        fractions.append(after / thinking)
        lengths.append(count_tokens(render_prompt(sample) + render_completion(sample)))
    n = len(samples)
    return TaskStats(
        n=n,
        post_answer_token_fraction=after_total / thinking_total,
        mean_post_answer_fraction=sum(fractions) / n,
        first_pass_wrong_fraction=sum(s.first_pass_wrong for s in samples) / n,
        mean_steps=sum(len(s.thinking_steps) for s in samples) / n,
        mean_tokens=sum(lengths) / n,
        min_tokens=min(lengths),
        p95_tokens=sorted(lengths)[int(0.95 * (n - 1))],
        max_tokens=max(lengths),
    )
