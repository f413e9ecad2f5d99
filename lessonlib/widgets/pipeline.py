"""The pipeline viewer: the same bars four times, after temperature, top-k, top-p and the draw.

A thin view over `lessonlib.widgets.pipeline_state`: each control event is one transition and one
redraw of the existing artists. Bars are sorted by logit, so a token keeps its place in all four
panels; panels 2-4 outline the stage before them. Show it as a cell's last expression; the
constructor displays nothing.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import Tokenizer
from lessonlib.widgets.pipeline_state import (
    GPT_SOURCE,
    PipelineViewerState,
    built_in_sources,
    initial_state,
    source_from_model,
)
from lessonlib.widgets.state import MAX_DRAWS
from lessonlib.widgets.view import (
    check_model_and_tokenizer,
    check_on_slider,
    reported,
    widget_canvas,
)

__all__ = ["DEFAULT_DRAWS", "DEFAULT_PROMPT", "MAX_BARS", "PipelineViewer"]

MAX_BARS = 20  # bars drawn at most; the note says how much mass the other tokens hold
DEFAULT_PROMPT = "Once upon a time, there was a little kid named "  # the next char starts a name
DEFAULT_DRAWS = 200  # draws per press of the draw button
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.05, 5.0  # the slider's range (greedy has no stages to show)
P_MIN = 0.01  # top-p must stay > 0; the slider's 1.0 means off
TEMPERATURE_STEP, P_STEP = 0.05, 0.01  # the sliders' grids: initial settings must lie on them

BAR_COLOR = "#2a7ab0"
OUTLINE_COLOR = "#555555"
DRAW_COLOR = "#e6553a"
LAST_DRAW_COLOR = "#8c1c0b"


def _check_on_sliders(state: PipelineViewerState) -> None:
    """Raise ValueError for a setting the sliders cannot show: a browser would snap (change) it."""
    check_on_slider(
        "temperature", state.temperature, TEMPERATURE_MIN, TEMPERATURE_MAX, TEMPERATURE_STEP
    )
    if state.top_p is not None:
        check_on_slider("top_p", state.top_p, P_MIN, 1.0, P_STEP)


class PipelineViewer:
    """Four panels of one next-token distribution: after temperature, top-k, top-p, and draws."""

    def __init__(
        self,
        model: LanguageModel | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        source: str = "hand-made",
        prompt: str = DEFAULT_PROMPT,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
    ) -> None:
        check_model_and_tokenizer(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        sources = built_in_sources()
        if model is not None:
            sources[GPT_SOURCE] = source_from_model(model, tokenizer, prompt)
        self.state: PipelineViewerState = initial_state(
            sources, source=source, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        )
        _check_on_sliders(self.state)
        self._syncing = False  # True while the view itself sets control values
        self._bars_for = -1  # number of bars the current artists were built for

        self.output = widgets.Output()
        self._build_controls(list(sources), prompt, model is not None)
        self._build_figure()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.source, self.prompt_box]),
                self.canvas,
                widgets.HBox([self.temperature_slider, self.top_k_slider, self.top_p_slider]),
                widgets.HBox([self.draws_box, self.draw_button, self.reset_button]),
                self.settings_label,
                self.note_label,
                self.output,
            ]
        )
        self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display as the widget, so that `viewer` works as a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)

    # ----- building ------------------------------------------------------------------------------

    def _build_controls(self, names: list[str], prompt: str, has_model: bool) -> None:
        """Create every control, set to the state."""
        state = self.state
        self.source = widgets.ToggleButtons(options=names, value=state.source, description="logits")
        self.prompt_box = widgets.Text(
            value=prompt,
            description="GPT prompt",
            continuous_update=False,  # rebuild after Enter or leaving the box, not per keystroke
            disabled=not has_model,
            layout=widgets.Layout(width="34em"),
        )
        self._build_sliders()
        self.draws_box = widgets.BoundedIntText(
            value=DEFAULT_DRAWS,
            min=1,
            max=MAX_DRAWS,
            description="draws",
            layout=widgets.Layout(width="14em"),
        )
        self.draw_button = widgets.Button(description="draw", icon="random")
        self.reset_button = widgets.Button(description="reset", icon="undo")
        self.settings_label = widgets.Label()
        self.note_label = widgets.Label()
        self._connect_controls()

    def _build_sliders(self) -> None:
        """The temperature, top-k and top-p sliders, set to the state."""
        state = self.state
        # Linear, on a grid of 0.05 that holds the usual settings (0.7, 1.0): a browser slider
        # snaps its value to the grid when shown, which would otherwise change tau by itself.
        self.temperature_slider = widgets.FloatSlider(
            value=state.temperature,
            min=TEMPERATURE_MIN,
            max=TEMPERATURE_MAX,
            step=TEMPERATURE_STEP,
            description="\u03c4",
            readout_format=".2f",
        )
        self.top_k_slider = widgets.IntSlider(
            value=state.top_k or state.vocab_size,
            min=1,
            max=state.vocab_size,
            description="top-k",
        )
        self.top_p_slider = widgets.FloatSlider(
            value=1.0 if state.top_p is None else state.top_p,
            min=P_MIN,
            max=1.0,
            step=P_STEP,
            description="top-p",
            readout_format=".2f",
        )

    def _connect_controls(self) -> None:
        """Connect each control to its one transition."""
        self.source.observe(self._on_source, names="value")
        self.prompt_box.observe(self._on_prompt, names="value")
        self.temperature_slider.observe(self._on_temperature, names="value")
        self.top_k_slider.observe(self._on_top_k, names="value")
        self.top_p_slider.observe(self._on_top_p, names="value")
        self.draw_button.on_click(self._on_draw)
        self.reset_button.on_click(self._on_reset)

    def _build_figure(self) -> None:
        self.figure = Figure(figsize=(8.5, 7.2), layout="constrained")
        self.canvas = widget_canvas(self.figure)
        self.axes = self.figure.subplots(4, 1, sharex=True, sharey=True)

    def _build_artists(self, shown: int) -> None:
        """Bars and outlines for `shown` tokens in each of the four panels."""
        x = list(range(shown))
        self.bars, self.outlines = [], []
        for index, ax in enumerate(self.axes):
            ax.clear()
            color = DRAW_COLOR if index == 3 else BAR_COLOR
            self.bars.append(ax.bar(x, [0.0] * shown, width=0.8, color=color))
            # Panel 1 has no stage before it; its outlines stay hidden.
            self.outlines.append(
                ax.bar(
                    x,
                    [0.0] * shown,
                    width=0.8,
                    fill=False,
                    edgecolor=OUTLINE_COLOR,
                    linestyle="--",
                    linewidth=1.0,
                    visible=index > 0,
                )
            )
            ax.set_ylim(0, 1.05)  # one scale for all panels: the bars compare honestly
            ax.set_ylabel("P" if index < 3 else "share")
        self.axes[0].set_xlim(-0.6, shown - 0.4)
        self.axes[0].legend(
            handles=[
                Patch(color=BAR_COLOR, label="after this stage"),
                Patch(fill=False, edgecolor=OUTLINE_COLOR, linestyle="--", label="stage before"),
                Patch(color=DRAW_COLOR, label="share of draws"),
                Patch(color=LAST_DRAW_COLOR, label="last draw"),
            ],
            loc="lower center",
            bbox_to_anchor=(0.5, 1.15),
            ncols=4,
            frameon=False,
            fontsize="small",
        )
        self._bars_for = shown

    # ----- rendering -----------------------------------------------------------------------------

    def render(self) -> None:
        """Bring the artists, titles and readouts in line with the state; redraw once."""
        state = self.state
        shown = min(state.vocab_size, MAX_BARS)
        if self._bars_for != shown:
            self._build_artists(shown)
        order = state.order[:shown]
        stages = state.stages
        panels = [
            stages.temperature[order].tolist(),
            stages.top_k[order].tolist(),
            stages.top_p[order].tolist(),
            state.frequencies[order].tolist(),
        ]
        # Each panel's outline is the panel above it; the draws are outlined by the final bars.
        outlines = [panels[0], panels[0], panels[1], panels[2]]
        last = state.last_draw
        for index in range(4):
            for position, (bar, height) in enumerate(zip(self.bars[index], panels[index])):
                bar.set_height(height)
                if index == 3:
                    is_last = last is not None and int(order[position]) == last
                    bar.set_color(LAST_DRAW_COLOR if is_last else DRAW_COLOR)
            for outline, height in zip(self.outlines[index], outlines[index]):
                outline.set_height(height)
        for ax, title in zip(self.axes, state.stage_titles()):
            ax.set_title(title, loc="left", fontsize="small")
        labels = [state.labels[i] for i in order.tolist()]
        # Characters fit side by side; a token's text (a word piece) needs to stand upright.
        upright = any(len(label) > 2 for label in labels)
        self.axes[3].set_xticks(
            range(shown), labels, fontsize="small", rotation=90 if upright else 0
        )
        self.settings_label.value = self._settings_text()
        self.note_label.value = self._note(shown)
        self._sync_controls()
        self.canvas.draw_idle()

    def _settings_text(self) -> str:
        state = self.state
        kept = " \u2192 ".join(str(count) for count in state.kept_counts())
        k_text = "off" if state.top_k is None else str(state.top_k)
        p_text = "off" if state.top_p is None else f"{state.top_p:.2f}"
        return (
            f"\u03c4 = {state.temperature:.2f}, top-k {k_text}, top-p {p_text}; "
            f"tokens possible: {kept}"
        )

    def _note(self, shown: int) -> str:
        state = self.state
        description = state.distribution.description
        if state.vocab_size <= shown:
            return description
        rest = state.order[shown:]
        mass = float(state.stages.temperature[rest].sum())
        return (
            f"{description}; drawn: the {shown} highest logits of {state.vocab_size}, the other "
            f"{state.vocab_size - shown} hold {mass:.3g} after temperature"
        )

    def _sync_controls(self) -> None:
        """Set the controls that mirror the state, without firing their transitions."""
        state = self.state
        self._syncing = True
        try:
            if self.top_k_slider.max != state.vocab_size:
                self.top_k_slider.max = state.vocab_size
            self.top_k_slider.value = state.top_k or state.vocab_size
            self.top_p_slider.value = 1.0 if state.top_p is None else state.top_p
            self.temperature_slider.value = state.temperature
            self.source.value = state.source
        finally:
            self._syncing = False

    def _update(self, state: PipelineViewerState) -> None:
        """Make `state` current and redraw."""
        self.state = state
        self.render()

    # ----- control callbacks: one transition each ------------------------------------------------

    @reported
    def _on_source(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._update(self.state.set_source(change["new"]))

    @reported
    def _on_prompt(self, change: dict[str, Any]) -> None:
        if self._syncing or self.model is None:
            return
        try:
            source = source_from_model(self.model, self.tokenizer, change["new"])
        except ValueError as error:
            # A character outside the alphabet, or a prompt longer than a token model's
            # context: say so and keep the previous distribution.
            self.note_label.value = f"prompt not used: {error}"
            return
        self._update(self.state.with_source(source))

    @reported
    def _on_temperature(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._update(self.state.set_temperature(float(change["new"])))

    @reported
    def _on_top_k(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            # The slider's right end (k = V) is "off".
            self._update(self.state.set_top_k(int(change["new"])))

    @reported
    def _on_top_p(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            # The slider's right end (p = 1) is "off".
            self._update(self.state.set_top_p(round(float(change["new"]), 2)))

    @reported
    def _on_draw(self, _button: widgets.Button) -> None:
        self._update(self.state.draw(int(self.draws_box.value)))

    @reported
    def _on_reset(self, _button: widgets.Button) -> None:
        self._update(self.state.reset())
