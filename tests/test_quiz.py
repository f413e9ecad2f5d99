"""Tests for lessonlib.teaching.quiz (grading, tries, the bank, answer keys) and its view."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lessonlib.teaching.quiz import (
    REVEAL_AFTER,
    TWO_DECIMALS,
    Grade,
    Quiz,
    QuizAttempts,
    answer_text,
    check_answer_key,
    grade,
    load_quiz,
    parse_number,
    quiz_bank,
)
from lessonlib.widgets.quiz import QuizView, show_quiz

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


def test_view_check_button_grades_new_text_and_ignores_a_stale_click() -> None:
    view = QuizView(COUNT)
    view.check_button.click()  # nothing typed yet: told how to answer, not counted
    assert "empty answer" in view.feedback.value and view.attempts.wrong == 0
    view.submit("3")
    assert "Not quite." in view.feedback.value
    # A click that arrives before the browser sends the new text sees the old one: no regrade.
    view.feedback.value = "unchanged"
    view.check_button.click()
    assert view.feedback.value == "unchanged" and view.attempts.wrong == 1
    view.answer_box.value = "4"  # the new text arrives and is graded
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
    with pytest.raises(TypeError, match="quiz must be a lessonlib.teaching.quiz.Quiz"):
        QuizView("what is 2 + 2?")  # type: ignore[arg-type]


HINTED = Quiz(
    "p1 for logits (2, 1, 0)?",
    "number",
    P1,
    TWO_DECIMALS,
    explanation="e^2 / (e^2 + e + 1)",
    hint="exponentiate, then normalise",
)


def test_a_wrong_answer_gets_the_hint_and_never_the_key() -> None:
    result = grade(HINTED, "0.5")
    assert not result.correct
    assert "Hint: exponentiate, then normalise" in result.message
    assert "0.67" not in result.message and "e^2" not in result.message


def test_an_unreadable_answer_gets_no_hint_and_a_right_one_the_explanation() -> None:
    assert "Hint" not in grade(HINTED, "abc").message
    right = grade(HINTED, "0.67")
    assert right.correct and "e^2 / (e^2 + e + 1)" in right.message and "Hint" not in right.message


def test_attempts_reveal_only_after_enough_wrong_tries() -> None:
    attempts = QuizAttempts(HINTED)
    with pytest.raises(ValueError, match="after 2 wrong tries"):
        attempts.reveal()
    attempts.submit("0.5")
    attempts.submit("0.5")  # the same answer again (blur, then Check) is one try
    attempts.submit("abc")  # unreadable: not a try
    assert attempts.wrong == 1 and not attempts.can_reveal
    attempts.submit("0.4")
    assert attempts.wrong == REVEAL_AFTER and attempts.can_reveal
    assert attempts.reveal() == "The answer is 0.67. e^2 / (e^2 + e + 1)"
    assert attempts.revealed


def test_a_solved_quiz_offers_no_reveal() -> None:
    attempts = QuizAttempts(HINTED)
    for text in ("0.1", "0.2", "0.67"):
        attempts.submit(text)
    assert attempts.solved and not attempts.can_reveal


@pytest.mark.parametrize(
    ("quiz", "text"),
    [
        (PROB, "0.67"),
        (COUNT, "4"),
        (PICK, "(a) top-k with k = 1"),
        (Quiz("x?", "number", 0.125, 0.0005), "0.125"),
        (Quiz("x?", "number", 0.5), "0.5"),
    ],
)
def test_answer_text_writes_the_key_as_a_learner_would(quiz: Quiz, text: str) -> None:
    assert answer_text(quiz) == text
    if quiz.kind != "choice":
        assert grade(quiz, text).correct


def test_view_offers_the_answer_after_two_wrong_tries() -> None:
    view = QuizView(HINTED)
    assert view.reveal_button.layout.display == "none"
    view.submit("0.5")
    assert "Hint: exponentiate" in view.feedback.value
    assert view.reveal_button.layout.display == "none"
    view.submit("0.1")
    assert view.reveal_button.layout.display is None
    view.reveal_button.click()
    assert "The answer is 0.67." in view.feedback.value
    view.submit("0.67")
    assert "Correct." in view.feedback.value
    assert view.reveal_button.layout.display == "none"


def test_view_placeholder_fits_the_kind() -> None:
    assert QuizView(COUNT).answer_box.placeholder == "a whole number"
    assert QuizView(PROB).answer_box.placeholder == "a number, e.g. 0.5"
    assert QuizView(PICK).answer_box.placeholder == "a letter, e.g. a"


def test_show_quiz_and_check_answer_key_read_the_bank() -> None:
    view = show_quiz("nucleus-size")
    assert view.quiz == load_quiz("nucleus-size") and view.quiz.id == "nucleus-size"
    check_answer_key("nucleus-size", 4)
    with pytest.raises(AssertionError, match="disagrees"):
        check_answer_key("nucleus-size", 3)
    with pytest.raises(KeyError, match="no quiz 'no-such-quiz'"):
        load_quiz("no-such-quiz")


def test_every_bank_quiz_has_a_hint_that_does_not_state_its_key() -> None:
    for quiz_id, (_notebook, quiz) in quiz_bank().items():
        assert quiz.hint, quiz_id
        if quiz.kind == "number":
            assert answer_text(quiz) not in quiz.hint, f"{quiz_id}: the hint gives the answer"
        if quiz.kind == "choice":
            assert quiz.answer not in quiz.hint, f"{quiz_id}: the hint names the answer"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[a-b]\nquestion = "q?"\nkind = "integer"\nanswer = 1\n', "needs a hint"),
        ('[A_B]\nquestion = "q?"\nkind = "integer"\nanswer = 1\nhint = "h"\n', "lowercase"),
        ('[a-b]\nquestion = "q?"\nkind = "integer"\nanswer = 1\nhint = "h"\nkey = 2\n', "unknown"),
        ('[a-b]\nquestion = "q?"\nkind = "integer"\nanswer = 1.5\nhint = "h"\n', "must be an int"),
    ],
)
def test_the_bank_rejects_bad_entries_naming_file_and_id(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "01_x.toml").write_text(text)
    with pytest.raises(ValueError, match=words) as error:
        quiz_bank(tmp_path)
    assert "01_x.toml" in str(error.value)


def test_the_bank_rejects_an_id_used_twice(tmp_path: Path) -> None:
    entry = '[same]\nquestion = "q?"\nkind = "integer"\nanswer = 1\nhint = "h"\n'
    (tmp_path / "01_a.toml").write_text(entry)
    (tmp_path / "02_b.toml").write_text(entry)
    with pytest.raises(ValueError, match="'same' is in both 01_a and 02_b"):
        quiz_bank(tmp_path)
