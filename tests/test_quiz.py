"""Tests for lessonlib.quiz (grading, answer keys) and its view lessonlib.widgets.quiz."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib.quiz import TWO_DECIMALS, Grade, Quiz, check_answer_key, grade, parse_number
from lessonlib.widgets.quiz import QuizView

# p1 for logits (2, 1, 0) at temperature 1 is e^2 / (e^2 + e + 1) = 0.66524...
P1 = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
PROB = Quiz("P(first token)?", "number", P1, TWO_DECIMALS, explanation="softmax of (2, 1, 0)")
COUNT = Quiz("Nucleus size?", "integer", 4, explanation="0.5 + 0.2 + 0.15 + 0.08 >= 0.9")
PICK = Quiz("Greedy is", "choice", "top-k with k = 1", choices=("top-k with k = 1", "top-p = 1"))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.67", 0.67),
        (".67", 0.67),
        ("+0.67", 0.67),
        (" 0.67 ", 0.67),
        ("67%", 0.67),
        ("67 %", 0.67),
        ("2/3", 2 / 3),
        ("1 / 8", 0.125),
        ("4.", 4.0),
        ("-2", -2.0),
        ("1e-3", 0.001),
        ("6.7E-1", 0.67),
        ("50%", 0.5),
    ],
)
def test_parse_number_reads_accepted_forms(text: str, value: float) -> None:
    assert parse_number(text) == pytest.approx(value, abs=1e-15)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("abc", "could not read 'abc' as a number"),
        ("", "empty answer"),
        ("   ", "empty answer"),
        ("0,67", "with a point"),
        ("1,000", "with a point"),
        ("1/0", "divides by zero"),
        ("nan", "could not read 'nan'"),
        ("inf", "could not read 'inf'"),
        ("1e400", "finite"),
        ("1/2/3", "could not read"),
        ("0.6.7", "could not read"),
        ("%", "could not read"),
        ("- 2", "could not read"),
    ],
)
def test_parse_number_rejects_with_a_helpful_message(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_number(text)


@pytest.mark.parametrize("text", ["0.67", ".67", "67%", " 0.665 ", "0.661", "2/3", "0.6652"])
def test_grade_accepts_right_numbers_in_any_form(text: str) -> None:
    result = grade(PROB, text)
    assert result.correct
    assert result.message.startswith("Correct.")
    assert "softmax of (2, 1, 0)" in result.message
    assert result.value == pytest.approx(parse_number(text))


# 0.66 is a mis-rounding of 0.6652: 0.0052 away, outside the tolerance for two decimals.
@pytest.mark.parametrize("text", ["0.68", "0.66", "0.6", "0.33", "-0.67", "1", "0.7"])
def test_grade_rejects_wrong_numbers(text: str) -> None:
    result = grade(PROB, text)
    assert not result.correct
    assert result.message.startswith("Not quite")
    assert result.value == pytest.approx(float(text))


def test_grade_reports_unreadable_text_without_a_value() -> None:
    result = grade(PROB, "abc")
    assert result == Grade(False, result.message, None)
    assert "could not read 'abc' as a number" in result.message


def test_grade_suggests_a_missing_percent_sign() -> None:
    result = grade(PROB, "67")
    assert not result.correct
    assert "67%" in result.message


def test_tolerance_is_inclusive_at_both_edges() -> None:
    quiz = Quiz("q", "number", 0.665, 0.005)
    # 0.67 - 0.665 is 0.0050000000000000044 in binary; the boundary still counts as right.
    assert grade(quiz, "0.67").correct
    assert grade(quiz, "0.66").correct
    assert not grade(quiz, "0.6701").correct
    assert not grade(quiz, "0.6599").correct


def test_zero_tolerance_needs_the_exact_number() -> None:
    quiz = Quiz("q", "number", 0.25)
    assert grade(quiz, "1/4").correct
    assert grade(quiz, "25%").correct
    assert not grade(quiz, "0.2500001").correct


@pytest.mark.parametrize("text", ["4", " 4 ", "4.0", "+4", "8/2", "4."])
def test_integer_quiz_accepts_whole_forms(text: str) -> None:
    result = grade(COUNT, text)
    assert result.correct
    assert result.value == 4
    assert isinstance(result.value, int)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("5", "5 is not the answer"),
        ("3", "3 is not the answer"),
        ("4.5", "whole number"),
        ("400%", "not a percentage"),
    ],
)
def test_integer_quiz_rejects_others(text: str, words: str) -> None:
    result = grade(COUNT, text)
    assert not result.correct
    assert words in result.message


@pytest.mark.parametrize("text", ["top-k with k = 1", "  TOP-K   with k = 1 ", "a", "(a)", "A)"])
def test_choice_quiz_accepts_the_text_or_the_letter(text: str) -> None:
    result = grade(PICK, text)
    assert result.correct
    assert result.value == "top-k with k = 1"


def test_choice_quiz_rejects_the_other_choice_and_unknown_text() -> None:
    assert not grade(PICK, "b").correct
    assert grade(PICK, "b").value == "top-p = 1"
    unknown = grade(PICK, "c")
    assert not unknown.correct
    assert unknown.value is None
    assert "(a), (b)" in unknown.message


def test_choice_text_wins_over_a_letter() -> None:
    quiz = Quiz("Which?", "choice", "b", choices=("b", "a"))
    # "b" is the first choice's text; as a letter it would name the second choice.
    assert grade(quiz, "b").correct


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"kind": "text", "answer": 1}, ValueError, "kind must be one of"),
        ({"kind": "number", "answer": "x"}, TypeError, "real number"),
        ({"kind": "number", "answer": math.inf}, ValueError, "finite"),
        ({"kind": "number", "answer": 1, "tolerance": -0.1}, ValueError, "tolerance"),
        ({"kind": "number", "answer": 1, "tolerance": True}, TypeError, "tolerance"),
        ({"kind": "integer", "answer": 4.0}, TypeError, "an int"),
        ({"kind": "integer", "answer": 4, "tolerance": 0.5}, ValueError, "tolerance must be 0"),
        ({"kind": "choice", "answer": "a", "choices": ("a",)}, ValueError, "at least two"),
        ({"kind": "choice", "answer": "c", "choices": ("a", "b")}, ValueError, "one of choices"),
        ({"kind": "number", "answer": 1, "choices": ("a", "b")}, ValueError, "choices must be"),
    ],
)
def test_quiz_rejects_bad_fields(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        Quiz(question="q", **kwargs)


def test_quiz_is_frozen() -> None:
    with pytest.raises(AttributeError):
        PROB.answer = 0.5  # type: ignore[misc]


def test_grade_rejects_non_string_response() -> None:
    with pytest.raises(TypeError, match="response must be a string"):
        grade(PROB, 0.67)  # type: ignore[arg-type]


def test_check_answer_key_passes_agreeing_values() -> None:
    check_answer_key(PROB, 0.6652)
    check_answer_key(PROB, torch.tensor(P1))
    check_answer_key(COUNT, 4)
    check_answer_key(COUNT, torch.tensor(4))
    check_answer_key(COUNT, 4.0)
    check_answer_key(PICK, "top-k with k = 1")


@pytest.mark.parametrize(
    ("quiz", "value"),
    [(PROB, 0.68), (PROB, torch.tensor(0.5)), (COUNT, 5), (COUNT, 4.5), (PICK, "top-p = 1")],
)
def test_check_answer_key_raises_on_disagreement(quiz: Quiz, value: object) -> None:
    with pytest.raises(AssertionError, match="disagrees with the value the notebook computed"):
        check_answer_key(quiz, value)


def test_check_answer_key_rejects_a_non_number_for_a_number_quiz() -> None:
    with pytest.raises(TypeError, match="computed_value must be a real number"):
        check_answer_key(PROB, "0.67")


def test_view_shows_correct_feedback_with_the_explanation() -> None:
    view = QuizView(PROB)
    assert view.feedback.value == ""
    result = view.submit("0.67")
    assert result.correct
    assert view.answer_box.value == "0.67"
    assert "Correct." in view.feedback.value
    assert "softmax of (2, 1, 0)" in view.feedback.value
    assert view.last_grade == result


def test_view_shows_not_quite_for_a_wrong_answer_then_recovers() -> None:
    view = QuizView(PROB)
    view.submit("0.5")
    assert "Not quite." in view.feedback.value
    assert "Correct" not in view.feedback.value
    view.submit(".67")
    assert "Correct." in view.feedback.value


def test_view_explains_unreadable_input_and_escapes_it() -> None:
    view = QuizView(PROB)
    view.submit("<b>x</b>")
    assert "Could not read" in view.feedback.value
    assert "<b>x</b>" not in view.feedback.value
    assert "&lt;b&gt;" in view.feedback.value


def test_view_check_button_grades_what_is_typed() -> None:
    view = QuizView(COUNT)
    view.answer_box.value = "4"
    view.feedback.value = ""
    view.check_button.click()
    assert "Correct." in view.feedback.value
    assert view.last_grade is not None and view.last_grade.value == 4


def test_view_lists_choices_and_renders_as_a_widget() -> None:
    view = QuizView(PICK)
    assert "(a) top-k with k = 1" in view.question.value
    assert "(b) top-p = 1" in view.question.value
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == view.widget.model_id


def test_view_rejects_a_non_quiz() -> None:
    with pytest.raises(TypeError, match="quiz must be a lessonlib.quiz.Quiz"):
        QuizView("what is 2 + 2?")  # type: ignore[arg-type]
