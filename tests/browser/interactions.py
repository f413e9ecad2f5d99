"""What the browser test does with each notebook's widgets, keyed by notebook.

Each interaction drives one lessonlib view end to end (browser -> kernel -> browser) the way a
learner would, and returns a line saying what changed. `WIDGET_INTERACTIONS` lists the widget
interactions per notebook stem; every quiz a notebook shows (`show_quiz("id")`) is answered
wrong, wrong again and right by `quiz_interactions`, from the quiz bank. A notebook that
constructs a view (see `view_classes`) must have at least one interaction for it, which
`test_every_view_in_a_notebook_has_an_interaction` enforces. To cover a new widget, add its
notebook's stem with instances of the classes below (or a new class with a `view` attribute and
`__call__(lab) -> str`).

Views are found by what the learner sees: a slider's description, a button's label, a quiz's
question text, and the readout label's leading words.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from playwright.sync_api import Locator, expect

from lessonlib.sampling import LIBRARY_ORDERS, STAGES
from lessonlib.teaching.quiz import Quiz, answer_text, load_quiz
from tests.browser.jupyterlab import NotebookPage

UPDATE_TIMEOUT_MS = 15_000  # browser -> kernel -> browser on a busy 2-core machine


class Interaction(Protocol):
    view: str  # the lessonlib view class it drives

    def __call__(self, lab: NotebookPage) -> str: ...


def view_classes(widgets_dir: Path) -> set[str]:
    """Names of the view classes in lessonlib/widgets: classes defining `_repr_mimebundle_`."""
    names = set()
    for path in sorted(widgets_dir.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "_repr_mimebundle_"
                for item in node.body
            ):
                names.add(node.name)
    return names


def views_constructed(notebook: dict[str, Any], names: set[str]) -> set[str]:
    """Which of the view classes `names` a notebook's code cells call."""
    source = "\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"
    )
    return {name for name in names if re.search(rf"\b{re.escape(name)}\(", source)}


# ----- locating ----------------------------------------------------------------------------------


def _starts_with(text: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(text))


def _output_with(lab: NotebookPage, inner: Locator, what: str) -> Locator:
    """The one cell output that contains `inner`; fails unless exactly one does."""
    outputs = lab.page.locator(".jp-NotebookPanel .jp-OutputArea-output").filter(has=inner)
    # Nested outputs (inside an Output widget) do not contain the view's controls, so a match
    # is a whole view; more than one would make the test drive an arbitrary one.
    expect(outputs, f"{lab.path}: exactly one output with {what}").to_have_count(1)
    output = outputs.first
    output.scroll_into_view_if_needed()
    return output


def _slider(lab: NotebookPage, description: str) -> tuple[Locator, Locator]:
    """(the view's output, the slider) for the slider whose description is `description`."""
    label = lab.page.locator("label.widget-label").get_by_text(description, exact=True)
    slider = lab.page.locator(".widget-slider").filter(has=label)
    output = _output_with(lab, slider, f"a slider {description!r}")
    return output, output.locator(".widget-slider").filter(has=label)


def _readout(output: Locator, starts: str) -> Locator:
    """The label in `output` whose text starts with `starts`."""
    return output.locator("div.widget-label").filter(has_text=_starts_with(starts))


def _press(lab: NotebookPage, slider: Locator, key: str, presses: int) -> None:
    """Focus the slider's noUi handle and press `key`, as a keyboard user moves it."""
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(presses):
        lab.page.keyboard.press(key)


def _canvas_pixels(output: Locator) -> str:
    """A digest of the figure canvas's pixels in `output`, to see that it was redrawn."""
    return output.locator(".jupyter-matplotlib-canvas-div canvas").first.evaluate(
        """canvas => {
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
          let hash = 0;
          for (let i = 0; i < data.data.length; i += 3) hash = (hash * 31 + data.data[i]) | 0;
          return String(hash);
        }"""
    )


# ----- interactions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliderMovesReadout:
    """Press a key on a slider's handle: its readout and a readout label of the view change."""

    view: str
    slider: str  # the slider's description
    readout: str  # the leading words of the readout label that must change
    key: str = "ArrowLeft"
    presses: int = 10

    def __call__(self, lab: NotebookPage) -> str:
        output, slider = _slider(lab, self.slider)
        readout = _readout(output, self.readout)
        value = slider.locator(".widget-readout")
        before, value_before = readout.inner_text(), value.inner_text()
        pixels_before = _canvas_pixels(output)
        _press(lab, slider, self.key, self.presses)
        expect(value).not_to_have_text(value_before, timeout=UPDATE_TIMEOUT_MS)
        expect(readout).not_to_have_text(before, timeout=UPDATE_TIMEOUT_MS)
        _expect_redrawn(lab, output, pixels_before)
        return (
            f"{self.view}: {self.presses} x {self.key} on {self.slider!r} "
            f"({value_before} -> {value.inner_text()}): {before!r} -> {readout.inner_text()!r}"
        )


def _expect_redrawn(lab: NotebookPage, output: Locator, pixels_before: str) -> None:
    """Wait until the view's figure canvas shows other pixels than before."""
    for _ in range(int(UPDATE_TIMEOUT_MS / 250)):
        if _canvas_pixels(output) != pixels_before:
            return
        lab.page.wait_for_timeout(250)
    raise AssertionError(f"{lab.path}: the figure was not redrawn after the interaction")


@dataclass(frozen=True)
class DragLineMovesReadout:
    """Drag on the figure up near the top, then down near the bottom: slider and readout follow.

    A press puts the line under the pointer and the motion drags it (the NucleusExplorer's p
    line); the view's slider follows the line. After each drag the value must be the one a
    plain click at the drag's end point gives (a drag must not end anywhere else), the label
    that shows the value must agree with the slider, and the readout must differ between the
    two ends.
    """

    view: str
    slider: str  # the slider that mirrors the line's position
    readout: str  # the leading words of the readout label that must change
    mirror: str  # the leading words of a readout that shows the slider's value, e.g. "p = "

    def __call__(self, lab: NotebookPage) -> str:
        output, slider = _slider(lab, self.slider)
        readout, mirror = _readout(output, self.readout), _readout(output, self.mirror)
        value = slider.locator(".widget-readout")
        seen = [(value.inner_text(), readout.inner_text())]
        # Fractions of the canvas height: inside the axes, below the legend, above the ticks.
        for start, end in ((0.55, 0.15), (0.45, 0.85)):
            pixels_before = _canvas_pixels(output)
            self._drag(lab, output, start, end)
            dragged = _settled(lab, value, changed_from=seen[-1][0])
            self._drag(lab, output, end, end)  # a click where the drag ended
            clicked = _settled(lab, value)
            assert dragged == clicked, (
                f"{lab.path}: a drag to the point where a click gives {self.slider} = {clicked} "
                f"left {self.slider} = {dragged}: the drag ended on an earlier value (an "
                "ipywidgets slider with continuous_update=True sends each value the kernel sets "
                "back to the kernel, and a late one overwrites the last)"
            )
            assert clicked != seen[-1][0], f"{lab.path}: dragging did not move {self.slider!r}"
            _expect_redrawn(lab, output, pixels_before)
            # The label and the slider come from one state in the kernel: they must agree.
            expect(mirror).to_have_text(self.mirror + clicked)
            seen.append((clicked, readout.inner_text()))
        (_, _), (high, at_high), (low, at_low) = seen
        assert at_high != at_low, f"{lab.path}: {self.readout!r} is {at_high!r} at both ends"
        assert float(high) > float(low), f"{lab.path}: dragging up gave {high}, down gave {low}"
        return f"{self.view}: dragged the line: " + " -> ".join(f"{v}: {r!r}" for v, r in seen)

    @staticmethod
    def _drag(lab: NotebookPage, output: Locator, start: float, end: float) -> None:
        """Press at `start`, move to `end` (fractions of the canvas height), release."""
        box = output.locator(".jupyter-matplotlib-canvas-div").bounding_box()
        assert box is not None, f"{lab.path}: the figure is not visible"
        x = box["x"] + 0.5 * box["width"]
        mouse = lab.page.mouse
        mouse.move(x, box["y"] + start * box["height"])
        mouse.down()
        steps = 8 if end != start else 0
        for i in range(1, steps + 1):
            fraction = start + (end - start) * i / steps
            mouse.move(x, box["y"] + fraction * box["height"])
            lab.page.wait_for_timeout(30)  # about a mouse's event rate
        mouse.up()


def _settled(
    lab: NotebookPage, locator: Locator, changed_from: str | None = None, quiet_ms: int = 1000
) -> str:
    """The locator's text once it has not changed for `quiet_ms` (updates can trail a drag).

    With `changed_from`, first wait (a while, without failing) for the text to differ from it,
    so that a slow first update is not mistaken for quiet.
    """
    if changed_from is not None:
        for _ in range(int(UPDATE_TIMEOUT_MS / 250)):
            if locator.inner_text() != changed_from:
                break
            lab.page.wait_for_timeout(250)
    text, stable_ms = locator.inner_text(), 0
    for _ in range(int(UPDATE_TIMEOUT_MS / 250)):
        lab.page.wait_for_timeout(250)
        current = locator.inner_text()
        stable_ms = stable_ms + 250 if current == text else 0
        text = current
        if stable_ms >= quiet_ms:
            return text
    raise AssertionError(f"{lab.path}: {text!r} kept changing for {UPDATE_TIMEOUT_MS} ms")


@dataclass(frozen=True)
class StepperRowsGrow:
    """Click a stepper's button a few times: the step count and the reused cache rows grow."""

    view: str
    button: str  # the button's label
    steps: int = 3

    def __call__(self, lab: NotebookPage) -> str:
        button = lab.page.locator("button.widget-button").get_by_text(self.button, exact=True)
        output = _output_with(lab, button, f"a button {self.button!r}")
        button = output.locator("button.widget-button").get_by_text(self.button, exact=True)
        step = _readout(output, "step ")
        start = _number(step.inner_text(), r"step (\d+) /")
        seen = []
        for i in range(1, self.steps + 1):
            pixels_before = _canvas_pixels(output)
            button.click()
            expect(step).to_have_text(
                re.compile(rf"^step {start + i} / \d+$"), timeout=UPDATE_TIMEOUT_MS
            )
            _expect_redrawn(lab, output, pixels_before)
            computed = _readout(output, "cache on: ")
            # With the cache on, step t computes one row and reuses the t - 1 already cached.
            expect(computed).to_contain_text(f"reuses {start + i - 1}")
            seen.append(computed.inner_text())
        return f"{self.view}: {self.steps} x {self.button!r}: " + " | ".join(seen)


@dataclass(frozen=True)
class ChainPresetAndMove:
    """Pick a library in the chain viewer, move its first stage down, then search.

    Picking `preset` in the "preset" dropdown must name it in the order readout, mark each stage
    the library lacks "not in this library" in that stage's row, and redraw the figure (its
    title names the order). Pressing "down" in the first stage's row must swap the first two
    stages in the order readout. Pressing the search button must replace its prompt by a
    result. The notebook's viewer must start on another preset than `preset`.
    """

    view: str
    preset: str = "llama.cpp"

    def __call__(self, lab: NotebookPage) -> str:
        dropdown = self._dropdown(lab, lab.page)
        output = _output_with(lab, dropdown, "a dropdown 'preset'")
        order, final = _readout(output, "order: "), _readout(output, "final: ")
        order_before, final_before = order.inner_text(), final.inner_text()
        pixels_before = _canvas_pixels(output)
        self._dropdown(lab, output).locator("select").select_option(label=self.preset)
        expect(order).to_contain_text(f"({self.preset})", timeout=UPDATE_TIMEOUT_MS)
        _expect_redrawn(lab, output, pixels_before)
        stages = LIBRARY_ORDERS[self.preset]
        for stage in STAGES:
            if stage not in stages:
                expect(self._row(lab, output, stage)).to_contain_text("not in this library")
        final_preset = final.inner_text()
        self._row(lab, output, stages[0]).locator("button.widget-button").get_by_text(
            "down", exact=True
        ).click()
        swapped = f"order: {stages[1]} \u2192 {stages[0]} \u2192"
        expect(order).to_have_text(_starts_with(swapped), timeout=UPDATE_TIMEOUT_MS)
        button = output.locator("button.widget-button").get_by_text(
            "Find a counterexample", exact=True
        )
        result = output.locator(".widget-html pre")  # every search result is preformatted
        expect(result).to_have_count(0)
        button.click()
        expect(result).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        return (
            f"{self.view}: {order_before!r} -> {self.preset} -> {stages[0]} down: "
            f"{order.inner_text()!r}; {final_before!r} -> {final_preset!r} -> "
            f"{final.inner_text()!r}; search: {result.inner_text().splitlines()[0]!r}"
        )

    @staticmethod
    def _dropdown(lab: NotebookPage, scope: Any) -> Locator:
        """The dropdown whose description is "preset" (not "compare with") inside `scope`."""
        label = lab.page.locator("label.widget-label").get_by_text("preset", exact=True)
        return scope.locator(".widget-dropdown").filter(has=label)

    @staticmethod
    def _row(lab: NotebookPage, output: Locator, stage: str) -> Locator:
        """The row of `stage`: the box holding the slider whose description is the stage name."""
        label = lab.page.locator("label.widget-label").get_by_text(stage, exact=True)
        return output.locator(".widget-hbox").filter(has=label)


def _number(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{text!r} does not match {pattern!r}"
    return int(match[1])


def _question_words(question: str) -> str:
    """A stretch of the question as the browser renders it: plain words, outside any LaTeX."""
    plain = [part for i, part in enumerate(question.split("$")) if i % 2 == 0]
    longest = max(plain, key=len).strip()
    return longest[:40].strip()


def _wrong_answers(quiz: Quiz) -> list[str]:
    """Up to two answers that are wrong but readable, so that each counts as a try."""
    if quiz.kind == "choice":
        return [chr(ord("a") + i) for i, c in enumerate(quiz.choices) if c != quiz.answer][:2]
    step = 1 if quiz.kind == "integer" else max(0.1, 10 * quiz.tolerance)
    return [answer_text(replace(quiz, answer=quiz.answer + k * step)) for k in (1, 2)]


def _right_answer(quiz: Quiz) -> str:
    if quiz.kind == "choice":
        return chr(ord("a") + quiz.choices.index(quiz.answer))
    return answer_text(quiz)


def _commit(box: Locator) -> None:
    """Leave a text box so that its value reaches the kernel before a button is clicked."""
    # The quiz's box syncs its value on "change" (continuous_update=False). Blurring it first,
    # instead of letting the button's mousedown do it, sends the value strictly before the
    # click; once in about 150 quiz answers in CI the click's check read the previous value.
    box.press("Tab")


@dataclass(frozen=True)
class QuizFeedback:
    """Answer a quiz wrong (a hint), wrong again (the answer may be shown), then right.

    The first wrong answer goes through Enter, the others through the Check button; the hint
    must never contain the key. After two wrong answers "Show answer" must appear and reveal
    the key; a quiz with only one wrong choice goes straight to the right answer.
    """

    quiz_id: str
    view: str = "QuizView"

    def __call__(self, lab: NotebookPage) -> str:
        quiz = load_quiz(self.quiz_id)
        words = _question_words(quiz.question)
        text = lab.page.locator(".widget-htmlmath").filter(has_text=words)
        output = _output_with(lab, text, f"a quiz asking {words!r}")
        box = output.locator(".widget-text input")
        feedback = output.locator(".widget-htmlmath").nth(1)
        check = output.locator("button.widget-button").get_by_text("Check", exact=True)
        reveal = output.locator("button.widget-button").get_by_text("Show answer", exact=True)
        wrong = _wrong_answers(quiz)
        expect(reveal).to_be_hidden()
        box.fill(wrong[0])
        box.press("Enter")
        expect(feedback).to_contain_text("Not quite", timeout=UPDATE_TIMEOUT_MS)
        expect(feedback).to_contain_text("Hint:")
        seen = [f"{wrong[0]!r} -> Not quite + hint"]
        if len(wrong) > 1:
            expect(reveal).to_be_hidden()
            box.fill(wrong[1])
            _commit(box)
            check.click()
            expect(reveal).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
            reveal.click()
            expect(feedback).to_contain_text(
                f"The answer is {answer_text(quiz)}", timeout=UPDATE_TIMEOUT_MS
            )
            seen.append(f"{wrong[1]!r} -> Show answer")
        box.fill(_right_answer(quiz))
        _commit(box)
        check.click()
        expect(feedback).to_contain_text("Correct.", timeout=UPDATE_TIMEOUT_MS)
        seen.append(f"{_right_answer(quiz)!r} -> Correct")
        return f"quiz {self.quiz_id}: " + ", ".join(seen)


def quiz_interactions(notebook: dict[str, Any]) -> tuple[QuizFeedback, ...]:
    """One QuizFeedback per quiz the notebook shows with show_quiz("id"), in order."""
    source = "\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"
    )
    ids = re.findall(r"""\bshow_quiz\(\s*["']([a-z0-9-]+)["']""", source)
    return tuple(QuizFeedback(quiz_id) for quiz_id in dict.fromkeys(ids))


TEMPERATURE = SliderMovesReadout(
    view="TemperatureExplorer", slider="temperature", readout="P(argmax) = ", presses=30
)


# The widgets of each notebook (quizzes are added from the notebook itself: quiz_interactions).
@dataclass(frozen=True)
class SpeculativeRoundsGrow:
    """Click the speculative stepper's button a few times, then move its k slider one notch.

    Each click must add one round to the "rounds: " readout, with one target pass per round,
    name the round in the round readout ("round N: the draft proposed ..."), produce at least
    one token more, and fill the table with one verdict (kept, rejected, not judged) per
    proposal. Moving k must start again from the prompt: "rounds: 0".
    """

    view: str
    button: str = "step"  # the button's label
    steps: int = 3

    def __call__(self, lab: NotebookPage) -> str:
        button = lab.page.locator("button.widget-button").get_by_text(self.button, exact=True)
        output = _output_with(lab, button, f"a button {self.button!r}")
        button = output.locator("button.widget-button").get_by_text(self.button, exact=True)
        passes, tokens = _readout(output, "rounds: "), _readout(output, "tokens produced: ")
        start = _number(passes.inner_text(), r"rounds: (\d+) ")
        produced = _number(tokens.inner_text(), r"tokens produced: (\d+) ")
        verdicts = output.locator(".widget-html table tr td:last-child").filter(
            has_text=re.compile(r"^(kept|rejected|not judged)$")
        )
        seen = []
        for i in range(1, self.steps + 1):
            rounds = start + i
            button.click()
            counts = re.escape(f"rounds: {rounds} \u00b7 target passes: {rounds} \u00b7 ")
            expect(passes).to_have_text(re.compile("^" + counts), timeout=UPDATE_TIMEOUT_MS)
            named = _readout(output, f"round {rounds}: the draft proposed ")
            expect(named).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
            now = _number(tokens.inner_text(), r"tokens produced: (\d+) ")
            assert now > produced, f"{lab.path}: round {rounds} produced no token ({now})"
            proposed = _number(named.inner_text(), r"the draft proposed (\d+)")
            expect(verdicts).to_have_count(proposed, timeout=UPDATE_TIMEOUT_MS)
            produced = now
            seen.append(named.inner_text())
        _, slider = _slider(lab, "k")
        k = int(slider.locator(".widget-readout").inner_text())
        _press(lab, slider, "ArrowLeft" if k > 1 else "ArrowRight", 1)
        expect(passes).to_have_text(_starts_with("rounds: 0 \u00b7"), timeout=UPDATE_TIMEOUT_MS)
        return (
            f"{self.view}: {self.steps} x {self.button!r}: "
            + " | ".join(seen)
            + f"; k {k} -> {slider.locator('.widget-readout').inner_text()}: "
            + passes.inner_text()
        )


WIDGET_INTERACTIONS: dict[str, tuple[Interaction, ...]] = {
    "02_temperature": (TEMPERATURE,),
    "03_top_k": (TEMPERATURE,),
    "04_nucleus": (
        DragLineMovesReadout(
            view="NucleusExplorer", slider="p", readout="nucleus size", mirror="p = "
        ),
        # End: the handle jumps to p = 1, where every token is kept.
        SliderMovesReadout(
            view="NucleusExplorer", slider="p", readout="nucleus size", key="End", presses=1
        ),
    ),
    "05_pipeline_order": (
        SliderMovesReadout(view="PipelineViewer", slider="top-k", readout="\u03c4 = ", presses=2),
    ),
    "07_kv_cache": (StepperRowsGrow(view="KVCacheStepper", button="next \u25b6"),),
    "10_speculative_decoding": (SpeculativeRoundsGrow(view="SpeculativeStepper"),),
    "09_beyond_top_p": (ChainPresetAndMove(view="ChainViewer"),),
    # Both on the BPE token model: token labels, V = 512, bars capped. The temperature explorer
    # has a "top-k" slider too, so the pipeline viewer is driven by its own "\u03c4".
    "11_tokens_and_real_models": (
        SliderMovesReadout(view="PipelineViewer", slider="\u03c4", readout="\u03c4 = ", presses=2),
        TEMPERATURE,
    ),
}


def interactions_for(stem: str, notebook: dict[str, Any]) -> tuple[Interaction, ...]:
    """Everything the browser test drives in one notebook: its widgets, then its quizzes."""
    return WIDGET_INTERACTIONS.get(stem, ()) + quiz_interactions(notebook)
