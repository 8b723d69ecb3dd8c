"""Tests of the synthetic demo task: generation, grading, oracle, calibration."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specexit_jax.demo.task import (
    FIRST_PASS_WRONG_TARGET,
    MOD,
    POST_ANSWER_TARGET,
    Sample,
    calibration_stats,
    extract_answer,
    is_correct,
    make_dataset,
    oracle_exit_boundary,
    render_completion,
    render_prompt,
    solve,
)
from specexit_jax.demo.tokenizer_build import build_backend

EQUATION = re.compile(r"(\d+)([+\-*])(\d+)=(\d+)")


def _true(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op] % MOD


def _hand_sample(step_answers: tuple[str, ...], answer: str = "30") -> Sample:
    steps = tuple(f"step {i}" for i in range(len(step_answers)))
    return Sample("compute 10+5*2 left to right mod 100", steps, answer, step_answers, False)


def test_dataset_is_deterministic_per_seed():
    assert make_dataset(50, seed=7) == make_dataset(50, seed=7)
    assert make_dataset(50, seed=7) != make_dataset(50, seed=8)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("compute 12+7*3-5 left to right mod 100", "52"),
        ("compute 3-5+1 left to right mod 100", "99"),
        ("compute 99*5+1-0 left to right mod 100", "96"),
        ("compute 0*4+9*5 left to right mod 100", "45"),
        ("compute 20*5*3+1 left to right mod 100", "1"),
    ],
)
def test_solve_hand_written(question, expected):
    assert solve(question) == expected


def test_solve_rejects_other_text():
    with pytest.raises(ValueError, match="not a task question"):
        solve("what is 2+2?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("answer: 42", "42"),
        ("a+b=3\n</think>\n\nanswer: 7<|im_end|>", "7"),
        ("answer: 5\n\n</think>\n\nanswer: 6", "6"),
        ("answer:  08", "8"),
        ("answer: 1\nanswer: 2", "2"),
        (" 42 ", "42"),
        ("42<|im_end|>", "42"),
        ("answer: 3 </think> no idea", None),
        ("no answer here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct_grades_any_output():
    question = "compute 12+7*3-5 left to right mod 100"
    assert is_correct(question, "12+7=19\n</think>\n\nanswer: 52<|im_end|>")
    assert is_correct(question, "52")
    assert not is_correct(question, "answer: 53")
    assert not is_correct(question, "answer: 152")
    assert not is_correct(question, "answer: 52\n</think>\n\nanswer: 51")
    assert not is_correct(question, "I give up")


def test_generated_samples_are_consistent():
    for sample in make_dataset(500, seed=3):
        assert solve(sample.question) == sample.answer
        assert is_correct(sample, render_completion(sample))
        assert len(sample.step_answers) == len(sample.thinking_steps)
        assert sample.step_answers[-1] == sample.answer
        slips = 0
        for step in sample.thinking_steps:
            a, op, b, c = EQUATION.search(step).groups()
            right = _true(int(a), op, int(b)) == int(c)
            if step.startswith("check:"):
                assert right == step.endswith(" ok")
                if not right:
                    assert step.endswith(f" wrong, {_true(int(a), op, int(b))}")
            else:
                slips += not right
        assert slips <= 1
        assert sum(" wrong, " in step for step in sample.thinking_steps) == slips
        if sample.first_pass_wrong:
            assert slips == 1


def test_oracle_boundary_on_hand_built_samples():
    corrected = Sample(
        question="compute 10+5*2 left to right mod 100",
        thinking_steps=("10+5=15", "15*2=31", "check: 10+5=15 ok", "check: 15*2=31 wrong, 30", "check: 10+5=15 ok"),
        answer="30",
        step_answers=("15", "31", "31", "30", "30"),
        first_pass_wrong=True,
    )
    assert oracle_exit_boundary(corrected) == 3
    assert corrected.first_correct_step == 3
    assert oracle_exit_boundary(_hand_sample(("30", "31", "30"))) == 2
    assert oracle_exit_boundary(_hand_sample(("30", "30", "30"))) == 0
    with pytest.raises(ValueError):
        oracle_exit_boundary(_hand_sample(("30", "31")))


def test_render_formats():
    sample = Sample(
        question="compute 10+5*2 left to right mod 100",
        thinking_steps=("10+5=15", "15*2=30", "check: 10+5=15 ok"),
        answer="30",
        step_answers=("15", "30", "30"),
        first_pass_wrong=False,
    )
    assert render_prompt(sample) == (
        "<|im_start|>user\ncompute 10+5*2 left to right mod 100<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert render_completion(sample) == (
        "10+5=15\n\n15*2=30\n\ncheck: 10+5=15 ok\n\n</think>\n\nanswer: 30<|im_end|>"
    )


def test_calibration_within_target_bands():
    backend = build_backend()
    stats = calibration_stats(
        make_dataset(2000, seed=0), lambda text: len(backend.encode(text, add_special_tokens=False).ids)
    )
    assert stats.n == 2000
    assert POST_ANSWER_TARGET[0] <= stats.post_answer_token_fraction <= POST_ANSWER_TARGET[1]
    assert FIRST_PASS_WRONG_TARGET[0] <= stats.first_pass_wrong_fraction <= FIRST_PASS_WRONG_TARGET[1]
    assert 0.0 < stats.mean_post_answer_fraction < stats.post_answer_token_fraction
    assert 60 <= stats.mean_tokens <= 250
    assert stats.min_tokens >= 40 and stats.p95_tokens <= 250 and stats.max_tokens <= 400


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_graded_samples(seed):
    (sample,) = make_dataset(1, seed)
    assert is_correct(sample.question, render_completion(sample))
    boundary = oracle_exit_boundary(sample)
    assert all(a == sample.answer for a in sample.step_answers[boundary:])
    assert boundary == 0 or sample.step_answers[boundary - 1] != sample.answer
