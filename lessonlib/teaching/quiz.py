"""Quiz questions as data, the course's quiz bank, and the pure grading of a typed answer.

A `Quiz` holds a question, its kind ("number", "integer" or "choice"), the answer key, a
tolerance, a hint (shown after a wrong answer: it points at the method, never the number) and
an explanation (shown after a right answer, or when the learner asks for the answer).
The quizzes live in `quizzes/<notebook>.toml`, out of the learner's sight, keyed by a readable
id: `load_quiz("nucleus-size")`. `grade` reads what the learner typed and says whether it is
right; `QuizAttempts` counts the tries of one learner; `check_answer_key` lets a notebook
assert that a key agrees with a value the notebook computed, so that CI checks every key.

What `grade` accepts for numbers (surrounding spaces are ignored everywhere):
- decimals with a point: "0.67", ".67", "+0.67", "-2", "1e-3", "4.";
- a percentage: "67%" or "67 %" means 0.67;
- a fraction of two numbers: "2/3", "1 / 8";
- for an "integer" quiz, any of these whose value is whole: "4", "4.0", "8/2" (not "400%").
A decimal comma ("0,67") is rejected with a message asking for a point: "1,000" would be
ambiguous (one thousand or one), and a quiz should never guess. Infinity and NaN are rejected.

A number is right when ``|value - answer| <= tolerance`` (inclusive), with a slack of a few
units in the last place so that "0.67" is right for the key 0.665 at tolerance 0.005 even
though 0.67 - 0.665 is 0.0050000000000000044 in binary floating point.

This module is not about display: the ipywidgets view lives in `lessonlib.widgets.quiz`.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lessonlib.validation import check_real

__all__ = [
    "KINDS",
    "QUIZ_DIR",
    "REVEAL_AFTER",
    "TWO_DECIMALS",
    "Grade",
    "Quiz",
    "QuizAttempts",
    "answer_text",
    "check_answer_key",
    "grade",
    "load_quiz",
    "parse_number",
    "quiz_bank",
]

KINDS = ("number", "integer", "choice")

# Tolerance for a question that asks for an answer "to two decimals": any correctly rounded
# reply lies within half a unit of the second decimal of the exact key.
TWO_DECIMALS = 0.005

# A plain decimal number: sign, digits with an optional point (".67" and "4." allowed), exponent.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Quiz:
    """One question with its answer key; `tolerance` is inclusive and only for kind "number"."""

    question: str  # shown to the learner; may contain $...$ LaTeX
    kind: str  # "number", "integer" or "choice"
    answer: float | int | str  # the key: a real number, a whole number, or one of `choices`
    tolerance: float = 0.0  # largest accepted |response - answer| for kind "number"
    explanation: str = ""  # shown after a correct answer, or when the answer is revealed
    choices: tuple[str, ...] = ()  # the options of a "choice" quiz, labelled (a), (b), ...
    hint: str = ""  # shown after a wrong answer: the method, never the number
    id: str = ""  # the key in the quiz bank, e.g. "nucleus-size"

    def __post_init__(self) -> None:
        """Reject a quiz whose key cannot be graded, naming the field and what is accepted."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"question must be a non-empty string, got {self.question!r}")
        tol = check_real("tolerance", self.tolerance, low=0)
        if self.kind == "number":
            check_real("answer of a 'number' quiz", self.answer)
        elif tol != 0:
            raise ValueError(f"tolerance must be 0 for a {self.kind!r} quiz, got {tol!r}")
        if self.kind == "integer" and (
            isinstance(self.answer, bool) or not isinstance(self.answer, numbers.Integral)
        ):
            raise TypeError(f"answer of an 'integer' quiz must be an int, got {self.answer!r}")
        if self.kind == "choice":
            if len(self.choices) < 2 or not all(isinstance(c, str) for c in self.choices):
                raise ValueError(
                    f"choices of a 'choice' quiz must be at least two strings, got {self.choices!r}"
                )
            if len(self.choices) > 26:
                raise ValueError(f"choices must be at most 26 (a-z), got {len(self.choices)}")
            if self.answer not in self.choices:
                raise ValueError(
                    f"answer of a 'choice' quiz must be one of choices {self.choices!r}, "
                    f"got {self.answer!r}"
                )
        elif self.choices:
            raise ValueError(
                f"choices must be empty for a {self.kind!r} quiz, got {self.choices!r}"
            )


@dataclass(frozen=True)
class Grade:
    """The verdict on one response: right or not, a message for the learner, the value read."""

    correct: bool
    message: str
    value: float | int | str | None  # what the response was read as; None if unreadable


def parse_number(text: str) -> float:
    """The number written in `text` ("0.67", "67%" or "2/3"); ValueError saying why if not."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    body = text.strip()
    if not body:
        raise ValueError("could not read an empty answer as a number: type a number such as 0.5")
    if "," in body:
        raise ValueError(
            f"could not read {body!r} as a number: write decimals with a point, "
            f"e.g. {body.replace(',', '.')!r}, and no thousands separators"
        )
    scale = 1.0
    if body.endswith("%"):
        body = body[:-1].strip()
        scale = 0.01
    parts = [part.strip() for part in body.split("/")]
    if len(parts) > 2 or not all(_DECIMAL.fullmatch(part) for part in parts):
        raise ValueError(
            f"could not read {text.strip()!r} as a number: write it like 0.67, .67, 67% or 2/3"
        )
    value = float(parts[0])
    if len(parts) == 2:
        denominator = float(parts[1])
        if denominator == 0:
            raise ValueError(f"could not read {text.strip()!r} as a number: it divides by zero")
        value /= denominator
    value *= scale
    if not math.isfinite(value):
        raise ValueError(f"could not read {text.strip()!r} as a finite number")
    return value


def _within(value: float, answer: float, tolerance: float) -> bool:
    """|value - answer| <= tolerance, with a few ulps of slack for binary rounding of decimals."""
    slack = 4 * math.ulp(max(abs(value), abs(answer), tolerance, 1.0))
    return abs(value - answer) <= tolerance + slack


def _format(value: float) -> str:
    """A number as a short readable string (no trailing float noise)."""
    return f"{value:.10g}"


def _grade_number(quiz: Quiz, value: float) -> Grade:
    """Grade a parsed number against a "number" quiz."""
    if _within(value, float(quiz.answer), quiz.tolerance):
        return Grade(True, _right(quiz), value)
    message = f"Not quite: {_format(value)} is not the answer. Try again."
    # A probability typed as a percentage without the sign ("67" for 0.67) is a slip of form.
    if value > 1 and _within(value / 100, float(quiz.answer), quiz.tolerance):
        message = (
            f"Not quite: {_format(value)} is not the answer; did you mean {_format(value)}%? "
            "Probabilities lie between 0 and 1."
        )
    return Grade(False, message, value)


def _grade_integer(quiz: Quiz, value: float) -> Grade:
    """Grade a parsed number against an "integer" quiz."""
    if not value.is_integer():
        return Grade(
            False,
            f"Not quite: the answer is a whole number, and {_format(value)} is not. Try again.",
            value,
        )
    whole = int(value)
    if whole == quiz.answer:
        return Grade(True, _right(quiz), whole)
    return Grade(False, f"Not quite: {whole} is not the answer. Try again.", whole)


def _grade_choice(quiz: Quiz, response: str) -> Grade:
    """Grade a response naming one of the choices, by its text or its letter ("b", "(b)", "b)")."""
    said = " ".join(response.split()).casefold()
    letter = said.strip("()").rstrip(".")
    # The text of a choice wins over a letter, so that a choice that is itself "a" stays reachable.
    matches = [c for c in quiz.choices if " ".join(c.split()).casefold() == said]
    picked: str | None = matches[0] if matches else None
    if picked is None and len(letter) == 1 and "a" <= letter < chr(ord("a") + len(quiz.choices)):
        picked = quiz.choices[ord(letter) - ord("a")]
    if picked is None:
        labels = ", ".join(f"({chr(ord('a') + i)})" for i in range(len(quiz.choices)))
        return Grade(
            False,
            f"could not match {response.strip()!r} to a choice: type one of {labels} "
            "or the text of a choice",
            None,
        )
    if picked == quiz.answer:
        return Grade(True, _right(quiz), picked)
    return Grade(False, f"Not quite: {picked!r} is not the answer. Try again.", picked)


def _right(quiz: Quiz) -> str:
    """The message for a correct answer: "Correct." and the explanation, if any."""
    return f"Correct. {quiz.explanation}".strip()


def grade(quiz: Quiz, response: str) -> Grade:
    """Grade the learner's typed `response` to `quiz`; never raises on what the learner typed.

    A wrong answer that could be read gets the quiz's hint; an unreadable one gets only how to
    write it.
    """
    if not isinstance(quiz, Quiz):
        raise TypeError(f"quiz must be a Quiz, got {type(quiz).__name__}")
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    result = _grade(quiz, response)
    if result.correct or result.value is None or not quiz.hint:
        return result
    return Grade(False, f"{result.message} Hint: {quiz.hint}", result.value)


def _grade(quiz: Quiz, response: str) -> Grade:
    """`grade` without the hint."""
    if quiz.kind == "choice":
        return _grade_choice(quiz, response)
    try:
        value = parse_number(response)
    except ValueError as error:
        return Grade(False, str(error), None)
    if quiz.kind == "integer":
        if response.strip().endswith("%"):
            # "400%" is 4.0 as a number, but a count is never a percentage.
            return Grade(False, "Not quite: the answer is a whole number, not a percentage.", value)
        return _grade_integer(quiz, value)
    return _grade_number(quiz, value)


def answer_text(quiz: Quiz) -> str:
    """The key as a learner would write it: "0.67", "4", or "(b) greedy decoding"."""
    if quiz.kind == "choice":
        letter = chr(ord("a") + quiz.choices.index(quiz.answer))
        return f"({letter}) {quiz.answer}"
    if quiz.kind == "number" and quiz.tolerance > 0:
        # As many decimals as the tolerance asks for: 0.005 -> two.
        decimals = max(0, math.ceil(-math.log10(2 * quiz.tolerance) - 1e-9))
        return f"{quiz.answer:.{decimals}f}"
    return _format(quiz.answer)


# After this many wrong answers that could be read, the learner may reveal the answer.
REVEAL_AFTER = 2


@dataclass
class QuizAttempts:
    """One learner's tries at one quiz: pure state behind the quiz view."""

    quiz: Quiz
    wrong: int = 0  # wrong answers that could be read (an unreadable one is not a try)
    solved: bool = False
    revealed: bool = False
    history: list[Grade] = field(default_factory=list)
    last_response: str | None = None

    def submit(self, response: str) -> Grade:
        """Grade `response` and count it; the same response twice in a row counts once."""
        # A browser sends the box's value on blur and then the Check click: one try, not two.
        if response == self.last_response and self.history:
            return self.history[-1]
        self.last_response = response
        result = grade(self.quiz, response)
        self.history.append(result)
        if result.correct:
            self.solved = True
        elif result.value is not None:
            self.wrong += 1
        return result

    @property
    def can_reveal(self) -> bool:
        """True once the learner has tried `REVEAL_AFTER` times without finding the answer."""
        return self.wrong >= REVEAL_AFTER and not self.solved

    def reveal(self) -> str:
        """The answer and its explanation; ValueError before `can_reveal` (no peeking)."""
        if not (self.can_reveal or self.revealed):
            raise ValueError(
                f"the answer is shown after {REVEAL_AFTER} wrong tries, "
                f"and this learner has made {self.wrong}"
            )
        self.revealed = True
        return f"The answer is {answer_text(self.quiz)}. {self.quiz.explanation}".strip()


# ----- the quiz bank -----------------------------------------------------------------------------

QUIZ_DIR = Path(__file__).resolve().parent / "quizzes"
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_FIELDS = {"question", "kind", "answer", "tolerance", "explanation", "choices", "hint"}


def _quiz_from_table(quiz_id: str, table: dict, source: str) -> Quiz:
    """A Quiz from one TOML table, naming the file and the id in any error."""
    unknown = set(table) - _FIELDS
    if unknown:
        raise ValueError(f"{source}: quiz {quiz_id!r} has unknown fields {sorted(unknown)}")
    if not _ID.fullmatch(quiz_id):
        raise ValueError(f"{source}: quiz id {quiz_id!r} must be lowercase words joined by '-'")
    if not table.get("hint"):
        raise ValueError(f"{source}: quiz {quiz_id!r} needs a hint for wrong answers")
    values = dict(table, choices=tuple(table.get("choices", ())))
    try:
        return Quiz(id=quiz_id, **values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: quiz {quiz_id!r}: {error}") from error


@functools.cache
def quiz_bank(directory: Path = QUIZ_DIR) -> dict[str, tuple[str, Quiz]]:
    """Every quiz of the course by id, with the notebook (file stem) it belongs to."""
    bank: dict[str, tuple[str, Quiz]] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as file:
            tables = tomllib.load(file)
        for quiz_id, table in tables.items():
            if quiz_id in bank:
                raise ValueError(
                    f"quiz id {quiz_id!r} is in both {bank[quiz_id][0]} and {path.stem}"
                )
            bank[quiz_id] = (path.stem, _quiz_from_table(quiz_id, table, path.name))
    return bank


def load_quiz(quiz_id: str) -> Quiz:
    """The quiz with this id from the bank; KeyError listing the ids if there is none."""
    bank = quiz_bank()
    if quiz_id not in bank:
        raise KeyError(f"no quiz {quiz_id!r}; the bank has {sorted(bank)}")
    return bank[quiz_id][1]


def check_answer_key(quiz: Quiz | str, computed_value: object) -> None:
    """Raise AssertionError if the key of `quiz` (a Quiz or a bank id) disagrees with a value.

    `computed_value` may be a Python number or string, or a one-element tensor or array (read
    with `.item()`), so that a notebook can pass what it computed as it is. Prints nothing when
    they agree, so that an answer-key cell shows no answer.
    """
    if isinstance(quiz, str):
        quiz = load_quiz(quiz)
    if not isinstance(quiz, Quiz):
        raise TypeError(f"quiz must be a Quiz or a quiz id, got {type(quiz).__name__}")
    value = computed_value.item() if hasattr(computed_value, "item") else computed_value
    if quiz.kind == "choice":
        agree = value == quiz.answer
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"computed_value must be a real number for a {quiz.kind!r} quiz, got {value!r}"
        )
    elif quiz.kind == "integer":
        agree = float(value).is_integer() and int(value) == quiz.answer
    else:
        agree = _within(float(value), float(quiz.answer), quiz.tolerance)
    if not agree:
        within = f" within tolerance {quiz.tolerance}" if quiz.kind == "number" else ""
        raise AssertionError(
            f"the quiz key {quiz.answer!r} disagrees with the value the notebook computed, "
            f"{value!r}{within}; question: {quiz.question!r}"
        )
