"""A small ipywidgets view of a `lessonlib.quiz.Quiz`: a text box, a Check button, feedback.

The grading is `lessonlib.quiz.grade` (pure, unit-tested); this view only maps the learner's
events to it and shows the verdict. Show it as the last expression of a cell::

    QuizView(quiz)

(the view implements `_repr_mimebundle_`, so Jupyter renders its widget; `.widget` is the
same container, for embedding it in a larger layout). The constructor never calls display().
Pressing Enter in the text box checks the answer too. Tests and browser tests drive it with
`.answer_box`, `.check_button` and `.feedback`, or headless with `submit(text)`.
"""

from __future__ import annotations

import html
import traceback

import ipywidgets as widgets

from lessonlib.quiz import Grade, Quiz, grade

__all__ = ["QuizView"]

_STYLES = {
    True: "color: #1a7f37; font-weight: bold",  # green, and bold, so it does not rely on colour
    False: "color: #b35900; font-weight: bold",  # orange rather than red: a nudge, not an alarm
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
            raise TypeError(f"quiz must be a lessonlib.quiz.Quiz, got {type(quiz).__name__}")
        self.quiz = quiz
        self.last_grade: Grade | None = None
        placeholder = "a choice, e.g. a" if quiz.kind == "choice" else "a number, e.g. 0.5"
        self.question = widgets.HTMLMath(value=_question_html(quiz))
        # continuous_update=False: the value changes (and is checked) on Enter, not per keystroke.
        self.answer_box = widgets.Text(
            placeholder=placeholder,
            continuous_update=False,
            description="Answer:",
            layout=widgets.Layout(width="18em"),
        )
        self.check_button = widgets.Button(description="Check", tooltip="Check your answer")
        self.feedback = widgets.HTMLMath(value="")
        # Errors inside callbacks would otherwise vanish into the kernel log.
        self.errors = widgets.Output()
        self.check_button.on_click(lambda _button: self._guarded_check())
        self.answer_box.observe(lambda _change: self._guarded_check(), names="value")
        controls = widgets.HBox([self.answer_box, self.check_button])
        self.widget = widgets.VBox([self.question, controls, self.feedback, self.errors])

    def check(self) -> Grade:
        """Grade what is in the answer box and show the verdict; returns the Grade."""
        result = grade(self.quiz, self.answer_box.value)
        self.last_grade = result
        self.feedback.value = _feedback_html(result)
        return result

    def submit(self, text: str) -> Grade:
        """Type `text` into the answer box and check it (for tests and demos); returns the Grade."""
        self.answer_box.value = text
        return self.check()

    def _guarded_check(self) -> None:
        """Run `check` from a widget event, printing any traceback into the view."""
        with self.errors:
            try:
                self.check()
            except Exception:  # noqa: BLE001 (any error: show it, do not lose it)
                traceback.print_exc()

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        """Render as the quiz widget when the view is a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)
