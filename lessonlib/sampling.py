"""Sampling rules: turn one decoding step's next-token logits into probabilities or a token.

This module is the course's sampler: temperature scaling, top-k and top-p (nucleus) filtering,
the probabilities of the fixed pipeline temperature -> top-k -> top-p -> softmax, and one
categorical draw from them. Every function is pure: it accepts logits of shape ``(V,)`` or
``(B, V)``, returns a new tensor and never modifies its input; randomness comes only from an
explicit ``torch.Generator``. It is not about models or generation: nothing here runs a
network, keeps a cache or loops over time steps; a generation loop calls ``sample_next`` once
per step with the logits of the last position.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = [
    "apply_temperature",
    "check_temperature",
    "filter_top_k",
    "filter_top_p",
    "sample_next",
    "sampling_probs",
]

_NEG_INF = float("-inf")


def _validate(logits: object, **params: object) -> Tensor:
    """Raise TypeError/ValueError naming the culprit if `logits` or a named parameter is bad.

    Returns each row's maximum logit (keepdim), which the check needs and the pipeline reuses.
    """
    _validate_tensor(logits)
    row_max = logits.amax(dim=-1, keepdim=True)
    _check_finite(logits, row_max)
    _validate_params(params)
    return row_max


def _validate_tensor(logits: object) -> None:
    """Type, dtype and shape of `logits`; no pass over its values."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"logits must be a torch.Tensor of shape (V,) or (B, V), got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(
            f"logits must have a floating dtype (e.g. torch.float32), got {logits.dtype}; "
            "convert with logits.float()"
        )
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits must have shape (V,) or (B, V), got shape {tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(
            f"logits must have at least one row and one token, got shape {tuple(logits.shape)}"
        )


def _check_finite(logits: Tensor, row_max: Tensor) -> None:
    """Raise naming the bad entry if some row of `logits` (with maxima `row_max`) is unusable."""
    # The cheap test for the common case (once per decoding step): a row's maximum is NaN if the
    # row holds a NaN (max propagates NaN), +inf if it holds +inf, and -inf if the row is all
    # -inf. Their sum is finite when every maximum is; if it is not (or a sum of huge logits
    # overflows), the slow check names the bad entry or finds none. One maximum needs no sum.
    total = float(row_max) if row_max.numel() == 1 else float(row_max.sum())
    if not math.isfinite(total):
        _validate_non_finite(logits, tuple(logits.shape))


def _validate_non_finite(logits: Tensor, shape: tuple[int, ...]) -> None:
    """Name the NaN, +inf or all -inf row in logits that are not all finite."""
    for bad, label in ((torch.isnan(logits), "NaN"), (torch.isposinf(logits), "+inf")):
        if bad.any():
            where = tuple(torch.nonzero(bad)[0].tolist())
            raise ValueError(
                f"logits must be finite or -inf, got {label} at index {where} of shape {shape}"
            )
    rows = logits if logits.dim() == 2 else logits.unsqueeze(0)
    # A row of only -inf has no probability distribution to sample from.
    empty_rows = torch.nonzero(~torch.isfinite(rows).any(dim=-1))
    if len(empty_rows) > 0:
        row = int(empty_rows[0])
        raise ValueError(
            f"logits row {row} has no finite value (all -inf); every row needs at least one "
            "finite logit"
        )


def check_temperature(value: object, *, name: str = "temperature", greedy: bool = True) -> float:
    """`value` as a float, or TypeError/ValueError naming `name`, the value and what is accepted.

    Accepted: a finite real number >= 0, where 0 means greedy; > 0 with `greedy=False`.
    """
    accepted = ">= 0 (0 means greedy)" if greedy else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number {accepted}, got {value!r} of type {type(value).__name__}"
        )
    if not (math.isfinite(value) and (value >= 0 if greedy else value > 0)):
        raise ValueError(f"{name} must be a finite number {accepted}, got {value!r}")
    return float(value)


def _validate_params(params: dict[str, object]) -> None:
    """Check temperature, k/top_k, p/top_p and generator, whichever are given."""
    for name, value in params.items():
        if name == "temperature":
            check_temperature(value)
        elif name in ("k", "top_k"):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(
                    f"{name} must be an int >= 1 or None, got {value!r} "
                    f"of type {type(value).__name__}"
                )
            if value < 1:
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        elif name in ("p", "top_p"):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"{name} must be a number in (0, 1] or None, got {value!r} "
                    f"of type {type(value).__name__}"
                )
            # Written as "not (...)" so that NaN fails the check too.
            if not (0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1] or None, got {value!r}")
        elif name == "generator":
            if value is not None and not isinstance(value, torch.Generator):
                raise TypeError(
                    f"generator must be a torch.Generator or None, got {type(value).__name__}"
                )
        else:
            raise AssertionError(f"_validate got an unknown parameter {name!r}")


def _top_k(logits: Tensor, k: int | None) -> Tensor:
    """Top-k filter on already validated logits."""
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    # Each row's own k-th largest value, kept as a column so that it broadcasts row by row.
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    # "<" rather than "<=": tokens tied with the k-th value survive, so more than k may remain.
    return logits.masked_fill(logits < kth, _NEG_INF)


def _nucleus(logits: Tensor, p: float) -> Tensor:
    """Boolean mask, in vocabulary order, of the tokens that top-p keeps in each row."""
    # Stable sort: tied logits keep vocabulary order, so the kept prefix is deterministic.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    # Weights relative to the top token, in float64 so that half-precision input and long
    # prefixes do not blur the "< p" comparison. -inf tokens get weight 0.
    weights = torch.exp(sorted_logits.double() - sorted_logits[..., :1].double())
    # The running sum's last entry is the total: one left-to-right summation order for both the
    # prefixes and the total, and trailing zero weights leave it unchanged (see _top_k_top_p).
    cumulative = weights.cumsum(dim=-1)
    total = cumulative[..., -1:]
    # Mass strictly before each token; the top token has 0 < p, so it is always kept, and the
    # token whose own mass crosses p is kept too.
    mass_before = torch.cat([torch.zeros_like(total), cumulative[..., :-1]], dim=-1) / total
    keep_sorted = mass_before < p
    # Back from sorted order to vocabulary order: position order[j] receives keep_sorted[j].
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _top_p(logits: Tensor, p: float | None) -> Tensor:
    """Top-p filter on already validated logits."""
    if p is None or p == 1:
        return logits.clone()
    return logits.masked_fill(~_nucleus(logits, p), _NEG_INF)


def _top_k_top_p(logits: Tensor, k: int, p: float) -> Tensor:
    """`_top_p(_top_k(logits, k), p)` for k < V, sorting only the k survivors of top-k."""
    # After top-k, every other token is -inf: it has zero mass and sorts last, so top-p's
    # sort, prefix masses and total over the whole row equal those over the k survivors alone.
    # Sorting k = 50 values instead of a 50,257-token row is most of the sampler's time saved.
    # One value more than k tells whether the k-th value is tied with the next one.
    values, indices = torch.topk(logits, k + 1, dim=-1)
    if not bool((values[..., k] < values[..., k - 1]).all()):
        # Some row keeps more than k tokens (ties at the k-th value, or fewer than k finite
        # logits): take the plain route for the whole batch.
        return _top_p(_top_k(logits, k), p)
    # Survivors in vocabulary order, so that the stable sort in _nucleus breaks ties as it
    # does on the full row (topk's own order among equal values is unspecified).
    survivor_ids = indices[..., :k].sort(dim=-1).values
    survivors = logits.gather(-1, survivor_ids)
    kept = survivors.masked_fill(~_nucleus(survivors, p), _NEG_INF)
    return torch.full_like(logits, _NEG_INF).scatter(-1, survivor_ids, kept)


def _probs(
    logits: Tensor, row_max: Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> Tensor:
    """Pipeline probabilities, in float32 or wider, on logits validated by `_validate`."""
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    if temperature == 0:
        # Greedy is its own branch: a one-hot at the first maximal index, never a division by 0.
        one_hot = torch.zeros_like(logits, dtype=work_dtype)
        return one_hot.scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    # Shift each row so that its maximum is 0: softmax and both filters ignore the shift, and
    # a tiny temperature then sends the other logits to -inf instead of the maximum to +inf.
    tempered = (logits - row_max) / temperature
    both_on = top_k is not None and top_k < logits.shape[-1] and top_p is not None and top_p < 1
    # Top-k first makes top-p cheap: same tokens as the plain composition, see _top_k_top_p.
    if both_on:
        filtered = _top_k_top_p(tempered, top_k, top_p)
    else:
        filtered = _top_p(_top_k(tempered, top_k), top_p)
    return torch.softmax(filtered.to(work_dtype), dim=-1)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Logits divided by `temperature > 0`; accepts (V,) or (B, V), returns the same shape."""
    _validate(logits)
    # Dividing by 0 is no temperature at all: greedy is a separate branch, not a limit.
    if (
        isinstance(temperature, numbers.Real)
        and not isinstance(temperature, bool)
        and temperature == 0
    ):
        raise ValueError(
            "temperature must be > 0 to rescale logits, got 0; greedy decoding "
            "(temperature=0) is its own case in sample_next and sampling_probs"
        )
    return logits / check_temperature(temperature, greedy=False)


def filter_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k highest logits per row (ties with the k-th all kept), others -inf; (V,) or (B, V).

    `k=None` or `k >= V` is off and returns a copy. Every token whose logit equals the row's
    k-th largest value is kept, so more than k tokens may survive when there are ties.
    """
    _validate(logits, k=k)
    return _top_k(logits, k)


def filter_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Keep each row's smallest top prefix with probability mass >= p, others -inf; (V,) or (B, V).

    Token j in descending order is kept iff the mass of the tokens before it is < p, so the
    top token is always kept. `p=None` or `p == 1` is off and returns a copy. Logits that are
    already -inf carry zero mass and stay -inf. The result is in vocabulary order.
    """
    _validate(logits, p=p)
    return _top_p(logits, p)


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
    row_max = _validate(logits, temperature=temperature, top_k=top_k, top_p=top_p)
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
    _validate_tensor(logits)
    _validate_params(
        {"temperature": temperature, "top_k": top_k, "top_p": top_p, "generator": generator}
    )
    if temperature == 0:
        # One reduction gives both the pick and the maxima the finite check needs; max, like
        # argmax, returns the first maximal index.
        row_max, picked = logits.max(dim=-1)
        _check_finite(logits, row_max)
        return picked
    row_max = logits.amax(dim=-1, keepdim=True)
    _check_finite(logits, row_max)
    probs = _probs(logits, row_max, temperature, top_k, top_p)
    rows = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(rows, num_samples=1, generator=generator)
    return draws.reshape(logits.shape[:-1])
