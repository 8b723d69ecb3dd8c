"""Benchmark loaders, answer extraction and graders (pure Python, fast)."""

import dataclasses
import json

import pytest

from specexit_jax.eval.benchmarks import (
    BENCHMARKS,
    BOXED_INSTRUCTION,
    Problem,
    extract_answer,
    extract_boxed,
    format_question,
    grade,
    gsm8k_answers_equal,
    load_benchmark,
    math_answers_equal,
    normalize_math_answer,
    strip_thinking,
)

EXPECTED_COUNTS = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30, "aime": 60}
SINGLE_FILE_BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25")


@pytest.fixture(scope="module")
def benchmarks():
    return {name: load_benchmark(name) for name in BENCHMARKS}


# --------------------------------------------------------------------------- loading


def test_record_counts_and_fields(benchmarks):
    assert set(BENCHMARKS) == set(EXPECTED_COUNTS)
    for name, problems in benchmarks.items():
        assert len(problems) == EXPECTED_COUNTS[name], name
        assert len({p.id for p in problems}) == len(problems), name
        for problem in problems:
            assert isinstance(problem, Problem)
            assert problem.question.strip() and problem.answer.strip()


def test_known_records(benchmarks):
    assert benchmarks["gsm8k"][0].answer == "18"
    assert benchmarks["math500"][0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert benchmarks["aime24"][0].id == "2024-I-1"
    assert [p.answer for p in benchmarks["aime25"][:3]] == ["70", "588", "16"]
    assert benchmarks["aime"] == benchmarks["aime24"] + benchmarks["aime25"]


def test_problem_is_frozen():
    problem = Problem("a", "q", "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.answer = "2"


def test_limit():
    assert [p.id for p in load_benchmark("gsm8k", limit=3)] == [
        "gsm8k-test-0000",
        "gsm8k-test-0001",
        "gsm8k-test-0002",
    ]
    assert load_benchmark("aime25", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("aime25", limit=-1)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_benchmark("gpqa")
    message = str(info.value)
    assert "'gpqa'" in message
    for name in BENCHMARKS:
        assert name in message
    with pytest.raises(ValueError, match="valid names"):
        grade("mmlu", "\\boxed{1}", "1")


def test_user_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    records = [
        {"id": 1, "question": "1+1?", "answer": 2, "extra": True},
        {"id": "b", "question": "q", "answer": "x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert load_benchmark("math500", path=path) == [Problem("1", "1+1?", "2"), Problem("b", "q", "x")]
    assert load_benchmark("aime", path=str(path), limit=1) == [Problem("1", "1+1?", "2")]


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        load_benchmark("gsm8k", path=path)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ('{"id": "x", "question": "q"', "invalid JSON"),
        ('["not", "an", "object"]', "JSON object"),
        ('{"id": "x", "question": "q"}', "answer"),
    ],
)
def test_corrupt_file_names_file_and_line(tmp_path, bad_line, reason):
    path = tmp_path / "broken.jsonl"
    good = json.dumps({"id": "a", "question": "q", "answer": "1"})
    path.write_text(f"{good}\n{good}\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_benchmark("gsm8k", path=path)
    message = str(info.value)
    assert "broken.jsonl:3" in message and reason in message and "\n" not in message


def test_format_question():
    problem = Problem("p", "What is 1+1?", "2")
    assert format_question(problem) == "What is 1+1?\n" + BOXED_INSTRUCTION
    assert BOXED_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    assert format_question(problem, "plain") == "What is 1+1?"
    assert format_question("Why?", "boxed").startswith("Why?\n")
    with pytest.raises(ValueError, match="style"):
        format_question(problem, "fancy")


# --------------------------------------------------------------------------- graders vs data


@pytest.mark.parametrize("name", SINGLE_FILE_BENCHMARKS)
def test_graders_accept_their_own_references(benchmarks, name):
    rejected = [
        p.answer
        for p in benchmarks[name]
        if not grade(name, f"... so the answer is \\boxed{{{p.answer}}}", p.answer)
    ]
    assert rejected == []


@pytest.mark.parametrize("name", SINGLE_FILE_BENCHMARKS)
def test_graders_reject_neighbouring_references(benchmarks, name):
    answers = [p.answer for p in benchmarks[name]]
    pairs = [
        (mine, other)
        for mine, other in zip(answers, answers[1:])
        if normalize_math_answer(mine) != normalize_math_answer(other)
    ]
    assert len(pairs) > 0.9 * (len(answers) - 1)
    accepted = [pair for pair in pairs if grade(name, f"The answer is \\boxed{{{pair[0]}}}", pair[1])]
    assert len(accepted) <= 0.01 * len(pairs), accepted


# --------------------------------------------------------------------------- extraction


def test_strip_thinking():
    assert strip_thinking("a</think>b</think> c") == " c"
    assert strip_thinking("no markers") == "no markers"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("so \\boxed{\\left\\{ 1, \\sqrt{2} \\right\\}} done", "\\left\\{ 1, \\sqrt{2} \\right\\}"),
        ("first \\boxed{1} then \\boxed{2}.", "2"),
        ("$\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and a truncated \\boxed{\\frac{1", "3"),
        ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("\\boxedsymbol{4} only", None),
        ("no box at all", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("math500", "<think>maybe \\boxed{1}</think>So \\boxed{2}", "2"),
        ("math500", "<think>\\boxed{1}</think>Final: it is 2.", None),
        ("gsm8k", "She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("gsm8k", "The answer is $1,234.00", "$1,234.00"),
        ("gsm8k", "So the final answer is 42. Done.", "42"),
        ("gsm8k", "First 3 then 4, finally 56 eggs", "56"),
        ("aime24", "we get 73 at the end", "73"),
        ("math500", "The answer is: $\\frac{1}{2}$.", "$\\frac{1}{2}$"),
        ("math500", "we get 73 at the end", None),
    ],
)
def test_extract_answer(name, text, expected):
    assert extract_answer(name, text) == expected


# --------------------------------------------------------------------------- graders


@pytest.mark.parametrize(
    "text, reference, expected",
    [
        ("#### 18", "18", True),
        ("The answer is $1,234.00", "1234", True),
        ("\\boxed{\\$18.00}", "18", True),
        ("\\boxed{18 \\text{ eggs}}", "18", True),
        ("\\boxed{10,\\!080}", "10080", True),
        ("\\boxed{25\\%}", "25", True),
        ("<think>answer is 17</think>\\boxed{18}", "18", True),
        ("<think>\\boxed{18}</think> The answer is 17.", "18", False),
        ("\\boxed{18.5}", "18", False),
        ("nothing here", "18", False),
    ],
)
def test_grade_gsm8k(text, reference, expected):
    assert grade("gsm8k", text, reference) is expected


def test_gsm8k_answers_equal():
    assert gsm8k_answers_equal("-5", "-5")
    assert gsm8k_answers_equal("$2,125", "2125")
    assert not gsm8k_answers_equal("3, 4", "34")
    assert gsm8k_answers_equal("\\frac{15}{2}", "7.5")
    assert not gsm8k_answers_equal("1/2", "2")


@pytest.mark.parametrize(
    "a, b",
    [
        ("\\dfrac{1}{2}", "\\frac12"),
        ("\\frac12", "0.5"),
        ("\\tfrac{1}{2}", "1/2"),
        ("10^\\circ", "10"),
        ("10^{\\circ}", "10"),
        ("\\text{(C)}", "C"),
        ("(C)", "\\textbf{C}"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("073", "73"),
        ("x = 5", "5"),
        ("5.", "5"),
        ("\\$32,\\!348", "32348"),
        ("50\\%", "50"),
        ("864 \\text{ square inches}", "864 \\mbox{ inches}^2"),
        ("\\frac{270}{7} degrees", "\\frac{270}7\\text{ degrees}"),
        ("1\\frac{4}{5}", "1.8"),
        ("\\frac{\\sqrt 3}{3}", "\\frac{\\sqrt{3}}{3}"),
        ("11\\sqrt{2}", "11\\sqrt2"),
        ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\frac{\\pi^{2}}{8},\\frac{5\\pi^2}4]"),
        ("(3, 0.8]", "\\left(3,\\frac{4}{5}\\right]"),
        ("x \\in [-2, 7]", "[-2,7]"),
        ("-2, 1", "1,-2"),
        ("\\{-2, 1\\pm\\sqrt{5}\\}", "\\{1\\pm\\sqrt{5},-2\\}"),
        ("\\begin{pmatrix} \\frac15 \\\\ -3.6 \\end{pmatrix}", "\\begin{pmatrix}1/5\\\\-18/5\\end{pmatrix}"),
        ("4210_{5}", "4210_5"),
        ("\\text{East}", "\\text{east}"),
        ("0.3333333", "\\frac{1}{3}"),
        ("\\(\\frac{3}{2}\\)", "1.5"),
        ("y=2x+3", "y = 2x + 3"),
    ],
)
def test_math_equivalences(a, b):
    assert math_answers_equal(a, b)
    assert math_answers_equal(b, a)


@pytest.mark.parametrize(
    "a, b",
    [
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("0.33", "\\frac{1}{3}"),
        ("(3, 4)", "(3, 4]"),
        ("(1, 2)", "(2, 1)"),
        ("(1, 2)", "1, 2"),
        ("1, 2", "1, 2, 3"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
        ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("3R^2", "3r^2"),
        ("\\sqrt{2}", "2"),
        ("2\\pi", "2"),
        ("73", "730"),
        ("\\frac{1}{0}", "0"),
    ],
)
def test_math_non_equivalences(a, b):
    assert not math_answers_equal(a, b)
    assert not math_answers_equal(b, a)


@pytest.mark.parametrize(
    "name, text, reference, expected",
    [
        ("aime24", "<think>...</think>\\boxed{073}", "73", True),
        ("aime25", "Thus the answer is 070.", "70", True),
        ("aime", "\\boxed{70}", "71", False),
        ("math500", "\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
        ("math500", "Therefore $\\boxed{\\text{(C)}}$.", "\\text{(C)}", True),
        ("math500", "no final answer", "3", False),
    ],
)
def test_grade_math_and_aime(name, text, reference, expected):
    assert grade(name, text, reference) is expected


def test_normalize_math_answer_examples():
    assert normalize_math_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_math_answer("11,\\! 111,\\! 111,\\! 100") == "11111111100"
    assert normalize_math_answer("\\frac 59") == "\\frac{5}{9}"
    assert normalize_math_answer("\\text{Evelyn}") == "evelyn"
    assert normalize_math_answer("0073") == "73"
