"""The speculative decoding stepper: one round per click, the draft's proposals and the target's
verdicts side by side (ipywidgets).

A thin view over `lessonlib.widgets.speculative_state`: each control event is one transition
and one render. The text shows where each character came from: a proposal the target kept
(green), the target's resample after a rejection (red), the bonus token after a round whose
every proposal was kept (blue). The table shows the last round: each proposal's Q(x), P(x) and
min(1, P(x)/Q(x)), and what the target did with it. Settings the state refuses show as a line of
text, never a traceback. Show it as a cell's last expression; the constructor displays nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.speculative_state import (
    DEFAULT_K,
    DEFAULT_PROMPT,
    MAX_K,
    SpeculativeStepperState,
    StepperRound,
    initial_state,
)
from lessonlib.widgets.view import check_on_slider, reported

__all__ = ["DEFAULT_PROMPT", "SpeculativeStepper"]

TEMPERATURE_MIN, TEMPERATURE_MAX, TEMPERATURE_STEP = 0.0, 2.0, 0.05  # 0 is greedy

KEPT_COLOR = "#2e7d32"  # green: a proposal the target kept
REJECTED_COLOR = "#c62828"  # red: the rejected proposal, and the target's resample
BONUS_COLOR = "#1565c0"  # blue: the bonus token
UNJUDGED_COLOR = "#9e9e9e"  # grey: proposals after a rejection, never judged
ERROR_COLOR = "#b00020"
# Light backgrounds for the characters of the text, by where they came from.
TEXT_BACKGROUNDS = {"kept": "#c8e6c9", "resampled": "#ffcdd2", "bonus": "#bbdefb"}
VERDICT_COLORS = {"kept": KEPT_COLOR, "rejected": REJECTED_COLOR, "not judged": UNJUDGED_COLOR}
NOTE = (
    "green: a draft proposal the target kept \u00b7 red: rejected, and the target's resample "
    "from max(0, P - Q) \u00b7 blue: the bonus token, drawn from P after a round kept whole"
)


def _span(text: str, style: str) -> str:
    return f'<span style="{style}">{html.escape(text)}</span>'


def text_html(state: SpeculativeStepperState) -> str:
    """The prompt (grey) and the generated text, each character coloured by where it came from."""
    parts = [_span(state.prompt, "color: #777")]
    last = len(state.rounds) - 1
    for index, shown in enumerate(state.rounds):
        # The newest round is underlined, so that a click's effect is easy to find.
        underline = "; text-decoration: underline" if index == last else ""
        record = shown.record
        for position, token in enumerate(record.produced):
            if token == state.tokenizer.boundary_id:
                continue  # the end marker is not part of the text
            if position < record.accepted:
                origin = "kept"
            else:
                origin = "bonus" if record.bonus else "resampled"
            char = state.tokenizer.decode([token])
            parts.append(_span(char, f"background: {TEXT_BACKGROUNDS[origin]}{underline}"))
    end = " <i>(the end)</i>" if state.finished else ""
    return (
        '<div style="font-family: monospace; white-space: pre-wrap; line-height: 1.6">'
        + "".join(parts)
        + end
        + "</div>"
    )


def round_table_html(state: SpeculativeStepperState, shown: StepperRound | None) -> str:
    """A table of one round: each proposal with Q(x), P(x), min(1, P/Q) and the verdict, then
    the target's own token."""
    if shown is None:
        return "<i>No round yet: press step.</i>"
    cell = 'style="padding: 0 0.8em; text-align: {align}"'
    left, right = cell.format(align="left"), cell.format(align="right")
    header = "".join(
        f"<th {left if i in (0, 1, 5) else right}>{name}</th>"
        for i, name in enumerate(("#", "draft's x", "Q(x)", "P(x)", "min(1, P/Q)", "target"))
    )
    rows = []
    for i, proposal in enumerate(state.proposals(shown), start=1):
        color = VERDICT_COLORS[proposal.verdict]
        rows.append(
            f'<tr style="color: {color}">'
            f"<td {left}>{i}</td>"
            f"<td {left}><b>{html.escape(proposal.label)}</b></td>"
            f"<td {right}>{proposal.draft_prob:.3f}</td>"
            f"<td {right}>{proposal.target_prob:.3f}</td>"
            f"<td {right}>{proposal.keep_prob:.3f}</td>"
            f"<td {left}>{proposal.verdict}</td></tr>"
        )
    record = shown.record
    if record.token is not None:
        token = html.escape(state.label(record.token))
        if record.bonus:
            color, words = BONUS_COLOR, f"bonus token <b>{token}</b> drawn from P"
            odds = f"P = {shown.token_prob:.3f}"
        else:
            color, words = REJECTED_COLOR, f"resampled <b>{token}</b> from max(0, P - Q)"
            odds = f"residual probability {shown.token_prob:.3f}"
        rows.append(
            f'<tr style="color: {color}"><td {left}>+</td>'
            f'<td {left} colspan="4">{words}</td><td {left}>{odds}</td></tr>'
        )
    body = "".join(rows)
    return f'<table style="border-collapse: collapse"><tr>{header}</tr>{body}</table>'


class SpeculativeStepper:
    """Run speculative decoding one round at a time and see what the target keeps."""

    def __init__(
        self,
        target: LanguageModel,
        draft: LanguageModel,
        tokenizer: CharTokenizer,
        *,
        prompt: str = DEFAULT_PROMPT,
        k: int = DEFAULT_K,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.state: SpeculativeStepperState = initial_state(
            target, draft, tokenizer, prompt=prompt, k=k, temperature=temperature, seed=seed
        )
        # A browser slider snaps its value to the grid when shown, which would change tau.
        check_on_slider(
            "temperature", self.state.temperature, TEMPERATURE_MIN, TEMPERATURE_MAX,
            TEMPERATURE_STEP,
        )  # fmt: skip
        self._syncing = False  # True while the view itself sets control values
        self.output = widgets.Output()
        self._build_controls()
        self._build_readouts()
        self.widget = widgets.VBox(
            [
                self.prompt_box,
                widgets.HBox([self.k_slider, self.temperature_slider]),
                widgets.HBox([self.step_button, self.reset_button]),
                self.error_label,
                self.text_html,
                self.round_label,
                self.table_html,
                self.passes_label,
                self.tokens_label,
                self.acceptance_label,
                self.formula_label,
                self.status_label,
                self.note_label,
                self.output,
            ]
        )
        self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display as the widget, so that `stepper` works as a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)

    # ----- building ------------------------------------------------------------------------------

    def _build_controls(self) -> None:
        """Create the controls, set to the state, and connect each to its one transition."""
        state = self.state
        self.prompt_box = widgets.Text(
            value=state.prompt,
            description="prompt",
            continuous_update=False,  # start again after Enter or leaving the box, not per key
            layout=widgets.Layout(width="40em"),
        )
        self.k_slider = widgets.IntSlider(value=state.k, min=1, max=MAX_K, description="k")
        self.temperature_slider = widgets.FloatSlider(
            value=state.temperature,
            min=TEMPERATURE_MIN,
            max=TEMPERATURE_MAX,
            step=TEMPERATURE_STEP,
            description="\u03c4",
            readout_format=".2f",
        )
        narrow = widgets.Layout(width="8em")
        self.step_button = widgets.Button(description="step", icon="forward", layout=narrow)
        self.reset_button = widgets.Button(description="reset", icon="undo", layout=narrow)
        self.prompt_box.observe(self._on_prompt, names="value")
        self.k_slider.observe(self._on_k, names="value")
        self.temperature_slider.observe(self._on_temperature, names="value")
        self.step_button.on_click(self._on_step)
        self.reset_button.on_click(self._on_reset)

    def _build_readouts(self) -> None:
        self.error_label = widgets.HTML()
        self.text_html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.round_label = widgets.Label()
        self.table_html = widgets.HTML()
        self.passes_label = widgets.Label()
        self.tokens_label = widgets.Label()
        self.acceptance_label = widgets.Label()
        self.formula_label = widgets.Label()
        self.status_label = widgets.Label()
        self.note_label = widgets.Label(value=NOTE)

    # ----- rendering -----------------------------------------------------------------------------

    def render(self) -> None:
        """Bring the text, the table, the readouts and the controls in line with the state."""
        state = self.state
        readout = state.readout()
        self.text_html.value = text_html(state)
        self.round_label.value = readout["round"]
        self.table_html.value = round_table_html(state, state.last_round)
        self.passes_label.value = readout["passes"]
        self.tokens_label.value = readout["tokens"]
        self.acceptance_label.value = readout["acceptance"]
        self.formula_label.value = readout["formula"]
        self.status_label.value = readout["status"]
        self.step_button.disabled = not state.can_step
        self._sync_controls()

    def _sync_controls(self) -> None:
        """Set the sliders to the state without firing their transitions."""
        self._syncing = True
        try:
            self.k_slider.value = self.state.k
            self.temperature_slider.value = self.state.temperature
        finally:
            self._syncing = False

    def _update(self, transition: Callable[[], SpeculativeStepperState]) -> None:
        """Make the state `transition()` returns current; show a refused one as a line of text."""
        try:
            state = transition()
        except (TypeError, ValueError) as error:
            self.error_label.value = (
                f'<span style="color: {ERROR_COLOR}">not applied: {html.escape(str(error))}</span>'
            )
            self.render()  # the sliders go back to the state's settings
            return
        self.error_label.value = ""
        self.state = state
        self.render()

    # ----- control callbacks: one transition each ------------------------------------------------

    @reported
    def _on_step(self, _button: widgets.Button) -> None:
        self._update(self.state.step)

    @reported
    def _on_reset(self, _button: widgets.Button) -> None:
        self._update(self.state.reset)

    @reported
    def _on_k(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._update(lambda: self.state.set_k(int(change["new"])))

    @reported
    def _on_temperature(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            # Rounded to the grid: a slider reports values such as 0.30000000000000004.
            self._update(lambda: self.state.set_temperature(round(float(change["new"]), 2)))

    @reported
    def _on_prompt(self, change: dict[str, Any]) -> None:
        # A character outside the alphabet, or a prompt too long, is refused with a line of text.
        self._update(lambda: self.state.set_prompt(change["new"]))
