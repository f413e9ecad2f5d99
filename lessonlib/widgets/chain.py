"""The chain viewer: the sampler's six stages in an order you choose, what each keeps, and the
smallest case where your order and a library's keep different tokens.

A thin view over `lessonlib.widgets.chain_state`: each control event is one transition and one
redraw. One row per stage, in the current order: its setting, up and down buttons, and the
tokens still possible after it; stages the chosen library lacks sit below, marked "not in this
library". The bars show the final distribution, outlined by the compared library's. Settings
the state refuses show as a line of text, never a traceback. Show it as a cell's last
expression; the constructor displays nothing.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lessonlib.generation import LanguageModel
from lessonlib.sampling import LIBRARY_ORDERS, STAGES
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.chain_state import (
    GPT_SOURCE,
    ChainViewerState,
    chain_sources,
    initial_state,
    source_from_model,
)
from lessonlib.widgets.pipeline import DEFAULT_PROMPT
from lessonlib.widgets.view import (
    check_model_and_tokenizer,
    check_on_slider,
    reported,
    widget_canvas,
)

__all__ = ["DEFAULT_PROMPT", "FIND_LABEL", "MAX_BARS", "SLIDERS", "ChainViewer"]

MAX_BARS = 20  # bars drawn at most; the note says how many tokens are not drawn
FIND_LABEL = "Find a counterexample"
# Per stage with a float setting: the slider's (low, high, step) and the value that means off.
# Every grid holds the usual settings, so a browser never snaps (changes) a value on display.
SLIDERS = {
    "temperature": (0.05, 5.0, 0.05, None),  # tau > 0; 1 changes nothing but is not "off"
    "top_p": (0.01, 1.0, 0.01, 1.0),
    "min_p": (0.0, 1.0, 0.01, 0.0),
    "typical_p": (0.01, 1.0, 0.01, 1.0),
    "eta_cutoff": (0.0, 0.2, 0.0001, 0.0),  # Hugging Face suggests 3e-4 to 2e-3
}
PLACEHOLDER = (
    f"Press \u201c{FIND_LABEL}\u201d to search for the smallest logits on which this order and "
    "the library compared with keep different tokens."
)

BAR_COLOR = "#2a7ab0"
OUTLINE_COLOR = "#555555"
ERROR_COLOR = "#b00020"


def _decimals(step: float) -> int:
    """Digits after the point that a value on a grid of `step` needs."""
    return len(f"{step:.10f}".rstrip("0").split(".")[1])


def _check_on_sliders(state: ChainViewerState) -> None:
    """Raise ValueError for a setting its slider cannot show: a browser would snap (change) it."""
    for stage, (low, high, step, _) in SLIDERS.items():
        value = state.settings[stage]
        if value is not None:
            check_on_slider(stage, value, low, high, step)


class ChainViewer:
    """The six sampler stages in an order of your choice, and what each keeps of one distribution."""

    def __init__(
        self,
        model: LanguageModel | None = None,
        tokenizer: CharTokenizer | None = None,
        *,
        source: str = "hand-made",
        prompt: str = DEFAULT_PROMPT,
        preset: str = "Hugging Face",
        compare_with: str = "llama.cpp",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        typical_p: float | None = None,
        eta_cutoff: float | None = None,
        seed: int = 0,
    ) -> None:
        check_model_and_tokenizer(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        sources = chain_sources()
        if model is not None:
            sources[GPT_SOURCE] = source_from_model(model, tokenizer, prompt)
        settings = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "typical_p": typical_p,
            "eta_cutoff": eta_cutoff,
        }
        self.state: ChainViewerState = initial_state(
            sources,
            source=source,
            preset=preset,
            compare_with=compare_with,
            settings=settings,
            seed=seed,
        )
        _check_on_sliders(self.state)
        self._syncing = False  # True while the view itself sets control values
        self._bars_for = -1  # number of bars the current artists were built for

        self.output = widgets.Output()
        self._build_controls(prompt, model is not None)
        self._build_figure()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.source_buttons, self.prompt_box]),
                widgets.HBox([self.preset_dropdown, self.order_label]),
                self.rows_box,
                self.error_label,
                self.canvas,
                self.final_label,
                self.note_label,
                widgets.HBox([self.compare_dropdown, self.find_button, self.show_button]),
                self.finder_html,
                self.output,
            ]
        )
        self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display as the widget, so that `viewer` works as a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)

    # ----- building ------------------------------------------------------------------------------

    def _build_controls(self, prompt: str, has_model: bool) -> None:
        """Create every control, set to the state, and connect each to its transition."""
        state = self.state
        self.source_buttons = widgets.ToggleButtons(
            options=list(state.sources), value=state.source, description="logits"
        )
        self.prompt_box = widgets.Text(
            value=prompt,
            description="GPT prompt",
            continuous_update=False,  # rebuild after Enter or leaving the box, not per keystroke
            disabled=not has_model,
            layout=widgets.Layout(width="34em"),
        )
        self.preset_dropdown = widgets.Dropdown(
            options=list(LIBRARY_ORDERS),
            value=state.preset,
            description="preset",
            style={"description_width": "initial"},
        )
        self.order_label = widgets.Label()
        self.rows: dict[str, widgets.HBox] = {}
        self.positions: dict[str, widgets.Label] = {}
        self.sliders: dict[str, widgets.ValueWidget] = {}
        self.up_buttons: dict[str, widgets.Button] = {}
        self.down_buttons: dict[str, widgets.Button] = {}
        self.readouts: dict[str, widgets.Label] = {}
        for stage in STAGES:
            self._build_row(stage)
        self.rows_box = widgets.VBox()
        self.error_label = widgets.HTML()
        self.final_label = widgets.Label()
        self.note_label = widgets.Label()
        self.compare_dropdown = widgets.Dropdown(
            options=list(LIBRARY_ORDERS),
            value=state.compare_with,
            description="compare with",
            style={"description_width": "initial"},
        )
        self.find_button = widgets.Button(
            description=FIND_LABEL, icon="search", layout=widgets.Layout(width="auto")
        )
        self.show_button = widgets.Button(description="show this case", icon="eye")
        self.finder_html = widgets.HTML()
        self._connect_controls()

    def _build_row(self, stage: str) -> None:
        """One stage's row: position, setting, up and down buttons, what is kept after it."""
        slider_style = {"description_width": "7.5em"}  # room for "temperature"
        slider_layout = widgets.Layout(width="28em")
        if stage == "top_k":
            slider = widgets.IntSlider(
                min=1, max=self.state.vocab_size, description=stage, style=slider_style,
                layout=slider_layout,
            )  # fmt: skip
        else:
            low, high, step, _ = SLIDERS[stage]
            slider = widgets.FloatSlider(
                min=low, max=high, step=step, description=stage, style=slider_style,
                layout=slider_layout, readout_format=f".{_decimals(step)}f",
            )  # fmt: skip
        self.sliders[stage] = slider
        self.positions[stage] = widgets.Label(layout=widgets.Layout(width="2em"))
        button_layout = widgets.Layout(width="6em")
        self.up_buttons[stage] = widgets.Button(
            description="up", icon="arrow-up", layout=button_layout
        )
        self.down_buttons[stage] = widgets.Button(
            description="down", icon="arrow-down", layout=button_layout
        )
        self.readouts[stage] = widgets.Label()
        self.rows[stage] = widgets.HBox(
            [
                self.positions[stage],
                slider,
                self.up_buttons[stage],
                self.down_buttons[stage],
                self.readouts[stage],
            ]
        )

    def _connect_controls(self) -> None:
        """Connect each control to its one transition."""
        self.source_buttons.observe(self._on_source, names="value")
        self.prompt_box.observe(self._on_prompt, names="value")
        self.preset_dropdown.observe(self._on_preset, names="value")
        self.compare_dropdown.observe(self._on_compare_with, names="value")
        for stage in STAGES:
            self.sliders[stage].observe(functools.partial(self._on_setting, stage), names="value")
            self.up_buttons[stage].on_click(functools.partial(self._on_move, stage, -1))
            self.down_buttons[stage].on_click(functools.partial(self._on_move, stage, +1))
        self.find_button.on_click(self._on_find)
        self.show_button.on_click(self._on_show)

    def _build_figure(self) -> None:
        self.figure = Figure(figsize=(8.5, 3.0), layout="constrained")
        self.canvas = widget_canvas(self.figure)
        self.axes = self.figure.subplots()

    def _build_artists(self, shown: int) -> None:
        """Bars of the final distribution and outlines of the compared library's, `shown` each."""
        ax = self.axes
        ax.clear()
        x = list(range(shown))
        self.bars = ax.bar(x, [0.0] * shown, width=0.8, color=BAR_COLOR)
        self.outlines = ax.bar(
            x, [0.0] * shown, width=0.8, fill=False, edgecolor=OUTLINE_COLOR, linestyle="--",
            linewidth=1.0,
        )  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, shown - 0.4)
        ax.set_ylabel("P")
        self._bars_for = shown

    # ----- rendering -----------------------------------------------------------------------------

    def render(self) -> None:
        """Bring rows, readouts, bars and controls in line with the state; redraw once."""
        state = self.state
        self._render_rows()
        self.order_label.value = state.order_text()
        self.final_label.value = state.final_text()
        self.note_label.value = self._note()
        finder = state.finder
        if finder is None:
            self.finder_html.value = html.escape(PLACEHOLDER)
        else:
            self.finder_html.value = f'<pre style="margin: 0">{html.escape(finder.text)}</pre>'
        self.show_button.disabled = finder is None or finder.case is None
        self._render_bars()
        self._sync_controls()
        self.canvas.draw_idle()

    def _render_rows(self) -> None:
        """Rows in the current order, then the stages it lacks; buttons only where they move."""
        state = self.state
        shown = state.order + state.absent
        rows = tuple(self.rows[stage] for stage in shown)
        if self.rows_box.children != rows:
            self.rows_box.children = rows
        last = len(state.order) - 1
        for position, stage in enumerate(shown):
            present = stage in state.order
            self.positions[stage].value = f"{position + 1}." if present else "\u2013"
            self.sliders[stage].disabled = not present
            self.up_buttons[stage].disabled = not present or position == 0
            self.down_buttons[stage].disabled = not present or position == last
            self.readouts[stage].value = state.stage_readout(stage)

    def _render_bars(self) -> None:
        state = self.state
        shown = min(state.vocab_size, MAX_BARS)
        if self._bars_for != shown:
            self._build_artists(shown)
        ranking = state.ranking[:shown]
        for bar, height in zip(self.bars, state.final_probs[ranking].tolist()):
            bar.set_height(height)
        other = state.compare_probs
        for position, outline in enumerate(self.outlines):
            outline.set_visible(other is not None)
            if other is not None:
                outline.set_height(float(other[ranking[position]]))
        kept = int((state.final_probs > 0).sum())
        self.axes.set_title(
            f"final distribution in {state.order_name}: {kept} of {state.vocab_size} kept",
            loc="left",
            fontsize="small",
        )
        labels = [state.labels[i] for i in ranking.tolist()]
        self.axes.set_xticks(range(shown), labels, fontsize="small")
        compared = f"{state.compare_with}'s order"
        if other is None:
            compared += " (lacks a stage on here)"
        self.axes.legend(
            handles=[
                Patch(color=BAR_COLOR, label=state.order_name),
                Patch(fill=False, edgecolor=OUTLINE_COLOR, linestyle="--", label=compared),
            ],
            loc="upper right",
            fontsize="small",
            frameon=False,
        )

    def _note(self) -> str:
        state = self.state
        description = state.distribution.description
        if state.vocab_size <= MAX_BARS:
            return description
        return f"{description}; drawn: the {MAX_BARS} highest logits of {state.vocab_size}"

    def _sync_controls(self) -> None:
        """Set the controls that mirror the state, without firing their transitions."""
        state = self.state
        self._syncing = True
        try:
            if tuple(self.source_buttons.options) != tuple(state.sources):
                self.source_buttons.options = list(state.sources)
            self.source_buttons.value = state.source
            self.preset_dropdown.value = state.preset
            self.compare_dropdown.value = state.compare_with
            top_k = self.sliders["top_k"]
            if top_k.max != state.vocab_size:
                top_k.max = state.vocab_size
            top_k.value = state.settings["top_k"] or state.vocab_size
            for stage, (_, _, _, off) in SLIDERS.items():
                value = state.settings[stage]
                self.sliders[stage].value = off if value is None else value
        finally:
            self._syncing = False

    def _update(self, transition: Callable[[], ChainViewerState]) -> None:
        """Make the state `transition()` returns current; show a refused one as a line of text."""
        try:
            state = transition()
        except ValueError as error:
            self.error_label.value = (
                f'<span style="color: {ERROR_COLOR}">not applied: {html.escape(str(error))}</span>'
            )
            self.render()  # put the controls back where the state is
            return
        self.error_label.value = ""
        self.state = state
        self.render()

    # ----- control callbacks: one transition each ------------------------------------------------

    @reported
    def _on_source(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._update(lambda: self.state.set_source(change["new"]))

    @reported
    def _on_prompt(self, change: dict[str, Any]) -> None:
        if self._syncing or self.model is None:
            return
        # A character outside the alphabet is refused with a line of text.
        self._update(
            lambda: self.state.with_source(
                source_from_model(self.model, self.tokenizer, change["new"])
            )
        )

    @reported
    def _on_preset(self, change: dict[str, Any]) -> None:
        # None is the empty choice the view shows for an order of one's own.
        if not self._syncing and change["new"] is not None:
            self._update(lambda: self.state.apply_preset(change["new"]))

    @reported
    def _on_compare_with(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._update(lambda: self.state.set_compare_with(change["new"]))

    @reported
    def _on_setting(self, stage: str, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        if stage == "top_k":
            value: float | None = int(change["new"])  # the right end, k = V, is off
        else:
            _, _, step, off = SLIDERS[stage]
            # Rounded to the grid: a slider reports values such as 0.30000000000000004.
            value = round(float(change["new"]), _decimals(step))
            value = None if value == off else value
        self._update(lambda: self.state.set_setting(stage, value))

    @reported
    def _on_move(self, stage: str, step: int, _button: widgets.Button) -> None:
        move = self.state.move_up if step < 0 else self.state.move_down
        self._update(lambda: move(stage))

    @reported
    def _on_find(self, _button: widgets.Button) -> None:
        self.finder_html.value = html.escape("Searching...")
        self._update(self.state.find_counterexample)

    @reported
    def _on_show(self, _button: widgets.Button) -> None:
        self._update(self.state.show_counterexample)
