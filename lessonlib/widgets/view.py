"""What every widget view shares: an ipympl canvas for its figure, and visible callback errors."""

from __future__ import annotations

import functools
import itertools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure


def _import_ipympl() -> tuple[type, type]:
    """ipympl's Canvas and FigureManager, leaving matplotlib's backend as it was."""
    # Read the raw value: rcParams["backend"] would resolve (and fix) an automatic backend.
    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    from ipympl.backend_nbagg import Canvas, FigureManager

    if dict.__getitem__(matplotlib.rcParams, "backend") != backend:
        # ipympl's package __init__ calls matplotlib.use() when matplotlib is already loaded;
        # importing a view must not turn a notebook's inline plots into widgets, so undo it.
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.switch_backend(backend)
        else:
            dict.__setitem__(matplotlib.rcParams, "backend", backend)
    return Canvas, FigureManager


def _enable_colab_widgets() -> bool:
    """In Google Colab, turn on the widget manager that ipympl needs; elsewhere do nothing."""
    # Colab renders ipywidgets' own controls out of the box, but third-party widgets such as
    # ipympl's canvas only after this call. JupyterLab, VS Code and Binder need nothing.
    if "google.colab" not in sys.modules:
        return False
    from google.colab import output

    output.enable_custom_widget_manager()
    return True


Canvas, FigureManager = _import_ipympl()
_enable_colab_widgets()
_figure_numbers = itertools.count(1)


def widget_canvas(figure: Figure) -> Any:
    """An interactive ipympl canvas for `figure`, without toolbar, header, footer or resizing."""
    canvas = Canvas(figure)
    with warnings.catch_warnings():
        # ipympl 0.10's Toolbar hands its canvas on to traitlets, which warns; harmless.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="traitlets")
        # The manager wires the front end's messages (mouse, resize) to the canvas.
        FigureManager(canvas, next(_figure_numbers))
    # No pan/zoom modes: a press on the axes belongs to the widget (bars, p line).
    canvas.toolbar_visible = False
    canvas.header_visible = False
    canvas.footer_visible = False
    canvas.resizable = False
    return canvas


def reported(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a view's callback inside its `output` widget, so that a traceback shows there."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        # In a kernel the Output widget shows and swallows the error; without one it propagates.
        with self.output:
            return method(self, *args, **kwargs)

    return wrapper


def set_quietly(control: Any, value: Any, handler: Callable[..., Any]) -> None:
    """Set a control's value without running `handler`, its value observer."""
    control.unobserve(handler, names="value")
    try:
        control.value = value
    finally:
        control.observe(handler, names="value")


def check_model_and_tokenizer(model: object, tokenizer: object) -> None:
    """Raise ValueError unless `model` and `tokenizer` are both given or both None."""
    if (model is None) != (tokenizer is None):
        raise ValueError("model and tokenizer must be given together (or both left None)")


def check_on_slider(name: str, value: float, low: float, high: float, step: float) -> None:
    """Raise ValueError unless `value` is on the slider's grid low, low + step, ..., high."""
    steps = (value - low) / step
    if not (low <= value <= high and abs(steps - round(steps)) < 1e-6):
        raise ValueError(
            f"{name} must be on its slider's grid, a multiple of {step} in [{low}, {high}], "
            f"got {value!r}"
        )
