"""Exercise checkers: run a learner's function against the library's on many cases.

`check_against_reference` is the engine: it calls the learner's function on each case (hand-
written edge cases first, so that the first failure is small and readable, then seeded random
ones), reports an exception from the learner's code instead of raising it, compares the result
with the reference and stops at the first disagreement. A case may instead expect an exception
(temperature 0, which the reference refuses), and a result that shares memory with the input
(the input itself or a view of it) fails: the transforms return a new tensor. The result prints
either "All N cases pass" or that first failing input in plain words: the logits (rounded), the
parameter, what was expected, what came back, what differs, and a hint.

`check_my_temperature`, `check_my_top_k` and `check_my_top_p` check the three transforms of
`lessonlib.sampling`; their cases include single rows (V,) and batches (B, V), ties, -inf
entries and, for top-p, probabilities that hit p exactly. `check_my_min_p` checks min-p
(`lessonlib.truncation.filter_min_p`) the same way, with a probability exactly at min_p times the
top one among its cases, and accepts every correct formulation (probabilities, exp(logits)
against min_p * exp(max logit), log space). `check_my_greedy` checks a learner's whole greedy
generation loop against `lessonlib.generation.generate` at temperature 0. A function that
still raises NotImplementedError (the notebook's stub) gets one friendly line, `NOT_WRITTEN`,
instead of a report; `hint=False` leaves the hint out (a find-the-bug exercise whose hint is
folded in the notebook). The buggy "natural first attempts" these checkers exist to
catch live in the notebooks (learner code) and in the tests, not here. No widgets, no drawing.

`check_my_accept_or_resample` checks one position of speculative decoding: a random step, so
it compares the distribution of what the step returns with the exact one from
`lessonlib.speculative`, at a stated false-alarm rate.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lessonlib.generation import LanguageModel, generate
from lessonlib.sampling import apply_temperature, filter_top_k, filter_top_p
from lessonlib.speculative import acceptance_probs, residual_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.truncation import filter_min_p
from lessonlib.validation import check_int

__all__ = [
    "ACCEPT_DRAWS",
    "ACCEPT_FALSE_ALARM",
    "GREEDY_PROMPTS",
    "NOT_WRITTEN",
    "AcceptCase",
    "Case",
    "CheckResult",
    "Failure",
    "accept_or_resample_cases",
    "check_against_reference",
    "check_my_accept_or_resample",
    "check_my_greedy",
    "check_my_min_p",
    "check_my_temperature",
    "check_my_top_k",
    "check_my_top_p",
    "compare_kept_prefix",
    "compare_logits",
    "min_p_cases",
    "temperature_cases",
    "top_k_cases",
    "top_p_cases",
]

_NEG_INF = float("-inf")
# Values agree when |got - expected| <= atol + rtol * |expected|: float32 arithmetic done in a
# different order (e.g. multiplying by 1 / temperature) must pass, a wrong formula must not.
_RTOL = 1e-5
_ATOL = 1e-6


@dataclass(frozen=True)
class Case:
    """One input for the learner's function: logits, the parameter, and what the case probes."""

    logits: Tensor  # (V,) or (B, V)
    param: float | int  # the temperature, k or p
    note: str = ""  # in words, e.g. "ties at the k-th value"
    # The exception the function must raise (as the reference does), or None for a result.
    raises: type[Exception] | None = None


@dataclass(frozen=True)
class Failure:
    """Everything known about a failing case, handed to a checker's hint function."""

    case: Case
    expected: Tensor | None  # None when the case expects an exception (case.raises)
    got: object  # what the learner's function returned (None if it raised)
    error: Exception | None  # the exception it raised, if any
    rows_ok: bool  # a batch case whose rows each pass when given to the function one at a time


@dataclass(frozen=True, repr=False)
class CheckResult:
    """The outcome of a check: passed or not, cases run, and the first failure in words."""

    passed: bool
    cases_run: int  # cases run before stopping (all of them when passed)
    first_failure: str | None  # None when passed
    name: str = "your function"
    not_written: bool = False  # the function still raises NotImplementedError (a stub)

    def __str__(self) -> str:
        if self.passed:
            return f"All {self.cases_run} cases pass ({self.name})."
        return str(self.first_failure)

    def without_hint(self) -> CheckResult:
        """The same result with its "Hint:" line removed (for a find-the-bug exercise)."""
        if self.first_failure is None:
            return self
        kept = [line for line in self.first_failure.split("\n") if not line.startswith("  Hint: ")]
        return replace(self, first_failure="\n".join(kept))

    # A notebook shows the result as a cell's last expression: print the words, not the fields.
    __repr__ = __str__


# What a stub gets: the learner has not written the body yet, so there is nothing to report.
NOT_WRITTEN = "not written yet: fill in the body of {name} above, then run this cell again."


def _not_written(fn: Callable, name: str) -> CheckResult:
    """The result for a function that raised NotImplementedError: one friendly line."""
    text = NOT_WRITTEN.format(name=getattr(fn, "__name__", "your function"))
    return CheckResult(passed=False, cases_run=0, first_failure=text, name=name, not_written=True)


Compare = Callable[[Tensor, Tensor, Tensor], "str | None"]
Hint = Callable[[Failure], "str | None"]


def _number(value: float, decimals: int) -> str:
    """One value for a message: -inf spelled out, others rounded."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return repr(round(value, decimals) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _format(values: Tensor, decimals: int = 2, indent: int = 0) -> str:
    """A (V,) or (B, V) tensor as a list literal, one row per line for a batch."""
    rows = values.detach().to(torch.float64).cpu()
    if rows.dim() == 1:
        return "[" + ", ".join(_number(v, decimals) for v in rows.tolist()) + "]"
    lines = [_format(row, decimals) for row in rows]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _where(row: int, batched: bool) -> str:
    return f"row {row}: " if batched else ""


def compare_logits(logits: Tensor, expected: Tensor, got: Tensor) -> str | None:
    """None if `got` matches `expected` (shape, -inf pattern, values), else what differs."""
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
    if not got.is_floating_point():
        return f"expected floating-point logits, got dtype {got.dtype}"
    exp = expected.detach().to(torch.float64).reshape(-1, expected.shape[-1])
    out = got.detach().to(torch.float64).cpu().reshape(-1, expected.shape[-1])
    batched = expected.dim() == 2
    for row in range(exp.shape[0]):
        e, g = exp[row], out[row]
        if torch.isnan(g).any():
            return f"{_where(row, batched)}got NaN at token {int(torch.isnan(g).nonzero()[0])}"
        kept_e = torch.isfinite(e).nonzero().flatten().tolist()
        kept_g = torch.isfinite(g).nonzero().flatten().tolist()
        if kept_e != kept_g or torch.isposinf(g).any():
            return (
                f"{_where(row, batched)}expected finite values at tokens {kept_e} "
                f"(the others -inf), got them at tokens {kept_g}"
            )
        close = (g - e).abs() <= _ATOL + _RTOL * e.abs()
        bad = (~close & torch.isfinite(e)).nonzero().flatten().tolist()
        if bad:
            t = bad[0]
            return (
                f"{_where(row, batched)}token {t}: expected {_number(float(e[t]), 4)}, "
                f"got {_number(float(g[t]), 4)}"
            )
    return None


def compare_kept_prefix(logits: Tensor, expected: Tensor, got: Tensor) -> str | None:
    """Like `compare_logits`, but tied logits at the cut may be kept in either order.

    Which of several equal logits a sort puts first is arbitrary (unless the sort is stable), so
    a filter that keeps a top prefix is right when it keeps as many tokens as the reference, each
    with its own logit, and the same multiset of logit values.
    """
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
    if not got.is_floating_point():
        return f"expected floating-point logits, got dtype {got.dtype}"
    src = logits.detach().to(torch.float64).reshape(-1, logits.shape[-1])
    exp = expected.detach().to(torch.float64).reshape(-1, expected.shape[-1])
    out = got.detach().to(torch.float64).cpu().reshape(-1, expected.shape[-1])
    batched = expected.dim() == 2
    for row in range(exp.shape[0]):
        s, e, g = src[row], exp[row], out[row]
        kept_e = torch.isfinite(e).nonzero().flatten().tolist()
        kept_g = torch.isfinite(g).nonzero().flatten().tolist()
        same_values = sorted(s[kept_e].tolist()) == sorted(s[kept_g].tolist())
        if len(kept_e) != len(kept_g) or not same_values or torch.isposinf(g).any():
            return (
                f"{_where(row, batched)}expected finite values at tokens {kept_e} "
                f"(the others -inf), got them at tokens {kept_g}"
            )
        # Kept tokens keep their own logits unchanged.
        if not torch.equal(torch.isnan(g), torch.zeros_like(g, dtype=torch.bool)):
            return f"{_where(row, batched)}got NaN at token {int(torch.isnan(g).nonzero()[0])}"
        close = (g[kept_g] - s[kept_g]).abs() <= _ATOL + _RTOL * s[kept_g].abs()
        if not bool(close.all()):
            t = kept_g[int((~close).nonzero()[0])]
            return (
                f"{_where(row, batched)}token {t}: expected its logit {_number(float(s[t]), 4)} "
                f"unchanged, got {_number(float(g[t]), 4)}"
            )
    return None


def _run(fn: Callable, logits: Tensor, param: float) -> tuple[object, Exception | None]:
    """Call the learner's function on a copy of `logits`; (result, None) or (None, exception)."""
    try:
        return fn(logits, param), None
    # Any exception: the learner's bug is the report, not a crash of the checker.
    except Exception as error:  # noqa: BLE001
        return None, error


def _rows_ok(fn: Callable, reference_fn: Callable, case: Case, compare: Compare) -> bool:
    """True if a batch case fails as a whole but each of its rows passes on its own."""
    if case.raises is not None or case.logits.dim() != 2 or case.logits.shape[0] < 2:
        return False
    for row in case.logits:
        got, error = _run(fn, row.clone(), case.param)
        if error is not None or not isinstance(got, Tensor):
            return False
        if compare(row, reference_fn(row, case.param), got) is not None:
            return False
    return True


_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: every "
    "row must use its own values. Work along the last dimension (dim=-1) and keep that "
    "dimension wherever a per-row value must broadcast against the row (keepdim=True)."
)
_TOP_K_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: each row "
    "has its own k-th largest value. Keep its last dimension, kth = torch.topk(logits, k, "
    "dim=-1).values[..., -1:] (not [..., -1]), so that logits < kth compares each row with its "
    "own k-th value instead of broadcasting (B,) against the tokens."
)
_TOP_P_BATCH_HINT = (
    "Your function is right for each row on its own but not for the rows as a batch: sort, "
    "cumsum and scatter along dim=-1, and mask with a boolean tensor of the full (B, V) shape. "
    "Indexing with sorted_idx[mask] gives a flat list of token ids that forgets which row each "
    "came from."
)
_FILL_HINT = (
    "fill the removed tokens with float('-inf'), not a large negative number such as -1e9: "
    "such a token keeps a (tiny) probability, a later stage can bring it back (a higher "
    "temperature, a penalty, a sum of logits), and other code tells removed tokens by isinf."
)
_IN_PLACE_HINT = (
    "return a new tensor instead (e.g. logits.masked_fill(...) or logits / t, not "
    "logits[...] = ...)."
)
_NEW_TENSOR_HINT = "return a new tensor (e.g. logits.clone()), not the input itself."


def _shares_memory(got: Tensor, given: Tensor) -> bool:
    """True if `got` is `given` or a view of it: changing one would change the other."""
    return got.untyped_storage().data_ptr() == given.untyped_storage().data_ptr()


def _expected_raise(reference_fn: Callable, case: Case, number: int) -> None:
    """Make sure the reference raises `case.raises` too, so the case cannot demand a wrong rule."""
    try:
        reference_fn(case.logits, case.param)
    except case.raises:
        return
    raise AssertionError(
        f"case {number} expects {case.raises.__name__}, but the reference function did not raise it"
    )


def _raise_problem(raises: type[Exception], got: object, error: Exception | None) -> str | None:
    """What is wrong when a case expects `raises`, or None if the function raised it."""
    if isinstance(error, raises):
        return None
    if error is not None:
        return f"your function raised {type(error).__name__}: {error}; expected a {raises.__name__}"
    return f"expected your function to raise {raises.__name__}, but it returned a result"


def _result_problem(
    compare: Compare, logits: Tensor, expected: Tensor, given: Tensor, got: object, error: object
) -> tuple[str | None, str | None]:
    """(what is wrong or None, the advice when the problem has a fixed one) for a result case."""
    if error is not None:
        return f"your function raised {type(error).__name__}: {error}", None
    if not isinstance(got, Tensor):
        return f"your function returned a {type(got).__name__}, expected a torch.Tensor", None
    problem = compare(logits, expected, got)
    if problem is not None:
        return problem, None
    if not torch.equal(given, logits):
        return "your function changed its input logits in place", _IN_PLACE_HINT
    # The input itself or a view of it: the caller's logits would change with the result.
    if _shares_memory(got, given):
        return (
            "your function returned its input logits (or a view of them), not a new tensor: "
            "changing the result would change the logits too"
        ), _NEW_TENSOR_HINT
    return None, None


def check_against_reference(
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    *,
    name: str,
    compare: Compare = compare_logits,
    param_name: str = "param",
    hint: Hint | None = None,
    describe: Callable[[Case], list[str]] | None = None,
    batch_hint: str = _BATCH_HINT,
) -> CheckResult:
    """Run `learner_fn(logits, param)` on each case against `reference_fn`; stop at the first miss.

    `compare(logits, expected, got)` returns None when they agree, else what differs in words;
    `hint(failure)` may add advice for a failure; `describe(case)` may add lines about the
    input (e.g. its probabilities). The learner's function gets a copy of the logits, and
    changing that copy in place counts as a failure (transforms must be pure), as does
    returning it or a view of it. A case with `raises` set passes only if the function raises
    that exception, as the reference must. `batch_hint` is the advice when each row of a batch
    passes on its own; a function that raises NotImplementedError is a stub, not yet written.
    """
    if not callable(learner_fn):
        raise TypeError(f"learner_fn must be a function, got {type(learner_fn).__name__}")
    if not cases:
        raise ValueError("cases must hold at least one Case, got none")
    total = len(cases)
    for number, case in enumerate(cases, start=1):
        if case.raises is not None:
            _expected_raise(reference_fn, case, number)
        expected = None if case.raises is not None else reference_fn(case.logits, case.param)
        given = case.logits.clone()
        got, error = _run(learner_fn, given, case.param)
        if isinstance(error, NotImplementedError):
            return _not_written(learner_fn, name)
        if expected is None:
            problem, advice = _raise_problem(case.raises, got, error), None
        else:
            problem, advice = _result_problem(compare, case.logits, expected, given, got, error)
        if problem is None:
            continue
        failure = Failure(
            case=case,
            expected=expected,
            got=got,
            error=error,
            rows_ok=_rows_ok(learner_fn, reference_fn, case, compare),
        )
        # A problem that names its own fix (in place, shared memory) keeps it; otherwise ask
        # whether the rows pass one by one, then the checker's hint.
        if advice is None and _filled_with_a_finite_value(failure):
            advice = _FILL_HINT
        if advice is None:
            advice = batch_hint if failure.rows_ok else (hint(failure) if hint else None)
        lines = [
            f"{name}: case {number} of {total} fails" + (f" ({case.note})." if case.note else ".")
        ]
        lines.append("  logits   = " + _format(case.logits, indent=13))
        lines.append(f"  {param_name:<8} = {case.param!r}")
        if describe is not None:
            lines.extend("  " + line for line in describe(case))
        if expected is None:
            lines.append(f"  expected = raises {case.raises.__name__}")
        else:
            lines.append("  expected = " + _format(expected, indent=13))
        if isinstance(got, Tensor) and error is None:
            lines.append("  got      = " + _format(got, indent=13))
        lines.append(f"  Problem: {problem.rstrip('.')}.")
        if advice:
            lines.append(f"  Hint: {advice}")
        return CheckResult(
            passed=False, cases_run=number, first_failure="\n".join(lines), name=name
        )
    return CheckResult(passed=True, cases_run=total, first_failure=None, name=name)


def _filled_with_a_finite_value(failure: Failure) -> bool:
    """True if the result has huge finite negatives exactly where the reference has -inf."""
    got, expected = failure.got, failure.expected
    if not isinstance(got, Tensor) or expected is None or got.shape != expected.shape:
        return False
    if not got.is_floating_point():
        return False
    removed = torch.isneginf(expected)
    g = got.detach().to(torch.float64)
    huge = torch.isfinite(g) & (g <= -1e4)
    return bool(removed.any()) and torch.equal(huge | torch.isneginf(g), removed)


# ----- cases -------------------------------------------------------------------------------------


def _grid_logits(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Logits on a grid of halves in [-3, 3] (exact, readable, often tied), some -inf.

    Every row keeps at least one finite value, as the sampler requires.
    """
    values = torch.randint(-6, 7, shape, generator=generator).to(torch.float32) / 2
    drop = torch.rand(shape, generator=generator) < 0.15
    rows = values.reshape(-1, shape[-1])
    drop_rows = drop.reshape(-1, shape[-1])
    full = drop_rows.all(dim=-1)
    drop_rows[:, 0] &= ~full
    return rows.masked_fill(drop_rows, _NEG_INF).reshape(shape)


def _random_shape(generator: torch.Generator) -> tuple[int, ...]:
    """(V,) or (B, V) with B in 2..5 and V in 2..8, B == V sometimes (no broadcasting error)."""
    vocab_size = int(torch.randint(2, 9, (), generator=generator))
    kind = int(torch.randint(0, 3, (), generator=generator))
    if kind == 0:
        return (vocab_size,)
    rows = (
        vocab_size
        if kind == 1 and vocab_size <= 5
        else int(torch.randint(2, 6, (), generator=generator))
    )
    return (rows, vocab_size)


def _row_logits(probs: Sequence[float]) -> Tensor:
    """float64 log-probabilities; for powers of two their softmax and cumsum are exact."""
    return torch.tensor(probs, dtype=torch.float64).log()


_ONE_ROW = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0])
_BATCH = torch.tensor(
    [[2.0, -1.0, 0.5, 3.0, 1.0], [0.0, 4.0, 1.0, -2.0, 3.5], [-1.0, -3.0, -2.0, -0.5, -4.0]]
)
# Square (B == V), so that comparing with a (B,) column broadcasts without an error.
_SQUARE = torch.tensor(
    [[1.0, 3.0, 2.0, 0.0], [-2.0, 0.5, 1.5, 4.0], [2.5, 2.5, -1.0, 0.0], [0.0, -1.0, -3.0, -0.5]]
)
_WITH_NEG_INF = torch.tensor([0.0, _NEG_INF, 2.0, _NEG_INF, 1.0])


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


# ----- hints -------------------------------------------------------------------------------------


_NO_SOFTMAX_HINT = "return logits, not probabilities: no softmax in this function."


def _as_rows(values: Tensor) -> Tensor:
    return values.detach().to(torch.float64).reshape(-1, values.shape[-1])


def _looks_like_probs(g: Tensor) -> bool:
    """True if every row of `g` (as from `_as_rows`) is non-negative and sums to 1."""
    return bool((g >= 0).all()) and torch.allclose(g.sum(-1), torch.ones(g.shape[0], dtype=g.dtype))


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


def _kept_counts(values: Tensor) -> list[int]:
    return torch.isfinite(_as_rows(values)).sum(-1).tolist()


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


# ----- the checkers ------------------------------------------------------------------------------


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


# ----- a whole decoding loop ----------------------------------------------------------------------

# Prompts for TinyTales models: an empty one, a constrained one, a whole opening, and one whose
# story is about to end (so that the loop must stop at the end marker).
GREEDY_PROMPTS = (
    "",
    "Once upon a ti",
    "Long ago, in a quiet town, there lived a shy kid named Zoe.",
    (
        "Once upon a time, there was a little kid named Mia. Mia had a little dog and a red ball. "
        "One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like your "
        "dog.' Mia played with the ball. In the end, Mia and Tom were the best of fri"
    ),
)


def _shorten(text: str, keep: int = 40) -> str:
    return text if len(text) <= 2 * keep + 3 else text[:keep] + "..." + text[-keep:]


def _greedy_hint(prompt: str, expected: str, got: str, boundary: str) -> str:
    """Name the usual slips in a greedy loop from how its text differs from the reference."""
    if prompt and got.startswith(prompt) and not expected.startswith(prompt):
        return "return only the new characters, without the prompt."
    if got.startswith(expected) and got[len(expected)] == boundary:
        return (
            "stop when the model picks the boundary token (tokenizer.boundary_id): it ends the "
            "story. Do not include it in the text."
        )
    if expected.startswith(got):
        return "you stopped early: keep going for max_new_tokens steps unless the story ends."
    return _GREEDY_STEPS


_GREEDY_STEPS = (
    "start the context with the boundary token (the model reads every story from its start "
    "marker), take the logits of the last position (logits[0, -1]), pick their argmax and "
    "append it."
)


def check_my_greedy(
    fn: Callable,
    *,
    model: LanguageModel,
    tokenizer: CharTokenizer,
    prompts: Sequence[str] = GREEDY_PROMPTS,
    max_new_tokens: int = 20,
    hint: bool = True,
) -> CheckResult:
    """Check `fn(model, prompt, tokenizer=..., max_new_tokens=...) -> str` against greedy decoding.

    The reference is `generate(..., temperature=0).text`: the continuation only, stopped (and
    cut) at the boundary token. An exception in `fn` is reported, not raised.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if not prompts:
        raise ValueError("prompts must hold at least one prompt, got none")
    name = "greedy decoder"
    for number, prompt in enumerate(prompts, start=1):
        expected = generate(
            model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens, temperature=0
        ).text
        try:
            # No gradients (the learner's loop need not turn them off), and the thread count that
            # `generate` uses: tiny per-step matrices run faster on one thread.
            with torch.inference_mode(), torch_threads(GENERATION_THREADS):
                got = fn(model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens)
        except NotImplementedError:
            return _not_written(fn, name)
        except Exception as error:  # noqa: BLE001 (the learner's bug is the report)
            got, problem = None, f"your function raised {type(error).__name__}: {error}"
            advice = _GREEDY_STEPS
        else:
            if not isinstance(got, str):
                problem = f"your function returned a {type(got).__name__}, expected a str"
                advice = "decode the new token ids with tokenizer.decode(...)."
            elif got == expected:
                continue
            else:
                at = next(
                    (i for i, (a, b) in enumerate(zip(expected, got)) if a != b),
                    min(len(expected), len(got)),
                )
                wanted = repr(expected[at]) if at < len(expected) else "the end of the text"
                found = repr(got[at]) if at < len(got) else "the end of the text"
                problem = f"the texts differ from character {at}: expected {wanted}, got {found}"
                advice = _greedy_hint(prompt, expected, got, tokenizer.boundary)
        lines = [f"{name}: prompt {number} of {len(prompts)} fails."]
        lines.append(f"  prompt   = {_shorten(prompt)!r}")
        lines.append(f"  max_new_tokens = {max_new_tokens}")
        lines.append(f"  expected = {_shorten(expected)!r}")
        if isinstance(got, str):
            lines.append(f"  got      = {_shorten(got)!r}")
        lines.append(f"  Problem: {problem.rstrip('.')}.")
        lines.append(f"  Hint: {advice}")
        result = CheckResult(
            passed=False, cases_run=number, first_failure="\n".join(lines), name=name
        )
        return result if hint else result.without_hint()
    return CheckResult(passed=True, cases_run=len(prompts), first_failure=None, name=name)


# ----- one position of speculative decoding -------------------------------------------------------

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
