"""ipympl's interactive canvas for the explorers, imported without switching the notebook's backend."""

from __future__ import annotations

import sys

import matplotlib


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


Canvas, FigureManager = _import_ipympl()
