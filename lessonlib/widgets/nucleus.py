"""The nucleus explorer: sorted bars, cumulative mass and a draggable p line (ipywidgets + ipympl).

A thin view over `lessonlib.widgets.nucleus_state`: each control event is one transition and one
redraw of the existing artists. Show it as a cell's last expression; the constructor displays
nothing. The p slider is the keyboard twin of the p line. At most `MAX_BARS` bars are drawn; a
note says how much the others hold (top-p is computed over every token).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import Tokenizer
from lessonlib.widgets.nucleus_state import (
    DEFAULT_P,
    GPT_SOURCE,
    NucleusExplorerState,
    built_in_distributions,
    from_model,
    initial_state,
)
from lessonlib.widgets.view import (
    check_model_and_tokenizer,
    check_on_slider,
    reported,
    set_quietly,
    widget_canvas,
)

__all__ = ["DEFAULT_PROMPT", "MAX_BARS", "NucleusExplorer"]


MAX_BARS = 30  # bars drawn at most; the GPT's remaining tokens are summarised in a note
DEFAULT_PROMPT = "Once upon a time, there was a little kid named "  # the model must pick a name
P_MIN = 0.01  # the slider's and the drag's lower end: p must stay > 0
P_STEP = 0.01  # the slider's grid

# The colours' names as the lessons' prose says them (the same hex means the same word everywhere).
KEPT_COLOR = "#2a7ab0"  # blue
MASKED_COLOR = "#c9c9c9"  # grey
CUMULATIVE_COLOR = "#1b9e77"  # green
P_LINE_COLOR = "#d4a017"  # gold
RENORMALISED_COLOR = "#e6553a"  # coral, the word lessons 02 and 07 use for this colour


def _legend_handles() -> list[Any]:
    return [
        Patch(color=KEPT_COLOR, label="kept"),
        Patch(color=MASKED_COLOR, label="masked"),
        Line2D([], [], color=CUMULATIVE_COLOR, linestyle="--", label="cumulative mass"),
        Line2D([], [], color=P_LINE_COLOR, linewidth=2.5, label="p (drag me)"),
        Line2D(
            [],
            [],
            color=RENORMALISED_COLOR,
            linestyle="none",
            marker="_",
            markersize=12,
            markeredgewidth=2.5,
            label="renormalised",
        ),
    ]


class NucleusExplorer:
    """Sorted bars of a distribution, its cumulative mass, and the nucleus a p line cuts off."""

    def __init__(
        self,
        model: LanguageModel | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        prompt: str = DEFAULT_PROMPT,
        source: str = "confident",
        p: float = DEFAULT_P,
    ) -> None:
        check_model_and_tokenizer(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        distributions = built_in_distributions()
        if model is not None:
            distributions[GPT_SOURCE] = from_model(model, tokenizer, prompt)
        self.state: NucleusExplorerState = initial_state(distributions, source=source, p=p)
        # A p the slider cannot show would be snapped (changed) by the slider, and the readout
        # would then disagree with the nucleus drawn.
        check_on_slider("p", self.state.p, P_MIN, 1.0, P_STEP)
        self._dragging = False

        self.output = widgets.Output()
        self._build_controls(list(distributions), prompt, has_model=model is not None)
        self._build_figure()
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_release_event", self._on_release)
        readouts = [self.p_label, self.size_label, self.kept_label, self.mass_label]
        self.widget = widgets.VBox(
            [
                self.source,
                self.prompt_box,
                self.canvas,
                widgets.HBox([self.p_slider, self.reset_button]),
                widgets.HBox(readouts),
                self.note_label,
                self.output,
            ]
        )
        self.render()

    def _build_controls(self, names: list[str], prompt: str, *, has_model: bool) -> None:
        """Create every control and readout, and connect each control to its one transition."""
        self.source = widgets.ToggleButtons(
            options=names, value=self.state.source, description="distribution"
        )
        self.prompt_box = widgets.Text(
            value=prompt,
            description="GPT prompt",
            continuous_update=False,  # recompute when the learner presses Enter or leaves the box
            disabled=not has_model,
            layout=widgets.Layout(width="34em"),
        )
        self.p_slider = widgets.FloatSlider(
            value=self.state.p,
            min=P_MIN,
            max=1.0,
            step=P_STEP,
            description="p",
            readout_format=".2f",
            # The p-line drag sets this slider from the kernel at every mouse move; a
            # continuously updating slider echoes those values back late and would undo the
            # end of the drag (seen in Chromium by tests/browser).
            continuous_update=False,
        )
        self.reset_button = widgets.Button(description="reset")
        self.p_label = widgets.Label()
        self.size_label = widgets.Label()
        self.kept_label = widgets.Label()
        self.mass_label = widgets.Label()
        self.note_label = widgets.Label()
        for label in (self.p_label, self.size_label, self.kept_label, self.mass_label):
            label.layout.margin = "0 2em 0 0"  # space between the readouts
        self.source.observe(self._on_source, names="value")
        self.prompt_box.observe(self._on_prompt, names="value")
        self.p_slider.observe(self._on_p, names="value")
        self.reset_button.on_click(self._on_reset)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display as the widget, so that `explorer` works as a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)

    # Figure: built once; render() only updates these artists.

    def _build_figure(self) -> None:
        self.figure = Figure(figsize=(8, 3.8), layout="constrained")
        self.canvas = widget_canvas(self.figure)
        self.ax = ax = self.figure.add_subplot()
        self.bars = ax.bar(range(MAX_BARS), [0.0] * MAX_BARS, width=0.8, color=KEPT_COLOR)
        (self.cumulative_line,) = ax.plot(
            [], [], drawstyle="steps-post", color=CUMULATIVE_COLOR, linestyle="--", linewidth=1.5
        )
        self.p_line = ax.axhline(self.state.p, color=P_LINE_COLOR, linewidth=2.5)
        # Just outside the right edge of the axes, at the line's height.
        self.p_text = ax.text(
            1.01, self.state.p, "", transform=ax.get_yaxis_transform(), ha="left", va="center"
        )
        (self.renormalised_marks,) = ax.plot(
            [],
            [],
            linestyle="none",
            marker="_",
            markersize=14,
            markeredgewidth=2.5,
            color=RENORMALISED_COLOR,
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("probability / mass")
        ax.set_xlabel("tokens, most likely first")
        ax.legend(
            handles=_legend_handles(),
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncols=5,
            frameon=False,
            fontsize="small",
        )

    def render(self) -> None:
        """Bring the artists and the readouts in line with the state; redraw once."""
        state = self.state
        shown = min(state.total, MAX_BARS)
        probs = state.sorted_probs[:shown].tolist()
        kept = state.sorted_kept[:shown].tolist()
        for i, bar in enumerate(self.bars):
            if i < shown:
                bar.set_height(probs[i])
                bar.set_color(KEPT_COLOR if kept[i] else MASKED_COLOR)
            bar.set_visible(i < shown)
        # A step per bar: over bar j the curve sits at the mass up to and including token j.
        cumulative = state.cumulative[:shown].tolist()
        self.cumulative_line.set_data(
            [i - 0.5 for i in range(shown + 1)], cumulative + cumulative[-1:]
        )
        self.p_line.set_ydata([state.p, state.p])
        self.p_text.set_y(state.p)
        self.p_text.set_text(f"p = {state.p:.2f}")
        renormalised = state.renormalised[:shown].tolist()
        kept_positions = [i for i in range(shown) if kept[i]]
        self.renormalised_marks.set_data(kept_positions, [renormalised[i] for i in kept_positions])
        self.ax.set_xlim(-0.6, shown - 0.4)
        labels = state.sorted_labels[:shown]
        # Characters fit side by side; a token's text (a word piece) needs to stand upright.
        upright = any(len(label) > 2 for label in labels)
        self.ax.set_xticks(range(shown), labels, fontsize="small", rotation=90 if upright else 0)

        readout = state.readout()
        self.p_label.value = readout["p"]
        self.size_label.value = readout["size"]
        self.kept_label.value = readout["kept"]
        self.mass_label.value = readout["mass"]
        self.note_label.value = self._note(shown)
        self.canvas.draw_idle()

    def _note(self, shown: int) -> str:
        fold = self.state.fold(shown)
        description = self.state.distribution.description
        if fold.count == 0:
            return f"{description}; all {self.state.total} tokens drawn"
        return (
            f"{description}; drawn: the top {shown} of {self.state.total} tokens, the other "
            f"{fold.count} hold mass {fold.mass:.4f} ({fold.kept} of them kept)"
        )

    # Transitions: one per control event, then one render.

    def drag_p_line(self, y: float) -> None:
        """Move the p line to height `y` (clipped to the slider's range), as a mouse drag does."""
        # Through the slider, so that slider and line never disagree and render runs once.
        self.p_slider.value = min(max(round(float(y), 2), P_MIN), 1.0)

    @reported
    def _on_p(self, change: dict[str, Any]) -> None:
        self.state = self.state.set_p(change["new"])
        self.render()

    @reported
    def _on_source(self, change: dict[str, Any]) -> None:
        self.state = self.state.set_distribution(change["new"])
        self.render()

    @reported
    def _on_prompt(self, change: dict[str, Any]) -> None:
        if self.model is None:
            return
        try:
            distribution = from_model(self.model, self.tokenizer, change["new"])
        except ValueError as error:
            # A character outside the alphabet, or a prompt longer than a token model's
            # context: say so and keep the previous distribution.
            self.note_label.value = f"prompt not used: {error}"
            return
        self.state = self.state.with_distribution(distribution)
        if self.source.value == GPT_SOURCE:
            self.render()
        else:
            self.source.value = GPT_SOURCE  # its observer switches the state and renders

    @reported
    def _on_reset(self, _button: widgets.Button) -> None:
        self.state = self.state.reset()
        # The controls catch up without firing their observers, then one render.
        set_quietly(self.p_slider, self.state.p, self._on_p)
        set_quietly(self.source, self.state.source, self._on_source)
        self.render()

    # Mouse: a press on the axes puts the p line there and starts a drag; release ends it.

    @reported
    def _on_press(self, event: Any) -> None:
        if event.inaxes is not self.ax or event.button != 1 or event.ydata is None:
            return
        self._dragging = True
        self.drag_p_line(event.ydata)

    @reported
    def _on_motion(self, event: Any) -> None:
        if self._dragging and event.inaxes is self.ax and event.ydata is not None:
            self.drag_p_line(event.ydata)

    @reported
    def _on_release(self, _event: Any) -> None:
        self._dragging = False
