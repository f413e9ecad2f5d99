"""The top-k exercise: its cases, the slips its hints name, and `check_my_top_k`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lessonlib.sampling import filter_top_k
from lessonlib.teaching.checkers.engine import (
    _NEG_INF,
    Case,
    CheckResult,
    Failure,
    check_against_reference,
)
from lessonlib.teaching.checkers.transforms import (
    _BATCH,
    _NO_SOFTMAX_HINT,
    _ONE_ROW,
    _SQUARE,
    _WITH_NEG_INF,
    _as_rows,
    _grid_logits,
    _kept_counts,
    _looks_like_probs,
    _random_shape,
)

_TOP_K_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: each row "
    "has its own k-th largest value. Keep its last dimension, kth = torch.topk(logits, k, "
    "dim=-1).values[..., -1:] (not [..., -1]), so that logits < kth compares each row with its "
    "own k-th value instead of broadcasting (B,) against the tokens."
)


def top_k_cases(*, seed: int = 0, n_random: int = 30) -> list[Case]:
    """Edge and random cases for `filter_top_k`."""
    cases = [
        Case(_ONE_ROW, 2, "one row"),
        Case(_ONE_ROW, 1, "k = 1 keeps only the largest logit"),
        Case(_ONE_ROW, 5, "k = V keeps every token"),
        Case(torch.tensor([3.0, 1.0, 3.0, 1.0, 0.0]), 3, "ties at the k-th value: keep them all"),
        Case(torch.tensor([3.0, 3.0, 1.0, 0.0]), 1, "two tokens tied for the largest, k = 1"),
        Case(_WITH_NEG_INF, 2, "-inf entries"),
        Case(torch.tensor([1.0, _NEG_INF, _NEG_INF, 0.0]), 3, "fewer finite logits than k"),
        Case(_BATCH, 2, "a batch of 3 rows, each with its own k-th value"),
        Case(_SQUARE, 2, "a batch of 4 rows of 4 tokens, each with its own k-th value"),
        Case(_BATCH[:1], 3, "a batch of one row"),
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_random):
        logits = _grid_logits(_random_shape(generator), generator)
        k = int(torch.randint(1, logits.shape[-1] + 1, (), generator=generator))
        cases.append(Case(logits, k, "random"))
    return cases


def _top_k_hint(failure: Failure) -> str | None:
    """Name the usual slips in top-k filtering."""
    if failure.error is not None:
        text = str(failure.error)
        if "size of tensor" in text or "must match" in text:
            return _TOP_K_BATCH_HINT
        return "find each row's k-th largest value with torch.topk(logits, k, dim=-1)."
    got, case = failure.got, failure.case
    if not isinstance(got, Tensor) or got.shape != case.logits.shape:
        return "return a tensor of the same shape as logits, with -inf outside the top k."
    # Probabilities have no -inf: checked before the kept counts, which they would confuse.
    if _looks_like_probs(_as_rows(got)):
        return _NO_SOFTMAX_HINT
    exp_counts, got_counts = _kept_counts(failure.expected), _kept_counts(got)
    finite = _kept_counts(case.logits)
    k = int(case.param)
    if all(g == min(k - 1, f) for g, f in zip(got_counts, finite)) and got_counts != exp_counts:
        return (
            "you keep k - 1 tokens: the k-th largest value must survive, so mask only the "
            "logits strictly below it (logits < kth, not logits <= kth)."
        )
    if all(g == min(k + 1, f) for g, f in zip(got_counts, finite)) and got_counts != exp_counts:
        return (
            "you keep k + 1 tokens; keep exactly the k largest (and the ties with the k-th): "
            "after a descending sort the k-th largest value is at index k - 1, not k."
        )
    if any(g < e for g, e in zip(got_counts, exp_counts)) and any(e > k for e in exp_counts):
        return (
            "every token tied with the k-th largest value is kept, so more than k may survive: "
            "mask by comparing with the k-th value rather than by the indices topk returns."
        )
    return "keep the logits >= each row's k-th largest value and set the others to -inf."


def check_my_top_k(
    fn: Callable, *, seed: int = 0, n_random: int = 30, hint: bool = True
) -> CheckResult:
    """Check `fn(logits, k)` against `lessonlib.sampling.filter_top_k` (ties at the k-th kept)."""
    result = check_against_reference(
        fn,
        filter_top_k,
        top_k_cases(seed=seed, n_random=n_random),
        name="top-k",
        param_name="k",
        hint=_top_k_hint,
        batch_hint=_TOP_K_BATCH_HINT,
    )
    return result if hint else result.without_hint()
