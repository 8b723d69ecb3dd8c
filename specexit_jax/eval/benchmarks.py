"""Public math benchmarks: loading, prompt formatting, answer extraction and grading.

Benchmarks: ``gsm8k`` (GSM8K test, 1319), ``math500`` (MATH-500, 500),
``aime24`` and ``aime25`` (30 each) and ``aime`` (both AIME years). The data
ships as JSON Lines next to this module (provenance in ``data/SOURCES.md``).

Grading is rule based and uses only the standard library. GSM8K compares the
last number of the predicted answer with the reference. MATH-500 and AIME
normalise both LaTeX strings, then compare them as strings, as rational
numbers, or element-wise as tuples, intervals, sets and matrices. Symbolic
equivalence (``\\frac{1}{\\sqrt{3}}`` against ``\\frac{\\sqrt{3}}{3}``) is not
attempted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from fractions import Fraction
from importlib import resources

_DATA_FILES = {
    "gsm8k": ("gsm8k_test.jsonl",),
    "math500": ("math500.jsonl",),
    "aime24": ("aime24.jsonl",),
    "aime25": ("aime25.jsonl",),
    "aime": ("aime24.jsonl", "aime25.jsonl"),
}
BENCHMARKS = tuple(_DATA_FILES)
"""Names accepted by :func:`load_benchmark`, :func:`extract_answer` and :func:`grade`."""

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_STYLES = ("boxed", "plain")
"""``boxed`` appends :data:`BOXED_INSTRUCTION` to the question; ``plain`` keeps it as is."""

_REQUIRED_FIELDS = ("id", "question", "answer")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem; ``answer`` is the reference answer as text."""

    id: str
    question: str
    answer: str


def _check_name(name: str) -> None:
    if name not in _DATA_FILES:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_benchmark(
    name: str, limit: int | None = None, path: str | os.PathLike | None = None
) -> list[Problem]:
    """Load the problems of benchmark ``name`` in file order.

    ``path`` reads a user JSON Lines file instead of the packaged data (one
    object per line with at least ``id``, ``question`` and ``answer``).
    ``limit`` keeps only the first ``limit`` problems.

    Raises ValueError for an unknown name, a negative limit or a corrupt line,
    and FileNotFoundError for a missing file; messages name the file and line.
    """
    _check_name(name)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if path is not None:
        sources = [pathlib.Path(path)]
    else:
        data_dir = resources.files("specexit_jax.eval") / "data"
        sources = [data_dir / file_name for file_name in _DATA_FILES[name]]
    problems = [problem for source in sources for problem in _read_jsonl(source)]
    return problems if limit is None else problems[:limit]


def _read_jsonl(source) -> list[Problem]:
    """Parse every non-blank line of ``source`` (a path or package resource)."""
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"benchmark file not found: {source}") from None
    return [
        _parse_record(line, source, line_number)
        for line_number, line in enumerate(raw.splitlines(), start=1)
        if line.strip()
    ]


def _parse_record(line: bytes, source, line_number: int) -> Problem:
    where = f"{source}:{line_number}"
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{where}: line is not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [field for field in _REQUIRED_FIELDS if field not in record]
    if missing:
        raise ValueError(f"{where}: record lacks field(s) {', '.join(missing)}")
    return Problem(id=str(record["id"]), question=str(record["question"]), answer=str(record["answer"]))


# ---------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------


def format_question(problem: Problem | str, style: str = "boxed") -> str:
    """The user-turn text for ``problem`` (a Problem or a question string).

    Chat templates are left to the tokenizer; this only adds the instruction.
    """
    question = problem if isinstance(problem, str) else problem.question
    if style == "boxed":
        return f"{question}\n{BOXED_INSTRUCTION}"
    if style == "plain":
        return question
    raise ValueError(f"unknown prompt style {style!r}; valid styles: {', '.join(PROMPT_STYLES)}")


# ---------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------

_BOXED_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_UNBRACED_BOXED_ARGUMENT = re.compile(r"[^\s${}\\]+")
_GSM8K_MARKER = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(.+?)\s*(?:\.(?:\s|$)|\n|$)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"(-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+)")
_INTEGER_ANSWER_BENCHMARKS = ("gsm8k", "aime24", "aime25", "aime")


def strip_thinking(text: str) -> str:
    """The text after the last ``</think>``, or ``text`` itself when there is none."""
    _, marker, tail = text.rpartition("</think>")
    return tail if marker else text


def extract_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{...}``, ``\\fbox{...}`` or ``\\boxed X``.

    Nested braces are balanced; an unclosed (truncated) box is skipped in
    favour of an earlier one. Returns None when there is no usable box.
    """
    for match in reversed(list(_BOXED_COMMAND.finditer(text))):
        content = _boxed_argument(text, match.end())
        if content is not None:
            return content.strip()
    return None


def _boxed_argument(text: str, start: int) -> str | None:
    """Argument of a box command whose name ends at ``start``; None if malformed."""
    position = start
    while position < len(text) and text[position].isspace():
        position += 1
    if position < len(text) and text[position] == "{":
        end = _closing_brace(text, position)
        return None if end is None else text[position + 1 : end]
    token = _UNBRACED_BOXED_ARGUMENT.match(text, position)
    return token.group(0) if token else None


def _closing_brace(text: str, open_position: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_position``, skipping ``\\{`` and ``\\}``."""
    depth = 0
    position = open_position
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return None


def _last_group(pattern: re.Pattern, text: str) -> str | None:
    matches = list(pattern.finditer(text))
    return matches[-1].group(1).strip() if matches else None


def extract_answer(name: str, text: str) -> str | None:
    """The final answer in a model output, or None when none can be found.

    Only text after the last ``</think>`` counts when one is present. Tried in
    order: the last box, a GSM8K-style ``#### X`` line, the last "answer is X"
    phrase, and, for the integer-answer benchmarks (GSM8K, AIME), the last number.
    """
    _check_name(name)
    text = strip_thinking(text)
    answer = extract_boxed(text)
    if answer is None:
        answer = _last_group(_GSM8K_MARKER, text)
    if answer is None:
        answer = _last_group(_ANSWER_IS, text)
    if answer is None and name in _INTEGER_ANSWER_BENCHMARKS:
        answer = _last_group(_PLAIN_NUMBER, text)
    return answer


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_FORMS = (
    re.compile(rf"(?P<sign>-?)(?P<num>{_UNSIGNED})"),
    re.compile(rf"(?P<sign>-?)\\frac\{{(?P<num>{_UNSIGNED})\}}\{{(?P<den>{_UNSIGNED})\}}"),
    re.compile(rf"(?P<sign>-?)(?P<num>{_UNSIGNED})/(?P<den>{_UNSIGNED})"),
    re.compile(r"(?P<sign>-?)(?P<whole>\d+)\\frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}"),
)
_RELATIVE_TOLERANCE = 1e-6


def _parse_number(text: str) -> Fraction | None:
    """Exact value of an integer, decimal, ``a/b``, ``\\frac{a}{b}`` or mixed
    number ``a\\frac{b}{c}`` (in normalised form, no spaces); otherwise None."""
    for form in _NUMBER_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        parts = match.groupdict()
        denominator = Fraction(parts.get("den") or 1)
        if denominator == 0:
            return None
        value = Fraction(parts.get("whole") or 0) + Fraction(parts["num"]) / denominator
        return -value if parts["sign"] else value
    return None


def _numbers_equal(a: Fraction, b: Fraction) -> bool:
    """Exact equality, or agreement to a relative 1e-6 (rounded repeating decimals)."""
    return a == b or math.isclose(float(a), float(b), rel_tol=_RELATIVE_TOLERANCE)


def _last_number(text: str) -> Fraction | None:
    """The last number in ``text`` (``a/b`` and ``\\frac{a}{b}`` read as fractions),
    with thousands separators removed."""
    cleaned = text.replace("\u2212", "-").replace("\\!", "")
    cleaned = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", cleaned)
    cleaned = re.sub(r"\\[dt]?frac\{(\d+)\}\{(\d+)\}", r"\1/\2", cleaned)
    numbers = re.findall(r"-?\d+/[1-9]\d*|-?" + _UNSIGNED, cleaned)
    return Fraction(numbers[-1]) if numbers else None


def gsm8k_answers_equal(predicted: str, reference: str) -> bool:
    """GSM8K rule: the last numbers of both answers are equal.

    Commas, ``$``, units, percent signs and trailing ``.0`` do not matter:
    ``"$1,234.00"`` equals ``"1234"`` and ``"18 eggs"`` equals ``"18"``.
    """
    a, b = _last_number(predicted), _last_number(reference)
    return a is not None and b is not None and _numbers_equal(a, b)


# ---------------------------------------------------------------------------
# LaTeX normalisation (MATH-500, AIME)
# ---------------------------------------------------------------------------

_TEXT_COMMAND = r"\\(?:text|textrm|textbf|textit|mbox|mathrm|mathbf)"
_AFTER_QUANTITY = r"(?:(?<=\d)|(?<=\})|(?<=\\pi))"
_UNIT_WORDS = (
    "degrees|degree|units|unit|cm|km|meters|inches|inch|feet|foot|ft|"
    "cents|cent|dollars|dollar|hours|hour|minutes|seconds|days|miles|mph"
)
_POWER = r"(?:\^\{?\d\}?)?"

# (pattern, replacement) pairs applied in order by normalize_math_answer.
_REWRITES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\u2212", "-"),  # unicode minus
        (r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", ""),  # bracket sizing
        (r"\\[dt]frac(?![a-zA-Z])", r"\\frac"),
        (r"\\displaystyle(?![a-zA-Z])", ""),
        (r",\\!\s*", ","),  # "10,\!080" thousands separators
        (r"(?<!\\)\\[!,;:]", ""),  # thin and negative spaces
        (r"(?<!\\)\\ |~", " "),
        (r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°", ""),
        (r"\\?%", ""),
        (r"\\?\$", ""),
        # a trailing unit such as "5 \text{ cm}^2" after a number, fraction or pi
        (_AFTER_QUANTITY + r"\s*" + _TEXT_COMMAND + r"\{\s*[a-zA-Z][a-zA-Z\s.]*\}" + _POWER + r"\s*$", ""),
    )
)
_UNIT_WORD = re.compile(
    _AFTER_QUANTITY + r"\s*(?:square\s+)?(?:" + _UNIT_WORDS + r")\b\.?" + _POWER + r"\s*$"
)
_TEXT_WRAPPER = re.compile(_TEXT_COMMAND + r"\{([^{}]*)\}")
_MATH_DELIMITERS = re.compile(r"\\\((.*)\\\)|\\\[(.*)\\\]", re.DOTALL)
_VARIABLE_PREFIX = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)\s*(?:=|\\in(?![a-zA-Z]))\s*")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BRACED_COMMAND = re.compile(r"\\(frac|sqrt)(?![a-zA-Z])")
_COMMAND_NAME = re.compile(r"\\[a-zA-Z]+")


def normalize_math_answer(text: str) -> str:
    """Canonical string form of a LaTeX answer, used before comparing answers.

    Removes math delimiters, ``\\left``/``\\right``, thin spaces, degree signs,
    percent and dollar signs, trailing units, ``\\text{}`` wrappers, trailing
    periods, a leading ``x =`` or ``x \\in``, thousands separators and all
    whitespace; turns ``\\dfrac``/``\\tfrac`` into ``\\frac``, braces single-token
    arguments (``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``,
    ``x^{2}`` -> ``x^2``), reduces ``(C)`` to ``C``, lower-cases plain words
    and drops leading zeros of integers.
    """
    s = text.strip()
    delimited = _MATH_DELIMITERS.fullmatch(s)
    if delimited:
        s = delimited.group(1) if delimited.group(1) is not None else delimited.group(2)
    for pattern, replacement in _REWRITES:
        s = pattern.sub(replacement, s)
    s = _UNIT_WORD.sub("", _unwrap_text(s)).strip().rstrip(".").strip()
    s = _VARIABLE_PREFIX.sub("", s)
    s = _brace_arguments(s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"([_^])\{([^{}])\}", r"\1\2", s)
    s = re.sub(r"^\(([A-Za-z])\)$", r"\1", s)
    if s.isalpha():
        s = s.lower()
    if re.fullmatch(r"-?\d+", s):
        s = str(int(s))
    return s


def _unwrap_text(s: str) -> str:
    """Replace ``\\text{X}`` (and ``\\mbox``, ``\\mathrm``, ...) by ``X``, innermost first."""
    while True:
        unwrapped = _TEXT_WRAPPER.sub(r"\1", s)
        if unwrapped == s:
            return s
        s = unwrapped


def _brace_arguments(s: str) -> str:
    """Brace every argument of ``\\frac`` and ``\\sqrt``: ``\\frac 1 2`` -> ``\\frac{1}{2}``."""
    pieces = []
    position = 0
    while (match := _BRACED_COMMAND.search(s, position)) is not None:
        pieces.append(s[position : match.end()])
        position = match.end()
        if match.group(1) == "sqrt" and s.startswith("[", position):
            close = s.find("]", position)
            close = len(s) - 1 if close < 0 else close
            pieces.append(s[position : close + 1])
            position = close + 1
        for _ in range(2 if match.group(1) == "frac" else 1):
            argument, position = _next_argument(s, position)
            pieces.append("{" + _brace_arguments(argument) + "}")
    pieces.append(s[position:])
    return "".join(pieces)


def _next_argument(s: str, position: int) -> tuple[str, int]:
    """The TeX argument at ``position`` (braced group, command or one character) and its end."""
    while position < len(s) and s[position].isspace():
        position += 1
    if position == len(s):
        return "", position
    if s[position] == "{":
        end = _closing_brace(s, position)
        if end is None:
            return s[position + 1 :], len(s)
        return s[position + 1 : end], end + 1
    command = _COMMAND_NAME.match(s, position)
    end = command.end() if command else position + 1
    return s[position:end], end


# ---------------------------------------------------------------------------
# Comparison (MATH-500, AIME)
# ---------------------------------------------------------------------------

_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)


def math_answers_equal(predicted: str, reference: str) -> bool:
    """MATH/AIME rule: equal after normalisation, as numbers, or element-wise."""
    a, b = normalize_math_answer(predicted), normalize_math_answer(reference)
    if a == b:
        return True
    value_a, value_b = _parse_number(a), _parse_number(b)
    if value_a is not None and value_b is not None:
        return _numbers_equal(value_a, value_b)
    return _sequences_equal(a, b)


def _sequences_equal(a: str, b: str) -> bool:
    """Compare two normalised answers that are tuples, intervals, sets, matrices or lists.

    Tuples, intervals and matrices compare in order and need the same brackets
    (or shape); sets ``\\{...\\}`` and bare comma lists compare in any order.
    """
    split_a, split_b = _split_sequence(a), _split_sequence(b)
    if split_a is None or split_b is None:
        return False
    (kind_a, items_a), (kind_b, items_b) = split_a, split_b
    if kind_a != kind_b or len(items_a) != len(items_b):
        return False
    if kind_a != "unordered":
        return all(map(math_answers_equal, items_a, items_b))
    remaining = list(items_b)
    for item in items_a:
        index = next((i for i, other in enumerate(remaining) if math_answers_equal(item, other)), None)
        if index is None:
            return False
        del remaining[index]
    return True


def _split_sequence(s: str) -> tuple[str, list[str]] | None:
    """``(kind, items)`` for a normalised sequence, or None for a single value.

    ``kind`` is ``"unordered"`` for sets and bare lists, the bracket pair for
    tuples and intervals (``"(]"``), and the environment and shape for matrices.
    """
    matrix = _MATRIX.fullmatch(s)
    if matrix:
        rows = [row.split("&") for row in matrix.group(2).split("\\\\") if row]
        return f"{matrix.group(1)}{[len(row) for row in rows]}", [x for row in rows for x in row]
    if s.startswith("\\{") and s.endswith("\\}"):
        items = _split_top_level(s[2:-2])
        return None if items is None else ("unordered", items)
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        items = _split_top_level(s[1:-1])
        if items is not None and len(items) > 1:
            return s[0] + s[-1], items
    items = _split_top_level(s)
    if items is not None and len(items) > 1:
        return "unordered", items
    return None


def _split_top_level(s: str) -> list[str] | None:
    """Split at commas outside brackets; None if a bracket closes one opened outside ``s``."""
    items, depth, start = [], 0, 0
    for position, char in enumerate(s):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif char == "," and depth == 0:
            items.append(s[start:position])
            start = position + 1
    items.append(s[start:])
    return items


# ---------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------


def grade(name: str, predicted_text: str, reference: str) -> bool:
    """True when the answer extracted from ``predicted_text`` matches ``reference``.

    ``predicted_text`` is a full model output (thinking included or not);
    ``reference`` is a :class:`Problem` answer. Raises ValueError for an
    unknown benchmark name.
    """
    predicted = extract_answer(name, predicted_text)
    if predicted is None:
        return False
    if name == "gsm8k":
        return gsm8k_answers_equal(predicted, reference)
    return math_answers_equal(predicted, reference)
