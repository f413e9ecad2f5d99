"""The course's sampler: temperature, top-k and top-p on one step's next-token logits, then a draw.

Every function is pure: it accepts logits of shape (V,) or (B, V), returns a new tensor and never
modifies its input; randomness comes only from an explicit `torch.Generator`. The pipeline is
temperature -> top-k -> top-p -> softmax (`sampling_probs`), then one draw per row (`sample_next`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lessonlib.validation import (
    check_finite_logits,
    check_generator,
    check_logits,
    check_optional_int,
    check_probability,
    check_temperature,
)

__all__ = [
    "apply_temperature",
    "check_temperature",
    "filter_top_k",
    "filter_top_p",
    "sample_next",
    "sampling_probs",
]

_NEG_INF = float("-inf")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Logits divided by `temperature > 0`; accepts (V,) or (B, V), returns the same shape."""
    _checked_row_max(logits)
    try:
        temperature = check_temperature(temperature, greedy=False)
    except ValueError:
        if temperature != 0:
            raise
        # Dividing by 0 is no temperature at all: greedy is a separate branch, not a limit.
        raise ValueError(
            "temperature must be > 0 to rescale logits, got 0; greedy decoding "
            "(temperature=0) is its own case in sample_next and sampling_probs"
        ) from None
    return logits / temperature


def filter_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k highest logits per row (ties with the k-th all kept), others -inf; (V,) or (B, V).

    `k=None` or `k >= V` is off and returns a copy.
    """
    _checked_row_max(logits)
    check_optional_int("k", k, low=1)
    return _top_k(logits, k)


def _top_k(logits: Tensor, k: int | None) -> Tensor:
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    # Each row's own k-th largest value, kept as a column so that it broadcasts row by row.
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    # "<" rather than "<=": tokens tied with the k-th value survive, so more than k may remain.
    return logits.masked_fill(logits < kth, _NEG_INF)


def filter_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Keep each row's smallest top prefix with probability mass >= p, others -inf; (V,) or (B, V).

    Token j in descending order is kept iff the mass of the tokens before it is < p, so the top
    token always is. `p=None` or `p == 1` is off and returns a copy; -inf logits stay -inf.
    """
    _checked_row_max(logits)
    check_probability("p", p, allow_none=True)
    return _top_p(logits, p)


def _top_p(logits: Tensor, p: float | None) -> Tensor:
    if p is None or p == 1:
        return logits.clone()
    # Stable sort: tied logits keep vocabulary order, so the kept prefix is deterministic.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    # Weights relative to the top token in float64, so that half-precision input and long
    # prefixes do not blur the "< p" comparison; -inf tokens weigh 0.
    weights = torch.exp(sorted_logits.double() - sorted_logits[..., :1].double())
    # One running sum gives every prefix and, as its last entry, the total.
    cumulative = weights.cumsum(dim=-1)
    total = cumulative[..., -1:]
    # Keep a token iff the mass strictly before it is < p (the top token's is 0).
    mass_before = torch.cat([torch.zeros_like(total), cumulative[..., :-1]], dim=-1) / total
    # Back to vocabulary order: position order[j] receives the verdict on sorted position j.
    keep = torch.zeros_like(mass_before, dtype=torch.bool).scatter(-1, order, mass_before < p)
    return logits.masked_fill(~keep, _NEG_INF)


def sampling_probs(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Probabilities after temperature -> top-k -> top-p -> softmax; (V,) or (B, V), same shape.

    `temperature=0` is greedy: a one-hot at the first maximal logit, as `torch.argmax` picks.
    The result has the dtype of `logits` (computed in float32 or wider).
    """
    row_max = _checked_row_max(logits)
    _check_settings(temperature, top_k, top_p)
    return _probs(logits, row_max, temperature, top_k, top_p).to(logits.dtype)


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row drawn from `sampling_probs`; (V,) gives shape (), (B, V) gives (B,).

    `temperature=0` returns the argmax without consuming randomness from `generator`.
    """
    check_logits("logits", logits)
    _check_settings(temperature, top_k, top_p)
    check_generator("generator", generator)
    if temperature == 0:
        # One reduction gives both the pick and the maxima the finite check needs; max, like
        # argmax, returns the first maximal index.
        row_max, picked = logits.max(dim=-1)
        check_finite_logits("logits", logits, row_max)
        return picked
    row_max = logits.amax(dim=-1, keepdim=True)
    check_finite_logits("logits", logits, row_max)
    probs = _probs(logits, row_max, temperature, top_k, top_p)
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return draws.reshape(logits.shape[:-1])


def _probs(
    logits: Tensor, row_max: Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> Tensor:
    """Pipeline probabilities, in float32 or wider, on checked logits and settings."""
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    if temperature == 0:
        # Greedy is its own branch: a one-hot at the first maximal index, never a division by 0.
        one_hot = torch.zeros_like(logits, dtype=work_dtype)
        return one_hot.scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    # Shift each row so that its maximum is 0: softmax and both filters ignore the shift, and
    # a tiny temperature then sends the other logits to -inf instead of the maximum to +inf.
    tempered = (logits - row_max) / temperature
    return torch.softmax(_top_p(_top_k(tempered, top_k), top_p).to(work_dtype), dim=-1)


def _check_settings(temperature: object, top_k: object, top_p: object) -> None:
    check_temperature(temperature)
    check_optional_int("top_k", top_k, low=1)
    check_probability("top_p", top_p, allow_none=True)


def _checked_row_max(logits: object) -> Tensor:
    """Each row's maximum (keepdim), once `logits` are known to be a usable (V,) or (B, V)."""
    check_logits("logits", logits)
    row_max = logits.amax(dim=-1, keepdim=True)
    check_finite_logits("logits", logits, row_max)
    return row_max
