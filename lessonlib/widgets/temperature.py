"""The temperature explorer: bars of P(next char) under temperature and top-k (ipywidgets + ipympl).

A thin view over `lessonlib.widgets.temperature_state`: each control event is one transition and
one redraw of the existing artists. Show it as a cell's last expression; the constructor displays
nothing. Dragging a bar top has a keyboard twin (the token dropdown and the probability slider).
A vocabulary of more than `MAX_BARS` tokens (a token model's) is drawn as its `MAX_BARS` highest
source logits, and a note says how much the others hold; temperature and top-k act on all V.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as widgets
from matplotlib.backend_bases import MouseButton, MouseEvent
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lessonlib.bigram import BIGRAM_SYMBOLS, BOUNDARY
from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import CharTokenizer, Tokenizer
from lessonlib.widgets.state import MAX_DRAWS, check_one_of, model_title
from lessonlib.widgets.temperature_state import TemperatureExplorerState
from lessonlib.widgets.view import check_model_and_tokenizer, reported, widget_canvas

__all__ = ["DEFAULT_PROMPT", "MAX_BARS", "SOURCES", "TemperatureExplorer"]


SOURCES = {"census names bigram": "bigram", "TinyTales GPT": "gpt"}  # switch label -> key
DEFAULT_PROMPT = "Once upon a time, there was a little kid named "  # the next char starts a name
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.05, 5.0  # the slider's range; 0 is the greedy toggle
DEFAULT_DRAWS = 100  # draws per press of the sample button
MAX_BARS = 50  # bars drawn at most (the character GPT's 50 all); a note sums up the others

# Colour names as the lessons' prose says them: light blue bars, a dark blue argmax, dashed dark
# grey truth outlines, coral ticks for the draws.
BAR_COLOR = "#7aa6c2"  # light blue
ARGMAX_COLOR = "#1f4e79"  # dark blue
TRUTH_COLOR = "#333333"  # dark grey, dashed
DRAW_COLOR = "#e6553a"  # coral
_TICK_STYLE = {"linestyle": "none", "marker": "_", "markeredgewidth": 2.5}  # the draws' ticks


def _tick_label(label: str) -> str:
    """A visible x tick label: the space character drawn as an open box."""
    return "\u2423" if label == " " else label


def _legend_handles(unit: str, *, truth: bool) -> list[Any]:
    """The legend's entries; `truth` is False where no source can have the TinyTales truth."""
    truth_handle = Patch(fill=False, edgecolor=TRUTH_COLOR, linestyle="--", label="TinyTales truth")
    return [
        Patch(color=BAR_COLOR, label=f"P(next {unit})"),
        Patch(color=ARGMAX_COLOR, label="argmax"),
        *([truth_handle] if truth else []),
        Line2D(
            [],
            [],
            **_TICK_STYLE,
            markersize=12,
            color=DRAW_COLOR,
            label="empirical frequency",
        ),
    ]


class TemperatureExplorer:
    """Bars of a next-token distribution that the learner reshapes with temperature and top-k."""

    def __init__(
        self,
        model: LanguageModel | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        source: str = "bigram",
        context_char: str = BOUNDARY,
        prompt: str = DEFAULT_PROMPT,
        seed: int = 0,
    ) -> None:
        check_model_and_tokenizer(model, tokenizer)
        check_one_of("source", source, SOURCES.values())
        # The GPT is loaded on the first switch to it when not given, so that the bigram view
        # works without the shipped checkpoint.
        self.model = model
        self.tokenizer = tokenizer
        self.seed = seed
        self._syncing = False  # True while the view itself sets control values
        self._dragging: int | None = None  # token id of the bar being dragged, if any
        self.shown: tuple[int, ...] = ()  # token ids of the bars drawn, left to right

        self.output = widgets.Output()
        self.status = widgets.HTML()
        self._build_controls(source, context_char, prompt)
        self._build_readouts()
        self.state = self._load_state()
        self._build_figure()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.source, self.context_dropdown, self.prompt_box]),
                self.canvas,
                self.readouts,
                widgets.HBox([self.temperature_slider, self.greedy_toggle]),
                self.top_k_slider,
                widgets.HBox([self.bar_dropdown, self.probability_slider]),
                widgets.HBox([self.draws_box, self.draw_button, self.reset_button]),
                self.status,
                self.output,
            ]
        )
        self._render()

    # ----- building ------------------------------------------------------------------------

    def _build_controls(self, source: str, context_char: str, prompt: str) -> None:
        """Create every control and connect each to its one transition."""
        # A model given is named on its button (a Hugging Face model by its name).
        options = [
            (label if key != "gpt" or self.model is None else model_title(self.model), key)
            for label, key in SOURCES.items()
        ]
        self.source = widgets.ToggleButtons(options=options, value=source, description="source")
        self.context_dropdown = widgets.Dropdown(
            options=list(BIGRAM_SYMBOLS),
            value=context_char,
            description="after",
            layout={"width": "150px"},
        )
        self.prompt_box = widgets.Text(
            value=prompt,
            description="prompt",
            continuous_update=False,  # rebuild after Enter or leaving the box, not per keystroke
            layout={"width": "520px"},
        )
        self._build_sampler_controls()
        self.source.observe(self._on_source, names="value")
        self.context_dropdown.observe(self._on_context, names="value")
        self.prompt_box.observe(self._on_context, names="value")
        self.temperature_slider.observe(self._on_temperature, names="value")
        self.greedy_toggle.observe(self._on_greedy, names="value")
        self.top_k_slider.observe(self._on_top_k, names="value")
        self.bar_dropdown.observe(self._on_bar_choice, names="value")
        self.probability_slider.observe(self._on_probability, names="value")
        self.draw_button.on_click(self._on_draw)
        self.reset_button.on_click(self._on_reset)

    def _build_sampler_controls(self) -> None:
        """The temperature, top-k, set-a-probability and draw controls."""
        self.temperature_slider = widgets.FloatLogSlider(
            value=1.0,
            base=10,
            # The slider snaps to min + k * step; with min = -1.3 (tau = 0.05) the grid holds
            # log10(1) = 0, so showing the slider in a browser does not nudge tau away from 1.
            min=-1.3,
            max=math.log10(TEMPERATURE_MAX),
            step=0.01,
            description="temperature",
            readout_format=".2f",
            layout={"width": "480px"},
        )
        self.greedy_toggle = widgets.ToggleButton(value=False, description="greedy (\u03c4 = 0)")
        self.top_k_slider = widgets.IntSlider(
            value=len(BIGRAM_SYMBOLS),
            min=1,
            max=len(BIGRAM_SYMBOLS),
            description="top-k",
            layout={"width": "480px"},
        )
        self.bar_dropdown = widgets.Dropdown(description="set P of", layout={"width": "160px"})
        self.probability_slider = widgets.FloatSlider(
            min=0.0,
            max=1.0,
            step=0.001,
            readout_format=".3f",
            continuous_update=False,
            description="to",
        )
        self.draws_box = widgets.BoundedIntText(
            value=DEFAULT_DRAWS,
            min=1,
            max=MAX_DRAWS,
            description="draws",
            layout={"width": "180px"},
        )
        # Labelled with the verb the lessons' prose uses; each press adds `draws` draws.
        self.draw_button = widgets.Button(description="draw", icon="random")
        self.reset_button = widgets.Button(description="reset", icon="undo")

    def _build_readouts(self) -> None:
        self.argmax_label = widgets.Label()
        self.p_argmax_label = widgets.Label()
        self.temperature_label = widgets.Label()
        self.top_k_label = widgets.Label()
        self.draws_label = widgets.Label()
        self.entropy_label = widgets.Label()
        self.readouts = widgets.HBox(
            [
                self.argmax_label,
                self.p_argmax_label,
                self.temperature_label,
                self.top_k_label,
                self.draws_label,
                self.entropy_label,
            ],
            layout=widgets.Layout(justify_content="space-between"),
        )

    def _load_state(self) -> TemperatureExplorerState:
        """A fresh state for the chosen source and context, at the current temperature."""
        if self.source.value == "bigram":
            state = TemperatureExplorerState.from_bigram(
                self.context_dropdown.value, seed=self.seed
            )
        else:
            if self.model is None:
                from lessonlib.checkpoint import load_model

                self.model, self.tokenizer = load_model()
            state = TemperatureExplorerState.from_model(
                self.model, self.tokenizer, self.prompt_box.value, seed=self.seed
            )
        return state.set_temperature(self._temperature())

    def _temperature(self) -> float:
        return 0.0 if self.greedy_toggle.value else float(self.temperature_slider.value)

    def _build_figure(self) -> None:
        self.figure = Figure(figsize=(9, 3.6), layout="constrained")
        self.canvas = widget_canvas(self.figure)
        self.axes = self.figure.add_subplot()
        self._bars_for: tuple = ()  # what the current artists were built for (unit, shown)
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_release_event", self._on_release)

    def _unit(self) -> str:
        """What one bar is a probability of: a character, or a token of a token model."""
        char = self.source.value == "bigram" or isinstance(self.tokenizer, CharTokenizer)
        return "char" if char else "token"

    def _build_artists(self, unit: str) -> None:
        """Draw the bars, truth outlines and draw ticks for the tokens in `self.shown`."""
        ax = self.axes
        ax.clear()
        size = len(self.shown)
        x = list(range(size))
        self.bars = ax.bar(x, [0.0] * size, width=0.8, color=BAR_COLOR)
        self.truth_bars = ax.bar(
            x,
            [0.0] * size,
            width=0.8,
            fill=False,
            edgecolor=TRUTH_COLOR,
            linewidth=1.2,
            linestyle="--",
        )
        # A tick about as wide as a bar: 9 inches of figure spread over `size` bars, in points.
        tick_width = max(4.0, min(16.0, 0.6 * 9 * 72 / size))
        (self.draw_ticks,) = ax.plot(
            x, [0.0] * size, **_TICK_STYLE, markersize=tick_width, color=DRAW_COLOR
        )
        labels = [_tick_label(self.state.labels[i]) for i in self.shown]
        # Characters fit side by side; a token's text (a word piece) needs to stand upright.
        upright = any(len(label) > 2 for label in labels)
        ax.set_xticks(x, labels, **({"rotation": 90} if upright else {}))
        ax.set_xlim(-0.6, size - 0.4)
        ax.set_ylabel(f"P(next {unit})  (drag bar tops)")
        ax.legend(
            handles=_legend_handles(unit, truth=unit == "char"),
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),  # outside the axes, so it never hides a bar
            fontsize="small",
        )
        self._bars_for = (unit, self.shown)

    # ----- rendering -----------------------------------------------------------------------

    def _render(self) -> None:
        """Bring artists, readouts and controls in line with the state, then redraw once."""
        state = self.state
        unit = self._unit()
        self.shown = tuple(state.shown_tokens(MAX_BARS).tolist())
        if self._bars_for != (unit, self.shown):
            self._build_artists(unit)
        shown = list(self.shown)
        probs = state.probs[shown].tolist()
        frequencies = state.frequencies[shown].tolist()
        for token, bar, p in zip(shown, self.bars, probs, strict=True):
            bar.set_height(p)
            bar.set_color(ARGMAX_COLOR if token == state.argmax else BAR_COLOR)
        truth = state.truth[shown].tolist() if state.truth is not None else [0.0] * len(shown)
        for bar, t in zip(self.truth_bars, truth, strict=True):
            bar.set_height(t)
            bar.set_visible(state.truth is not None)
        self.draw_ticks.set_ydata(frequencies)
        self.draw_ticks.set_visible(state.num_draws > 0)
        if self._dragging is None:
            # Rescaling mid-drag would move the bar away from the pointer.
            tallest = max(probs + truth + frequencies)
            self.axes.set_ylim(0, min(1.05, max(0.2, math.ceil(tallest * 11) / 10)))
        edited = "  (edited by hand)" if state.edited else ""
        self.axes.set_title(state.title + edited, fontsize="medium", loc="left")

        self.argmax_label.value = f"argmax: {state.argmax_label!r}"
        self.p_argmax_label.value = f"P(argmax) = {state.p_argmax:.3f}"
        self.temperature_label.value = (
            "\u03c4 = 0 (greedy)" if state.temperature == 0 else f"\u03c4 = {state.temperature:.2f}"
        )
        self.top_k_label.value = "top-k: off" if state.top_k is None else f"top-k: {state.top_k}"
        self.draws_label.value = f"draws: {state.num_draws}"
        self.entropy_label.value = f"entropy: {state.entropy:.2f} nats"
        self._sync_controls()
        self.canvas.draw_idle()

    def _sync_controls(self) -> None:
        """Set the controls that mirror the state, without firing their transitions."""
        state = self.state
        self._syncing = True
        try:
            self.context_dropdown.layout.display = "" if self.source.value == "bigram" else "none"
            self.prompt_box.layout.display = "" if self.source.value == "gpt" else "none"
            if self.top_k_slider.max != state.vocab_size:
                self.top_k_slider.max = state.vocab_size
            self.top_k_slider.value = state.top_k or state.vocab_size
            # The dropdown offers the bars drawn, as dragging does.
            options = [(f"{i}: {state.labels[i]!r}", i) for i in self.shown]
            if list(self.bar_dropdown.options) != options:
                self.bar_dropdown.options = options
                self.bar_dropdown.value = (
                    state.argmax if state.argmax in self.shown else self.shown[0]
                )
            self.probability_slider.value = float(state.probs[self.bar_dropdown.value])
            self.status.value = self._note()
        finally:
            self._syncing = False

    def _note(self) -> str:
        """The status line: why there is no truth, or how much the tokens not drawn hold."""
        state = self.state
        if len(self.shown) < state.vocab_size:
            hidden = state.hidden(MAX_BARS)
            draws = ""
            if state.num_draws:
                draws = f" ({int(state.counts[hidden].sum())} of the {state.num_draws} draws)"
            return (
                f"drawn: the {len(self.shown)} highest logits of {state.vocab_size}, the other "
                f"{state.vocab_size - len(self.shown)} hold {state.hidden_mass(MAX_BARS):.3g} "
                f"at these settings{draws}"
            )
        if self.source.value == "gpt" and state.truth is None and self._unit() == "char":
            return "No TinyTales truth: this prompt is not a possible story prefix."
        return ""

    def _update(self, state: TemperatureExplorerState) -> None:
        """Make `state` current and redraw."""
        self.state = state
        self._render()

    # ----- public actions (also what the controls call) ------------------------------------

    def drag_bar(self, index: int, q: float) -> None:
        """Set token `index`'s bar to probability `q` (clipped to [0, 1]), as a mouse drag does."""
        q = min(1.0, max(0.0, float(q)))
        self._update(self.state.set_probability(index, q))

    # ----- control callbacks ---------------------------------------------------------------

    @reported
    def _on_source(self, change: dict) -> None:
        if self._syncing:
            return
        self._update(self._load_state())

    @reported
    def _on_context(self, change: dict) -> None:
        if self._syncing:
            return
        try:
            state = self._load_state()
        except ValueError as error:  # e.g. a character the tokenizer does not know
            self.status.value = f"<b>Prompt not used:</b> {error}"
            return
        # A new context keeps the sampler settings; only the distribution changes.
        self._update(state.set_top_k(self.state.top_k))

    @reported
    def _on_temperature(self, change: dict) -> None:
        if self._syncing:
            return
        # Moving the slider leaves greedy mode: the slider's value is the temperature again.
        self._syncing = True
        try:
            self.greedy_toggle.value = False
        finally:
            self._syncing = False
        self._update(self.state.set_temperature(float(change["new"])))

    @reported
    def _on_greedy(self, change: dict) -> None:
        if self._syncing:
            return
        self._update(self.state.set_temperature(self._temperature()))

    @reported
    def _on_top_k(self, change: dict) -> None:
        if self._syncing:
            return
        self._update(self.state.set_top_k(int(change["new"])))

    @reported
    def _on_bar_choice(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        self._syncing = True
        try:
            self.probability_slider.value = float(self.state.probs[change["new"]])
        finally:
            self._syncing = False

    @reported
    def _on_probability(self, change: dict) -> None:
        if self._syncing:
            return
        self.drag_bar(self.bar_dropdown.value, float(change["new"]))

    @reported
    def _on_draw(self, button: widgets.Button) -> None:
        self._update(self.state.draw(int(self.draws_box.value)))

    @reported
    def _on_reset(self, button: widgets.Button) -> None:
        self._syncing = True
        try:
            self.temperature_slider.value = 1.0
            self.greedy_toggle.value = False
        finally:
            self._syncing = False
        self._update(self.state.reset())

    # ----- mouse: drag a bar top -----------------------------------------------------------

    def _bar_under(self, event: MouseEvent) -> int | None:
        """Token id of the bar column under a mouse event inside the axes, else None."""
        if event.inaxes is not self.axes or event.xdata is None:
            return None
        position = round(event.xdata)
        return self.shown[position] if 0 <= position < len(self.shown) else None

    def _height_at(self, event: MouseEvent) -> float:
        """The probability at the pointer's height, even when it has left the axes."""
        _, y = self.axes.transData.inverted().transform((event.x, event.y))
        return float(y)

    @reported
    def _on_press(self, event: MouseEvent) -> None:
        if event.button != MouseButton.LEFT:
            return
        index = self._bar_under(event)
        if index is None:
            return
        self._dragging = index
        self.drag_bar(index, self._height_at(event))

    @reported
    def _on_motion(self, event: MouseEvent) -> None:
        if self._dragging is not None:
            self.drag_bar(self._dragging, self._height_at(event))

    @reported
    def _on_release(self, event: MouseEvent) -> None:
        if self._dragging is not None:
            self._dragging = None
            self._render()  # now the y axis may rescale to the new bars

    # ----- display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """Jupyter shows the explorer's widget when the explorer ends a cell."""
        return self.widget._repr_mimebundle_(**kwargs)
