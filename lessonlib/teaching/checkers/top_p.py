"""The top-p exercise: its cases (masses that hit p exactly), its hints, and `check_my_top_p`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lessonlib.sampling import filter_top_p
from lessonlib.teaching.checkers.engine import (
    _NEG_INF,
    Case,
    CheckResult,
    Failure,
    _format,
    check_against_reference,
    compare_kept_prefix,
)
from lessonlib.teaching.checkers.transforms import (
    _BATCH,
    _SQUARE,
    _WITH_NEG_INF,
    _as_rows,
    _grid_logits,
    _kept_counts,
    _random_shape,
    _row_logits,
)

_TOP_P_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: sort, "
    "cumsum and scatter along dim=-1, and mask with a boolean tensor of the full (B, V) shape. "
    "Indexing with sorted_idx[mask] gives a flat list of token ids that forgets which row each "
    "came from."
)


# Powers of two in shuffled vocabulary order, for cases away from the boundary: a softmax of
# log(0.125) gives 0.12500000000000003, so summed in another order (Hugging Face sums ascending)
# a prefix that should hold exactly p can come out a hair above or below it.
_DYADIC = _row_logits([0.125, 0.5, 0.125, 0.25])
_DYADIC_BATCH = torch.stack(
    [
        _row_logits([0.25, 0.125, 0.5, 0.125]),
        _row_logits([0.125, 0.125, 0.25, 0.5]),
        _row_logits([0.5, 0.25, 0.125, 0.125]),
        _row_logits([0.25, 0.25, 0.25, 0.25]),
    ]
)
# Exact boundaries: m equal finite logits give probabilities of exactly 1/m when m is a power of
# two, and their prefix sums are exact in any order, so "<" against "<=" is all that differs.
_QUARTERS = torch.tensor([0.0, _NEG_INF, 0.0, 0.0, _NEG_INF, 0.0, _NEG_INF, _NEG_INF])
_HALVES = torch.tensor([_NEG_INF, 0.0, _NEG_INF, 0.0])
_EXACT_BATCH = torch.tensor(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, _NEG_INF, _NEG_INF, 0.0],
        [_NEG_INF, _NEG_INF, 0.0, _NEG_INF],
    ]
)


def top_p_cases(*, seed: int = 0, n_random: int = 30) -> list[Case]:
    """Edge and random cases for `filter_top_p`, with prefix masses that hit p exactly."""
    cases = [
        Case(_DYADIC, 0.6, "one row, not sorted: probabilities (0.125, 0.5, 0.125, 0.25)"),
        Case(_QUARTERS, 0.5, "exact boundary: two of four equal tokens hold exactly p = 0.5"),
        Case(_HALVES, 0.5, "exact boundary: the top token holds exactly p = 0.5"),
        Case(_DYADIC, 0.3, "p below the top token's probability keeps the top token"),
        Case(_DYADIC, 0.9, "the token that takes the mass over p is kept"),
        Case(_DYADIC, 1.0, "p = 1 keeps every token"),
        Case(torch.zeros(8), 0.75, "8 equal logits: 6 of them hold exactly p = 0.75"),
        Case(_WITH_NEG_INF, 0.8, "-inf entries"),
        Case(_BATCH, 0.8, "a batch of 3 rows"),
        Case(_EXACT_BATCH, 0.5, "a batch of 3 rows, exact boundaries"),
        Case(_DYADIC_BATCH, 0.7, "a batch of 4 rows, each in its own order"),
        Case(_SQUARE, 0.01, "a batch with a tiny p: each row keeps its top token"),
    ]
    generator = torch.Generator().manual_seed(seed)
    ps = (0.1, 0.25, 0.5, 0.6, 0.75, 0.8, 0.9, 0.95, 0.99)
    for _ in range(n_random):
        logits = _grid_logits(_random_shape(generator), generator)
        p = ps[int(torch.randint(0, len(ps), (), generator=generator))]
        cases.append(Case(logits, p, "random"))
    return cases


def _mass_before(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: the descending order and the probability mass before each sorted position."""
    rows = _as_rows(logits)
    sorted_logits, order = torch.sort(rows, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return order, probs.cumsum(-1) - probs


def _kept_counts_from_exp(logits: Tensor, p: float) -> list[int]:
    """Per row, the tokens top-p keeps if the probabilities are exp(logits), not normalised."""
    rows = _as_rows(logits)
    sorted_logits = torch.sort(rows, dim=-1, descending=True).values
    weights = sorted_logits.exp()
    return ((weights.cumsum(-1) - weights) < p).sum(-1).tolist()


def _top_p_hint(failure: Failure) -> str | None:
    """Name the usual slips in top-p filtering: sorted-order mask, lost top token, boundary."""
    if failure.error is not None:
        text = str(failure.error)
        if any(word in text for word in ("mask", "Bool", "bool", "size of tensor")):
            return (
                "masked_fill needs a boolean mask of the same shape as logits, in vocabulary "
                "order, not a tensor of indices: build the "
                "mask in sorted order, then scatter it back with "
                "keep = keep_sorted.scatter(-1, sorted_idx, keep_sorted)."
            )
        return "sort with torch.sort(logits, dim=-1, descending=True) and work along dim=-1."
    got, case = failure.got, failure.case
    if not isinstance(got, Tensor) or got.shape != case.logits.shape:
        return "return a tensor of the same shape as logits, with -inf outside the nucleus."
    g = _as_rows(got)
    if bool((~torch.isfinite(g)).all(-1).any()):
        return (
            "a row lost every token. The top token must always survive: keep token j when "
            "the mass *before* it is < p (the top token has 0 before it), not when its "
            "cumulative mass (including itself) is < p."
        )
    exp_counts, got_counts = _kept_counts(failure.expected), _kept_counts(got)
    got_kept = torch.isfinite(g)
    sorted_order_kept = [
        got_kept[r].nonzero().flatten().tolist() == list(range(n)) for r, n in enumerate(exp_counts)
    ]
    if _kept_counts_from_exp(case.logits, float(case.param)) == got_counts != exp_counts:
        return (
            "your probabilities do not sum to 1: exp(logits) is only proportional to the "
            "probabilities. Use torch.softmax(sorted_logits, dim=-1), which divides by the sum."
        )
    order, before = _mass_before(case.logits)
    in_vocab_order = [order[r, :n].sort().values.tolist() for r, n in enumerate(exp_counts)]
    if all(sorted_order_kept) and any(
        list(range(n)) != v for n, v in zip(exp_counts, in_vocab_order)
    ):
        return (
            "your mask is in sorted order (position 0 = the largest logit), but masked_fill "
            "applies it in vocabulary order. Scatter it back first: "
            "keep = keep_sorted.scatter(-1, sorted_idx, keep_sorted)."
        )
    p = float(case.param)
    for row, (e, n) in enumerate(zip(exp_counts, got_counts)):
        if n == e + 1 and e < before.shape[-1] and math.isclose(float(before[row, e]), p):
            return (
                "you keep the token whose preceding mass equals p exactly. The nucleus is the "
                "smallest prefix with mass >= p, so it stops before that token: keep token j "
                "iff the mass before it is < p (strictly)."
            )
        if n == e - 1:
            return (
                "you drop the token that takes the mass to p or beyond; the nucleus includes "
                "it (the smallest prefix with mass >= p)."
            )
    return (
        "sort descending, keep token j iff the mass before it is < p, scatter the mask back to "
        "vocabulary order, and set the others to -inf."
    )


def _describe_probs(case: Case) -> list[str]:
    """The input's probabilities, which is what top-p reasons about."""
    return ["probs    = " + _format(torch.softmax(case.logits.to(torch.float64), -1), 3, 13)]


def check_my_top_p(
    fn: Callable, *, seed: int = 0, n_random: int = 30, hint: bool = True
) -> CheckResult:
    """Check `fn(logits, p)` against `lessonlib.sampling.filter_top_p` (keep j iff mass before < p).

    Equal logits at the cut may be kept in any order (`compare_kept_prefix`), so an unstable
    sort passes.
    """
    result = check_against_reference(
        fn,
        filter_top_p,
        top_p_cases(seed=seed, n_random=n_random),
        name="top-p",
        compare=compare_kept_prefix,
        param_name="p",
        hint=_top_p_hint,
        describe=_describe_probs,
        batch_hint=_TOP_P_BATCH_HINT,
    )
    return result if hint else result.without_hint()
