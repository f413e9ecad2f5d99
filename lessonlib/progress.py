"""One progress bar for every long computation (tqdm.auto: a widget in Jupyter, text elsewhere)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    show: bool | None,
    total: int | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar over `iterable` (or of `total` steps), shown when `show` is true.

    `show=None` shows it only on a terminal (tqdm's own check), for command-line programs.
    The bar stays on screen when it finishes: a Jupyter bar removed with `leave=False` closes its
    widget, and the saved notebook then holds a widget view that can never render.
    """
    disable = None if show is None else not show
    return tqdm(iterable, total=total, disable=disable, leave=True, **options)
