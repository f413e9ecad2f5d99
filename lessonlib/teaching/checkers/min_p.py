"""The min-p exercise: its cases (a token exactly at the cut), its hints, and `check_my_min_p`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lessonlib.teaching.checkers.engine import (
    _NEG_INF,
    Case,
    CheckResult,
    Failure,
    _format,
    _number,
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
    _looks_like_probs,
    _random_shape,
)
from lessonlib.truncation import filter_min_p

# The probabilities (0.5, 0.2, 0.15, 0.1, 0.05) as logits log P + 3: not normalised, so that at
# min_p = 0.35 (threshold 0.175, min-p keeps 2 tokens) comparing logits keeps 3, comparing
# probabilities with min_p alone keeps 1 and comparing exp(logits) with min_p alone keeps 5.
_MIN_P_EXAMPLE = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]).log() + 3.0
# A token exactly at the threshold, in float64: logits 0, -ln 2 and -2 ln 2 (exact multiples of
# one rounded ln 2), so z - max is exactly log(0.5) and log(0.25), and exp of them rounds to
# 0.5 and 0.25 exactly (the true values lie within 0.21 units in the last place of them in
# float64, 0.07 in float32, so any exp good to a quarter of a unit gives them):
# probabilities (0.25, 0.5, 0.125, 0.125), and 0.25 is exactly min_p = 0.5 times the top 0.5
# whether a learner compares probabilities, exp(logits) or logits in log space.
_LN2 = math.log(2.0)
_AT_THRESHOLD = torch.tensor([-_LN2, 0.0, -2 * _LN2, -2 * _LN2], dtype=torch.float64)
# Rows of different confidence: a confident one (top probability 0.93), a flat one, and one in
# between, so that the threshold min_p * top differs from row to row.
_CONFIDENCE_BATCH = torch.tensor(
    [[5.0, 1.0, 0.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 1.5, -1.0, 0.5]]
)


def min_p_cases(*, seed: int = 0, n_random: int = 30) -> list[Case]:
    """Edge and random cases for `filter_min_p`, with a token exactly at the threshold."""
    cases = [
        Case(_MIN_P_EXAMPLE, 0.35, "probabilities (0.5, 0.2, 0.15, 0.1, 0.05)"),
        # Positive logits, so that comparing logits (1 >= 0.5 * 1) keeps them all, as it should:
        # only the absolute threshold (each probability 1/6 < 0.5) fails here.
        Case(torch.ones(6), 0.5, "a flat row: every token ties with the top one and stays"),
        Case(
            _AT_THRESHOLD,
            0.5,
            "token 0's probability 0.25 is exactly min_p times the top one: it stays",
        ),
        Case(torch.tensor([2.0, 0.0, 2.0, 2.0, -1.0]), 0.2, "three tokens tied at the top"),
        Case(torch.tensor([1.0, 3.0, 3.0, 0.0]), 1.0, "min_p = 1 keeps the top token and its ties"),
        Case(_ONE_ROW, 1.0, "min_p = 1 keeps only the top token"),
        Case(_WITH_NEG_INF, 0.3, "-inf entries"),
        Case(torch.tensor([_NEG_INF, -2.0, _NEG_INF]), 0.5, "a single finite token"),
        Case(_MIN_P_EXAMPLE - 5.0, 0.35, "case 1 with every logit lowered by 5: same tokens"),
        Case(_ONE_ROW, 0.01, "a tiny min_p keeps every token"),
        Case(_CONFIDENCE_BATCH, 0.3, "a batch: a confident row, a flat row, one in between"),
        Case(_BATCH, 0.2, "a batch of 3 rows, each with its own top probability"),
        Case(_SQUARE, 0.2, "a batch of 4 rows of 4 tokens, each with its own top probability"),
    ]
    generator = torch.Generator().manual_seed(seed)
    # Away from every ratio exp(-k / 2) that logits on a grid of halves can give (e^-3 = 0.0498
    # is the nearest, 0.4% from 0.05), so that only min_p = 1 puts tokens exactly at the cut.
    min_ps = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
    for _ in range(n_random):
        logits = _grid_logits(_random_shape(generator), generator)
        min_p = min_ps[int(torch.randint(0, len(min_ps), (), generator=generator))]
        cases.append(Case(logits, min_p, "random"))
    return cases


_MIN_P_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: each row "
    "has its own top probability. Keep its last dimension, top = probs.amax(dim=-1, "
    "keepdim=True) (not probs.max() over the whole batch, nor amax(dim=-1) without keepdim), so "
    "that min_p * top is a column and each row is compared with its own top token."
)
_MIN_P_STRICT_HINT = (
    "you drop the tokens exactly at the threshold. A token whose probability is exactly min_p "
    "times the top one stays: drop only probs < min_p * top (keep >=, not >). With min_p = 1 "
    "the top token itself, and every token tied with it, sits exactly at the threshold."
)
_MIN_P_LOGITS_HINT = (
    "you compared the logits with min_p times the largest logit. Logits are not probabilities: "
    "they can be negative, and adding the same number to every logit changes no probability "
    "but moves that cut. Compare probabilities, torch.softmax(logits, dim=-1) >= min_p times "
    "the row's largest probability, or stay in log space: logits >= the row's largest logit + "
    "log(min_p)."
)
_MIN_P_ABSOLUTE_HINT = (
    "you compared each probability with min_p itself. min_p is a fraction of the top token's "
    "probability, not a probability: the threshold is min_p * probs.amax(dim=-1, "
    "keepdim=True), so it falls when the model is unsure. With probs >= min_p a flat row, "
    "whose every token is below min_p, loses every token."
)
_MIN_P_EXP_HINT = (
    "you compared exp(logits) with min_p. exp(logits) is only proportional to the "
    "probabilities (softmax divides it by its sum), so this cut moves when every logit shifts "
    "by the same amount. Divide by the sum (torch.softmax), or compare exp(logits) with "
    "min_p * exp(the row's largest logit): in that ratio the sum cancels, so it needs no "
    "normalising."
)
_MIN_P_STEPS = (
    "keep token j iff its probability is >= min_p times the largest probability of its row "
    "(so the top token always stays) and set the others to -inf."
)


def _min_p_slips(logits: Tensor, min_p: float) -> list[tuple[Tensor, str]]:
    """Per slip, the tokens it keeps (rows as from `_as_rows`) and the hint that names it."""
    z = _as_rows(logits)
    probs = torch.softmax(z, dim=-1)
    z_max = z.amax(dim=-1, keepdim=True)
    kept = []
    for compared, threshold, advice in (
        (z, min_p * z_max, _MIN_P_LOGITS_HINT),
        (probs, torch.tensor(min_p, dtype=z.dtype), _MIN_P_ABSOLUTE_HINT),
        (z.exp(), torch.tensor(min_p, dtype=z.dtype), _MIN_P_EXP_HINT),
    ):
        # Either comparison: at a tie between them the slip is the same slip.
        kept.append((compared >= threshold, advice))
        kept.append((compared > threshold, advice))
    return kept


def _min_p_hint(failure: Failure) -> str | None:
    """Name the usual slips in min-p from how the kept tokens differ from the reference's."""
    if failure.error is not None:
        text = str(failure.error)
        if "size of tensor" in text or "must match" in text:
            return _MIN_P_BATCH_HINT
        if "return_types" in text or "multiply sequence" in text:
            return (
                "probs.max(dim=-1) returns a pair (values, indices): take its .values, or use "
                "probs.amax(dim=-1, keepdim=True), which returns the values only."
            )
        return (
            "take the probabilities with torch.softmax(logits, dim=-1), each row's top one with "
            "probs.amax(dim=-1, keepdim=True), and compare them along dim=-1."
        )
    got, case = failure.got, failure.case
    if not isinstance(got, Tensor) or got.shape != case.logits.shape:
        return (
            "return a tensor of the same shape as logits, with -inf for the tokens min-p removes."
        )
    g, z = _as_rows(got), _as_rows(case.logits)
    # Probabilities (renormalised, or with zeros for the dropped tokens) have no -inf: checked
    # before the kept tokens, which they would confuse.
    if _looks_like_probs(g) or (
        bool(torch.isfinite(g).all()) and bool(((g >= 0) & (g <= 1)).all()) and not g.equal(z)
    ):
        return _NO_SOFTMAX_HINT
    got_kept = torch.isfinite(g)
    expected_kept = torch.isfinite(_as_rows(failure.expected))
    min_p = float(case.param)
    ratio = (z - z.amax(dim=-1, keepdim=True)).exp()  # each probability over the row's top one
    dropped = expected_kept & ~got_kept
    at_threshold = torch.isclose(ratio, torch.full_like(ratio, min_p), rtol=1e-6, atol=0.0)
    # Only tokens exactly at the threshold are missing, and nothing extra is kept.
    if (
        bool(dropped.any())
        and bool(at_threshold[dropped].all())
        and not bool((got_kept & ~expected_kept).any())
    ):
        return _MIN_P_STRICT_HINT
    for kept, advice in _min_p_slips(case.logits, min_p):
        if torch.equal(kept, got_kept):
            return advice
    if bool((~got_kept).all(dim=-1).any()):
        return (
            "a row lost every token, but min-p always keeps the top token: its probability is "
            "at least min_p times itself, since min_p <= 1. Keep token j iff its probability is "
            ">= min_p times the largest probability of its row and set the others to -inf."
        )
    return _MIN_P_STEPS


def _describe_min_p(case: Case) -> list[str]:
    """The input's probabilities and the threshold min_p * top, which min-p compares them with."""
    probs = torch.softmax(case.logits.to(torch.float64), -1)
    threshold = case.param * probs.amax(dim=-1)
    if probs.dim() == 1:
        return [
            "probs    = " + _format(probs, 3, 13),
            f"min_p * top probability = {_number(float(threshold), 4)}",
        ]
    return [
        "probs    = " + _format(probs, 3, 13),
        "min_p * each row's top probability = " + _format(threshold, 4),
    ]


def check_my_min_p(
    fn: Callable, *, seed: int = 0, n_random: int = 30, hint: bool = True
) -> CheckResult:
    """Check `fn(logits, min_p)` against `lessonlib.truncation.filter_min_p` (P >= min_p * top).

    Any correct formulation passes: probabilities against min_p times the top one, exp(logits)
    against min_p * exp(max logit) (the softmax's sum cancels), or log space, logits against
    max logit + log(min_p), as llama.cpp does.
    """
    result = check_against_reference(
        fn,
        filter_min_p,
        min_p_cases(seed=seed, n_random=n_random),
        name="min-p",
        param_name="min_p",
        hint=_min_p_hint,
        describe=_describe_min_p,
        batch_hint=_MIN_P_BATCH_HINT,
    )
    return result if hint else result.without_hint()
