"""The temperature exercise: its cases, the slips its hints name, and `check_my_temperature`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lessonlib.sampling import apply_temperature
from lessonlib.teaching.checkers.engine import Case, CheckResult, Failure, check_against_reference
from lessonlib.teaching.checkers.transforms import (
    _BATCH,
    _NO_SOFTMAX_HINT,
    _ONE_ROW,
    _SQUARE,
    _WITH_NEG_INF,
    _as_rows,
    _grid_logits,
    _looks_like_probs,
    _random_shape,
)


def temperature_cases(*, seed: int = 0, n_random: int = 30) -> list[Case]:
    """Edge and random cases for `apply_temperature`."""
    cases = [
        Case(torch.tensor([2.0, 1.0, 0.0]), 1.0, "temperature 1 changes nothing"),
        Case(torch.tensor([2.0, 1.0, 0.0]), 0.5, "temperature below 1 sharpens"),
        Case(torch.tensor([2.0, 1.0, 0.0]), 2.0, "temperature above 1 flattens"),
        Case(_WITH_NEG_INF, 0.5, "-inf entries stay -inf"),
        Case(_BATCH, 2.0, "a batch of 3 rows"),
        Case(_SQUARE, 0.25, "a batch of 4 rows of 4 tokens"),
        Case(torch.tensor([1.5]), 3.0, "a single token"),
        Case(_ONE_ROW, 0.05, "a very low temperature"),
        Case(_ONE_ROW, 20.0, "a very high temperature"),
        # Last of the edge cases, so that a wrong formula still fails first on a rescaling case.
        Case(
            torch.tensor([2.0, 1.0, 0.0]),
            0.0,
            "temperature 0 is greedy decoding, not a rescaling",
            raises=ValueError,
        ),
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_random):
        logits = _grid_logits(_random_shape(generator), generator)
        temperature = round(float(torch.empty(()).uniform_(0.1, 4.0, generator=generator)), 2)
        cases.append(Case(logits, temperature, "random"))
    return cases


def _temperature_hint(failure: Failure) -> str | None:
    """Name the usual slips in temperature scaling."""
    if failure.case.raises is not None:
        return (
            "temperature 0 is not a rescaling: raise a ValueError naming temperature (greedy "
            "decoding is its own branch, see sample_next)."
        )
    if failure.error is not None:
        return "divide the logits by the temperature and return the result: logits / temperature."
    got, case = failure.got, failure.case
    if not isinstance(got, Tensor) or got.shape != case.logits.shape:
        return "return a tensor of the same shape as logits."
    g, x = _as_rows(got), _as_rows(case.logits)
    e = _as_rows(failure.expected)
    finite = torch.isfinite(x)
    if torch.allclose(g[finite], x[finite] * case.param):
        return "you multiplied by the temperature; divide by it instead."
    if _looks_like_probs(g):
        return _NO_SOFTMAX_HINT
    shift = (g - e).masked_fill(~finite, 0.0)
    if torch.isfinite(g).eq(finite).all() and torch.allclose(
        shift, shift.amax(-1, keepdim=True).expand_as(shift).masked_fill(~finite, 0.0)
    ):
        return (
            "your logits differ from logits / temperature by a constant per row (same "
            "probabilities); return logits / temperature itself, without shifting."
        )
    return "every logit is divided by the temperature; -inf stays -inf."


def check_my_temperature(
    fn: Callable, *, seed: int = 0, n_random: int = 30, hint: bool = True
) -> CheckResult:
    """Check `fn(logits, temperature)` against `lessonlib.sampling.apply_temperature`."""
    result = check_against_reference(
        fn,
        apply_temperature,
        temperature_cases(seed=seed, n_random=n_random),
        name="temperature",
        param_name="temperature",
        hint=_temperature_hint,
    )
    return result if hint else result.without_hint()
