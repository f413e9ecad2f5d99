"""Argument checks shared by the whole package: each raises naming the parameter, the value and
what is accepted, and returns the value in its plain Python type."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = [
    "check_finite_logits",
    "check_generator",
    "check_int",
    "check_logits",
    "check_optional_int",
    "check_probability",
    "check_real",
    "check_temperature",
]


def _describe(value: object) -> str:
    return f"{value!r} of type {type(value).__name__}"


def check_int(
    name: str, value: object, *, low: int | None = None, high: int | None = None, _or: str = ""
) -> int:
    """`value` as an int in [low, high] (either end may be open), else TypeError/ValueError."""
    accepted = _int_range(low, high) + _or
    # bool is an int subclass, but True as a count or a step is always a slip.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{accepted}, got {_describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int{accepted}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: object, *, low: int | None = None) -> int | None:
    """`value` as an int >= low, or None (a setting that is off)."""
    return None if value is None else check_int(name, value, low=low, _or=" or None")


def _int_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """`value` as a finite float in [low, high] ((low, high] with `low_open`), else an error."""
    accepted = _real_range(low, high, low_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{accepted}, got {_describe(value)}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    # Written so that NaN fails too: every comparison with NaN is False.
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be a finite number{accepted}, got {value!r}")
    return value


def _real_range(low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def check_temperature(value: object, *, name: str = "temperature", greedy: bool = True) -> float:
    """A sampling temperature: a finite real >= 0 where 0 means greedy (> 0 with greedy=False)."""
    # Value first, unlike the checks above: lessonlib.sampling has exported it this way since
    # before this module existed, and its callers pass the value alone.
    accepted = ">= 0 (0 means greedy)" if greedy else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number {accepted}, got {_describe(value)}")
    if not (math.isfinite(value) and (value >= 0 if greedy else value > 0)):
        raise ValueError(f"{name} must be a finite number {accepted}, got {value!r}")
    return float(value)


def check_probability(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """A probability threshold p in (0, 1] (None allowed with `allow_none`: the rule is off)."""
    if value is None and allow_none:
        return None
    off = " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1]{off}, got {_describe(value)}")
    if not 0 < value <= 1:  # "not" so that NaN fails
        raise ValueError(f"{name} must be in (0, 1]{off}, got {value!r}")
    return float(value)


def check_generator(name: str, value: object) -> torch.Generator | None:
    """A torch.Generator, or None (torch's global generator)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_logits(name: str, value: object, *, dims: tuple[int, ...] = (1, 2)) -> Tensor:
    """A non-empty floating tensor with one of `dims` dimensions (values are not read)."""
    shapes = " or ".join({1: "(V,)", 2: "(B, V)", 3: "(B, T, V)"}[d] for d in dims)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {shapes}, got {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (e.g. torch.float32), got {value.dtype}; "
            f"convert with {name}.float()"
        )
    if value.dim() not in dims:
        raise ValueError(f"{name} must have shape {shapes}, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    return value


def check_finite_logits(name: str, value: Tensor, row_max: Tensor) -> None:
    """Raise naming the first NaN, the first +inf or the first all -inf row of `value`.

    `row_max` holds each row's maximum (any shape), which the caller has already computed.
    """
    # The cheap test, once per decoding step: a row's maximum is NaN, +inf or -inf exactly when
    # the row holds a NaN or a +inf or is all -inf. A finite sum of maxima therefore clears every
    # row; otherwise (or if huge logits overflow the sum) the search below names the culprit.
    total = float(row_max) if row_max.numel() == 1 else float(row_max.sum())
    if math.isfinite(total):
        return
    for bad, label in ((torch.isnan(value), "NaN"), (torch.isposinf(value), "+inf")):
        if bad.any():
            where = tuple(torch.nonzero(bad)[0].tolist())
            raise ValueError(
                f"{name} must be finite or -inf, got {label} at index {where} "
                f"of shape {tuple(value.shape)}"
            )
    # A row of only -inf has no probability distribution to sample from.
    empty_rows = torch.nonzero(~torch.isfinite(value.reshape(-1, value.shape[-1])).any(dim=-1))
    if len(empty_rows) > 0:
        raise ValueError(
            f"{name} row {int(empty_rows[0])} has no finite value (all -inf); every row needs "
            "at least one finite logit"
        )
