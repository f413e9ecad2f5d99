"""The accept/reject exercise: one speculative-decoding step, checked by its distribution."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lessonlib.speculative import acceptance_probs, residual_probs
from lessonlib.teaching.checkers.engine import (
    _NEG_INF,
    CheckResult,
    _format,
    _not_written,
    _number,
)
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.validation import check_int

ACCEPT_DRAWS = 1200  # calls of the learner's accept/reject step per case
# Chance that a correct step fails the check, over all its cases together (each case gets an
# equal share): the distribution test's false-alarm rate.
ACCEPT_FALSE_ALARM = 1e-6
_REPEAT_CALLS = 40  # calls made twice with generators seeded alike: a seed must reproduce them


@dataclass(frozen=True)
class AcceptCase:
    """One position: the target's P and the draft's Q (both (V,)), the drafted token, a note."""

    p: Tensor
    q: Tensor
    drafted_token: int
    note: str = ""


# (P, Q, drafted token, what the case probes), the first failures a learner meets: small and
# exact enough to check by hand.
_ACCEPT_HAND_CASES = (
    ((0.2, 0.7, 0.1), (0.7, 0.2, 0.1), 0, "P(x) < Q(x): x is kept with probability 2/7"),
    ((0.4, 0.5, 0.1), (0.1, 0.2, 0.7), 0, "P(x) > Q(x): x is always kept"),
    ((0.3, 0.3, 0.4), (0.6, 0.4, 0.0), 0, "Q = 0 where P > 0: only the residual gives that token"),
    ((0.0, 0.6, 0.4), (0.5, 0.25, 0.25), 0, "P(x) = 0: x is always rejected"),
    ((0.5, 0.25, 0.25), (0.5, 0.25, 0.25), 1, "P = Q: every proposal is kept"),
    ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), 0, "one-hot P and Q (greedy): the target's argmax wins"),
)


def accept_or_resample_cases(*, seed: int = 0, n_random: int = 6) -> list[AcceptCase]:
    """Hand-made and seeded random positions for an accept/reject step (float32, as models give)."""
    cases = [
        AcceptCase(torch.tensor(p), torch.tensor(q), x, note)
        for p, q, x, note in _ACCEPT_HAND_CASES
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_random):
        vocab_size = int(torch.randint(3, 7, (), generator=generator))
        logits = 1.5 * torch.randn(2, vocab_size, generator=generator)
        # A token each distribution rules out (top-k, top-p do that), never the same one.
        ruled_out = torch.randperm(vocab_size, generator=generator)[:2]
        logits[0, ruled_out[0]] = _NEG_INF
        logits[1, ruled_out[1]] = _NEG_INF
        p, q = torch.softmax(logits, dim=-1)
        drafted = int(torch.multinomial(q, 1, generator=generator))  # proposals come from Q
        cases.append(AcceptCase(p, q, drafted, "random"))
    return cases


def _kept_probability(case: AcceptCase) -> float:
    """min(1, P(x)/Q(x)) for the drafted token x, from lessonlib.speculative."""
    x = case.drafted_token
    return float(acceptance_probs(case.p, case.q)[x])


def _position_distribution(case: AcceptCase) -> Tensor:
    """The exact distribution (V,) of the token the step returns for this drafted token."""
    kept = _kept_probability(case)
    out = (1.0 - kept) * residual_probs(case.p, case.q).double()
    out[case.drafted_token] += kept
    return out


def _l1_threshold(vocab_size: int, draws: int, cases: int) -> float:
    """L1 distance that the shares of `draws` exact draws pass with probability <= alpha / cases.

    Weissman et al. (2003), "Inequalities for the L1 deviation of the empirical distribution":
    P(||shares - P||_1 >= eps) <= (2^V - 2) exp(-draws eps^2 / 2), for any P on V outcomes.
    """
    return math.sqrt(2.0 / draws * math.log((2**vocab_size - 2) * cases / ACCEPT_FALSE_ALARM))


def _token_id(value: object) -> int | None:
    """The token id a learner's step returned (an int or a one-element integer tensor), or None."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.dtype == torch.bool:
            return None
        return int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _call_step(
    fn: Callable, case: AcceptCase, generator: torch.Generator, calls: int
) -> tuple[list[int], str | None, Exception | None]:
    """(the tokens returned, what is wrong or None, the exception raised) for `calls` calls."""
    p, q = case.p.clone(), case.q.clone()
    tokens: list[int] = []
    vocab_size = p.shape[0]
    for _ in range(calls):
        try:
            value = fn(p, q, case.drafted_token, generator)
        except Exception as error:  # noqa: BLE001 (the learner's bug is the report)
            raised = f"your function raised {type(error).__name__}: {error}"
            if not (torch.equal(p, case.p) and torch.equal(q, case.q)):
                # The error most likely follows from inputs that an earlier call changed.
                return tokens, f"your function changed p or q in place, then {raised[14:]}", None
            return tokens, raised, error
        token = _token_id(value)
        if token is None:
            what = "a tuple" if isinstance(value, tuple) else repr(value)
            return tokens, f"your function returned {what}, expected a token id (an int)", None
        if not 0 <= token < vocab_size:
            return (
                tokens,
                (
                    f"your function returned token {token}, but the vocabulary has {vocab_size} "
                    f"tokens (ids 0..{vocab_size - 1})"
                ),
                None,
            )
        tokens.append(token)
    if not (torch.equal(p, case.p) and torch.equal(q, case.q)):
        return tokens, "your function changed p or q in place", None
    return tokens, None, None


_ACCEPT_STEPS = (
    "draw u = torch.rand((), generator=generator); keep the drafted token x if u < P(x) / Q(x) "
    "(the same rule as u < min(1, P(x)/Q(x)), since u < 1); otherwise return a draw from the "
    "residual torch.clamp(p - q, min=0) with torch.multinomial(..., 1, generator=generator), "
    "which normalises it."
)
_ACCEPT_FROM_P_HINT = (
    "after a rejection you drew from P itself. Keeping x with probability min(1, P(x)/Q(x)) "
    "already gives every token min(P, Q); a rejection must add only what is still missing, the "
    "residual max(0, P - Q) normalised. Drawing from P gives the tokens the draft proposes too "
    "often still more."
)
_ACCEPT_FROM_Q_HINT = (
    "after a rejection you drew from Q, the draft's distribution, again. Draw from the residual "
    "max(0, P - Q) normalised: the tokens the target wants more than the draft offers."
)
_ACCEPT_INVERTED_HINT = (
    "you kept x with probability min(1, Q(x)/P(x)): the ratio is upside down. P, the target's "
    "distribution, goes on top, so that a proposal the target likes at least as much as the "
    "draft (P(x) >= Q(x)) is always kept."
)
_ACCEPT_NO_DRAW_HINT = (
    "you keep x exactly when P(x) >= Q(x), without a random draw. When P(x) < Q(x), x must still "
    "be kept sometimes, with probability P(x)/Q(x): compare a uniform draw with that ratio."
)
_ACCEPT_WITH_P_HINT = (
    "you kept x with probability P(x). The rule divides by Q(x), the chance that the draft "
    "proposed x: keep it with probability min(1, P(x)/Q(x))."
)
_ACCEPT_BERNOULLI_HINT = (
    "torch.bernoulli needs a probability in [0, 1], and P(x)/Q(x) is above 1 whenever the "
    "target likes x more than the draft does: use min(1, P(x)/Q(x)), or compare a uniform draw "
    "with the ratio (u < P(x)/Q(x) is the same rule, since u < 1)."
)
_ACCEPT_NEGATIVE_HINT = (
    "the residual is max(0, P - Q): clamp the negative differences to 0 (torch.clamp(p - q, "
    "min=0)) before drawing from it; torch.multinomial refuses negative weights."
)
_ACCEPT_EMPTY_HINT = (
    "draw from the residual only after a rejection. When P = Q every proposal is kept and "
    "max(0, P - Q) is all zeros (divided by its sum, NaN): there is nothing to draw from."
)
_ACCEPT_PAST_END_HINT = (
    "a token id past the vocabulary. If you draw by inverse CDF (a uniform against a running "
    "sum), divide the residual by its sum first: unnormalised, its running sum stops below 1 "
    "and the uniform can land past its end. torch.multinomial normalises by itself."
)
_ACCEPT_TUPLE_HINT = (
    "return the token id alone. lessonlib's accept_or_resample also says whether it kept the "
    "proposal; this step returns only the token."
)
_ACCEPT_IN_PLACE_HINT = (
    "compute new tensors (p - q, torch.clamp(...)) instead of changing p or q in place "
    "(p -= q): the caller still needs them."
)
_ACCEPT_GENERATOR_HINT = (
    "pass generator=generator to every draw (torch.rand(..., generator=generator), "
    "torch.multinomial(..., generator=generator)): without it the global generator draws, and "
    "a seed no longer reproduces the text."
)


def _always_kept_hint(case: AcceptCase) -> str:
    return (
        "you returned the drafted token every time. Keep it only with probability "
        f"min(1, P(x)/Q(x)), here {_number(_kept_probability(case), 3)} (P on top: not "
        "Q(x)/P(x)), and draw from the residual max(0, P - Q) when the uniform draw is not "
        "below it."
    )


def _accept_slips(case: AcceptCase) -> list[tuple[Tensor, str]]:
    """Per classic slip, the exact distribution it returns on this case and the hint naming it."""
    p, q = case.p.double(), case.q.double()
    x = case.drafted_token
    kept = _kept_probability(case)
    residual = residual_probs(case.p, case.q).double()
    only_x = torch.zeros_like(p)
    only_x[x] = 1.0

    def mix(keep: float, fallback: Tensor) -> Tensor:
        return keep * only_x + (1.0 - keep) * fallback

    inverted = 1.0 if p[x] == 0 else min(1.0, float(q[x] / p[x]))
    return [
        (only_x, _always_kept_hint(case)),
        (mix(kept, p), _ACCEPT_FROM_P_HINT),
        (mix(kept, q), _ACCEPT_FROM_Q_HINT),
        (mix(inverted, residual), _ACCEPT_INVERTED_HINT),
        (only_x if p[x] >= q[x] else residual, _ACCEPT_NO_DRAW_HINT),
        (mix(float(p[x]), residual), _ACCEPT_WITH_P_HINT),
    ]


def _accept_hint(
    case: AcceptCase, shares: Tensor | None, problem: str, error: Exception | None, eps: float
) -> str:
    """Name the classic slip that explains a failing case, else the steps."""
    if error is not None:
        text = str(error)
        if "p_in >= 0 && p_in <= 1" in text:
            return _ACCEPT_BERNOULLI_HINT
        if torch.equal(case.p, case.q) and ("nan" in text or "sum of probabilities" in text):
            return _ACCEPT_EMPTY_HINT
        if "element < 0" in text:
            return _ACCEPT_NEGATIVE_HINT
        return _ACCEPT_STEPS
    if "returned a tuple" in problem:
        return _ACCEPT_TUPLE_HINT
    if "but the vocabulary has" in problem:
        return _ACCEPT_PAST_END_HINT
    if "in place" in problem:
        return _ACCEPT_IN_PLACE_HINT
    if shares is None:
        return _ACCEPT_STEPS
    expected = _position_distribution(case)
    # The slip whose exact distribution the shares fit as closely as a correct step's shares fit
    # its own (within eps), among those that differ from the right one here; the nearest wins.
    fits = [
        (float((shares - slip).abs().sum()), advice)
        for slip, advice in _accept_slips(case)
        if float((slip - expected).abs().sum()) > 1e-6
    ]
    fits = [(distance, advice) for distance, advice in fits if distance <= eps]
    return min(fits, key=lambda fit: fit[0])[1] if fits else _ACCEPT_STEPS


def _accept_failure(
    number: int,
    total: int,
    case: AcceptCase,
    *,
    problem: str,
    advice: str,
    shares: Tensor | None,
    draws: int,
) -> CheckResult:
    """The report of a failing case: the position, what was expected, what came back, a hint."""
    name = "accept/reject step"
    lines = [f"{name}: case {number} of {total} fails" + (f" ({case.note})." if case.note else ".")]
    lines.append("  p        = " + _format(case.p, 3))
    lines.append("  q        = " + _format(case.q, 3))
    lines.append(f"  drafted_token = {case.drafted_token}")
    if bool((case.p > case.q).any()):
        residual = "max(0, P - Q) normalised = " + _format(residual_probs(case.p, case.q), 3)
    else:
        residual = "max(0, P - Q) is all zeros (nothing is ever rejected)"
    kept = _number(_kept_probability(case), 3)
    lines.append(f"  kept with probability min(1, P(x)/Q(x)) = {kept}; residual {residual}")
    expected = _format(_position_distribution(case), 3)
    lines.append(f"  expected = {expected} (the distribution of the token returned)")
    if shares is not None:
        lines.append("  got      = " + _format(shares, 3) + f" (shares of {draws} calls)")
    lines.append(f"  Problem: {problem.rstrip('.')}.")
    lines.append(f"  Hint: {advice}")
    return CheckResult(passed=False, cases_run=number, first_failure="\n".join(lines), name=name)


def check_my_accept_or_resample(fn: Callable, *, seed: int = 0, hint: bool = True) -> CheckResult:
    """Check `fn(p, q, drafted_token, generator) -> token` against lessonlib.speculative.

    The step is random, so its distribution is checked: for each position (P, Q, drafted x) the
    shares of ACCEPT_DRAWS calls must lie near the exact distribution of the right step's token,
    min(1, P(x)/Q(x)) on x and the rest spread as the residual max(0, P - Q) normalised (built from lessonlib's
    `acceptance_probs` and `residual_probs`). The L1 bound of Weissman et al. (2003) sets how
    near, so that a correct step fails with probability below ACCEPT_FALSE_ALARM in all; the
    seeds are fixed, so a run gives the same verdict every time. Then a seed must reproduce the
    tokens (every draw uses `generator`). u <= P(x)/Q(x) instead of u <, or no min with 1 in
    u < P(x)/Q(x), is the same rule (torch.rand's u is < 1 and equals the ratio about once in 2^24
    draws); an unnormalised residual is harmless with torch.multinomial, which normalises.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    seed = check_int("seed", seed, low=0)
    name = "accept/reject step"
    cases = accept_or_resample_cases(seed=seed)
    total = len(cases) + 1  # the last check: the same seed gives the same tokens
    with torch_threads(GENERATION_THREADS):  # tiny tensors: one thread is fastest
        for number, case in enumerate(cases, start=1):
            generator = torch.Generator().manual_seed(1000 * seed + number)
            tokens, problem, error = _call_step(fn, case, generator, ACCEPT_DRAWS)
            if isinstance(error, NotImplementedError):
                return _not_written(fn, name)
            vocab_size = case.p.shape[0]
            eps = _l1_threshold(vocab_size, ACCEPT_DRAWS, len(cases))
            shares = None
            if problem is None:
                counts = torch.bincount(torch.tensor(tokens), minlength=vocab_size)
                shares = counts.double() / ACCEPT_DRAWS
                distance = float((shares - _position_distribution(case)).abs().sum())
                if distance > eps:
                    problem = (
                        f"the shares are {distance:.2f} from the expected distribution (sum of absolute "
                        f"differences); a correct step stays within {eps:.2f} (it fails this "
                        "check less than once in a million runs)"
                    )
            if problem is not None:
                advice = _accept_hint(case, shares, problem, error, eps)
                result = _accept_failure(
                    number, total, case, problem=problem, advice=advice, shares=shares,
                    draws=ACCEPT_DRAWS,
                )  # fmt: skip
                return result if hint else result.without_hint()
        runs = [
            _call_step(fn, cases[0], torch.Generator().manual_seed(seed), _REPEAT_CALLS)[0]
            for _ in range(2)
        ]
    if runs[0] != runs[1]:
        result = _accept_failure(
            total, total, replace(cases[0], note="the same seed must give the same tokens"),
            problem=(
                f"two runs of {_REPEAT_CALLS} calls with generators seeded alike returned "
                "different tokens"
            ),
            advice=_ACCEPT_GENERATOR_HINT, shares=None, draws=_REPEAT_CALLS,
        )  # fmt: skip
        return result if hint else result.without_hint()
    return CheckResult(passed=True, cases_run=total, first_failure=None, name=name)
