"""The KV cache stepper: K and V cache rows filling as tokens arrive (ipywidgets + ipympl).

A thin view over `lessonlib.widgets.kv_cache_state`: each control event is one transition and one
redraw of the existing artists. The cells hold the model's own keys and values (one head, the
first few dimensions); the row computed at this step is outlined in gold, and with the cache off
the recomputed older rows in coral. Show it as a cell's last expression.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lessonlib.model import GPT
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.kv_cache_state import (
    DEFAULT_DIMS,
    DEFAULT_TEXT,
    KVCacheStepperState,
    from_model,
)
from lessonlib.widgets.view import reported, set_quietly, widget_canvas

__all__ = ["KVCacheStepper"]

NEWEST_COLOR = "#d4a017"  # gold: the row this step computes for the new token
RECOMPUTED_COLOR = "#e6553a"  # coral: an old row recomputed because the cache is off
EMPTY_COLOR = "#ececec"  # cells of tokens that have not arrived yet


def _row_outlines(ax: Any, rows: int, dims: int) -> list[Rectangle]:
    """One hidden outline per row of a heatmap, inset so that neighbours' do not overlap."""
    return [
        ax.add_patch(
            Rectangle(
                (-0.45, row - 0.42), dims - 0.1, 0.84, fill=False, linewidth=2.5, visible=False
            )
        )
        for row in range(rows)
    ]


class KVCacheStepper:
    """Step through a short text token by token and watch the K and V caches fill."""

    def __init__(
        self,
        model: GPT,
        tokenizer: CharTokenizer,
        *,
        text: str = DEFAULT_TEXT,
        layer: int = 0,
        head: int = 0,
        dims: int = DEFAULT_DIMS,
    ) -> None:
        self.state: KVCacheStepperState = from_model(
            model, tokenizer, text, layer=layer, head=head, dims=dims
        )
        self.output = widgets.Output()
        self._build_controls()
        self._build_readouts()
        self._build_figure()
        self.widget = widgets.VBox(
            [
                widgets.HBox(
                    [self.step_slider, self.back_button, self.next_button, self.reset_button]
                ),
                self.cache_switch,
                self.canvas,
                widgets.HBox([self.step_label, self.computed_label]),
                self.step_work_label,
                self.with_label,
                self.without_label,
                widgets.HBox([self.step_ratio_label, self.ratio_label]),
                self.note_label,
                self.output,
            ]
        )
        self.render()

    def _build_controls(self) -> None:
        """Create the step and cache controls and connect each to its one transition."""
        self.step_slider = widgets.IntSlider(
            value=0, min=0, max=self.state.max_step, description="step", continuous_update=True
        )
        narrow = widgets.Layout(width="7em")
        self.back_button = widgets.Button(description="◀ back", layout=narrow)
        self.next_button = widgets.Button(description="next ▶", layout=narrow)
        self.reset_button = widgets.Button(description="reset", layout=narrow)
        self.cache_switch = widgets.ToggleButtons(
            options=[("cache on", True), ("cache off", False)], value=True, description="cache"
        )
        self.step_slider.observe(self._on_step, names="value")
        self.cache_switch.observe(self._on_cache, names="value")
        self.next_button.on_click(self._on_next)
        self.back_button.on_click(self._on_back)
        self.reset_button.on_click(self._on_reset)

    def _build_readouts(self) -> None:
        self.step_label = widgets.Label(layout=widgets.Layout(margin="0 2em 0 0"))
        self.computed_label = widgets.Label()
        self.step_work_label = widgets.Label()
        self.with_label = widgets.Label()
        self.without_label = widgets.Label()
        self.step_ratio_label = widgets.HTML(layout=widgets.Layout(margin="0 2em 0 0"))
        self.ratio_label = widgets.HTML()
        self.note_label = widgets.Label(
            value=f"{self.state.description}; gold: computed at this step; "
            "coral: recomputed because the cache is off; grey: not arrived yet"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display as the widget, so that `stepper` works as a cell's last expression."""
        return self.widget._repr_mimebundle_(**kwargs)

    # Figure: built once; render() only updates these artists.

    def _build_figure(self) -> None:
        state = self.state
        rows, dims = state.keys.shape
        self.figure = Figure(figsize=(8, 0.9 + 0.28 * rows), layout="constrained")
        self.canvas = widget_canvas(self.figure)
        colormap = colormaps["RdBu_r"].with_extremes(bad=EMPTY_COLOR)
        self.axes = self.figure.subplots(1, 2, sharey=True)
        self.images = []
        self.outlines: list[list[Rectangle]] = []
        row_labels = [f"{i}  {label}" for i, label in enumerate(state.labels)]
        for ax, name, data in zip(self.axes, ("K", "V"), (state.keys, state.values)):
            limit = float(data.abs().max()) or 1.0  # symmetric colours: 0 is white
            image = ax.imshow(
                np.ma.masked_all((rows, dims)),
                cmap=colormap,
                vmin=-limit,
                vmax=limit,
                aspect="auto",
                interpolation="nearest",
            )
            self.images.append(image)
            self.outlines.append(_row_outlines(ax, rows, dims))
            ax.set_title(f"{name} cache (one row per token)", fontsize="medium")
            ax.set_xticks(range(dims))
            ax.set_xlabel("dimension")
            ax.set_yticks(range(rows), row_labels, fontsize="small")
            self.figure.colorbar(image, ax=ax, shrink=0.8)

    def render(self) -> None:
        """Bring the heatmaps, outlines and readouts in line with the state; redraw once."""
        state = self.state
        computed = set(state.computed_rows)
        for image, outlines, data in zip(self.images, self.outlines, (state.keys, state.values)):
            shown = np.ma.masked_all(tuple(data.shape))
            shown[: state.step] = data[: state.step].numpy()
            image.set_data(shown)
            for row, outline in enumerate(outlines):
                outline.set_visible(row in computed)
                outline.set_edgecolor(NEWEST_COLOR if row == state.newest_row else RECOMPUTED_COLOR)
        readout = state.readout()
        self.step_label.value = readout["step"]
        self.computed_label.value = readout["computed"]
        self.step_work_label.value = readout["step_work"]
        self.with_label.value = readout["with"]
        self.without_label.value = readout["without"]
        self.step_ratio_label.value = f"<b>{readout['step_ratio']}</b>"
        self.ratio_label.value = f"<b>{readout['ratio']}</b>"
        self.back_button.disabled = state.step == 0
        self.next_button.disabled = state.step == state.max_step
        self.canvas.draw_idle()

    # Transitions: one per control event, then one render.

    @reported
    def _on_step(self, change: dict[str, Any]) -> None:
        self.state = self.state.set_step(change["new"])
        self.render()

    @reported
    def _on_cache(self, change: dict[str, Any]) -> None:
        self.state = self.state.set_cache(change["new"])
        self.render()

    @reported
    def _on_next(self, _button: widgets.Button) -> None:
        # Through the slider, so that slider and state never disagree and render runs once.
        self.step_slider.value = self.state.forward().step

    @reported
    def _on_back(self, _button: widgets.Button) -> None:
        self.step_slider.value = self.state.back().step

    @reported
    def _on_reset(self, _button: widgets.Button) -> None:
        self.state = self.state.reset()
        # The controls catch up without firing their observers, then one render.
        set_quietly(self.step_slider, self.state.step, self._on_step)
        set_quietly(self.cache_switch, self.state.use_cache, self._on_cache)
        self.render()
