"""A small ipywidgets view of a quiz: a text box, a Check button, feedback, and a reveal button.

Grading and the count of tries are `lessonlib.teaching.quiz` (pure, unit-tested); this view only
maps the learner's events to a `QuizAttempts` and shows the verdict. A notebook shows a quiz
from the bank by its id, as the last expression of a cell::

    show_quiz("nucleus-size")

A wrong answer shows the quiz's hint; a right one shows the explanation. After `REVEAL_AFTER`
wrong tries a "Show answer" button appears. Pressing Enter in the text box checks too. Tests
drive it with `.answer_box`, `.check_button`, `.reveal_button` and `.feedback`, or headless
with `submit(text)` and `reveal()`. The constructor never calls display().
"""

from __future__ import annotations

import html
import traceback

import ipywidgets as widgets

from lessonlib.teaching.quiz import Grade, Quiz, QuizAttempts, load_quiz

__all__ = ["QuizView", "show_quiz"]

_STYLES = {
    True: "color: #1a7f37; font-weight: bold",  # green, and bold, so it does not rely on colour
    False: "color: #b35900; font-weight: bold",  # orange rather than red: a nudge, not an alarm
}
_PLACEHOLDERS = {
    "number": "a number, e.g. 0.5",
    "integer": "a whole number",
    "choice": "a letter, e.g. a",
}


def _question_html(quiz: Quiz) -> str:
    """The question, and for a "choice" quiz its options labelled (a), (b), ..."""
    lines = [f"<b>Quiz.</b> {html.escape(quiz.question)}"]
    for i, choice in enumerate(quiz.choices):
        lines.append(f"&nbsp;&nbsp;({chr(ord('a') + i)}) {html.escape(choice)}")
    return "<br>".join(lines)


def _feedback_html(result: Grade) -> str:
    """The verdict as HTML: a bold "Correct"/"Not quite" lead, then the rest of the message."""
    if result.correct:
        lead, rest = "Correct.", result.message.removeprefix("Correct.").strip()
    elif result.message.startswith("Not quite"):
        lead, rest = "Not quite.", result.message.removeprefix("Not quite:").strip()
    else:  # the response could not be read: no verdict, only how to write it
        lead, rest = result.message[:1].upper() + result.message[1:], ""
    style = _STYLES[result.correct]
    return f'<span style="{style}">{html.escape(lead)}</span> {html.escape(rest)}'.rstrip()


class QuizView:
    """A quiz the learner answers in a text box; feedback shows below after each check."""

    def __init__(self, quiz: Quiz) -> None:
        if not isinstance(quiz, Quiz):
            raise TypeError(
                f"quiz must be a lessonlib.teaching.quiz.Quiz, got {type(quiz).__name__}"
            )
        self.quiz = quiz
        self.attempts = QuizAttempts(quiz)
        self.question = widgets.HTMLMath(value=_question_html(quiz))
        # continuous_update=False: the value changes (and is checked) on Enter, not per keystroke.
        self.answer_box = widgets.Text(
            placeholder=_PLACEHOLDERS[quiz.kind],
            continuous_update=False,
            description="Answer:",
            layout=widgets.Layout(width="18em"),
        )
        self.check_button = widgets.Button(description="Check", tooltip="Check your answer")
        self.reveal_button = widgets.Button(
            description="Show answer",
            tooltip="Show the answer and why",
            layout=widgets.Layout(display="none"),  # appears after REVEAL_AFTER wrong tries
        )
        self.feedback = widgets.HTMLMath(value="")
        # Errors inside callbacks would otherwise vanish into the kernel log.
        self.errors = widgets.Output()
        self.check_button.on_click(lambda _button: self._guarded(self._check_if_new))
        self.reveal_button.on_click(lambda _button: self._guarded(self.reveal))
        self.answer_box.observe(lambda _change: self._guarded(self.check), names="value")
        controls = widgets.HBox([self.answer_box, self.check_button, self.reveal_button])
        self.widget = widgets.VBox([self.question, controls, self.feedback, self.errors])

    @property
    def last_grade(self) -> Grade | None:
        """The verdict on the latest answer, or None before the first."""
        return self.attempts.history[-1] if self.attempts.history else None

    def check(self) -> Grade:
        """Grade what is in the answer box and show the verdict; returns the Grade."""
        result = self.attempts.submit(self.answer_box.value)
        self.feedback.value = _feedback_html(result)
        # Shown once the learner may ask for the answer; hidden again once they found it.
        self.reveal_button.layout.display = None if self.attempts.can_reveal else "none"
        return result

    def _check_if_new(self) -> None:
        """The Check button: grade the box unless its text was graded last.

        The browser sends a widget's new value and a button's click separately, and holds the
        value back while an earlier update is unanswered, so a click can arrive before the text
        typed just before it. Grading the old text again would show a stale verdict; the new text
        is graded by the value observer when it arrives.
        """
        if self.answer_box.value != self.attempts.last_response:
            self.check()

    def submit(self, text: str) -> Grade:
        """Type `text` into the answer box and check it (for tests and demos); returns the Grade."""
        self.answer_box.value = text  # the observer checks a changed value
        return self.check()  # the same response again is not counted twice

    def reveal(self) -> str:
        """Show the answer and its explanation (only after enough tries); returns the text."""
        text = self.attempts.reveal()
        self.feedback.value = html.escape(text)
        return text

    def _guarded(self, action) -> None:
        """Run `action` from a widget event, printing any traceback into the view."""
        with self.errors:
            try:
                action()
            except Exception:  # noqa: BLE001 (any error: show it, do not lose it)
                traceback.print_exc()

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        """Render as the quiz widget when the view is a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)


def show_quiz(quiz_id: str) -> QuizView:
    """The view of the bank's quiz `quiz_id`, for the last line of a notebook cell."""
    return QuizView(load_quiz(quiz_id))
