"""Shared checker machinery: cases, results, comparing logits, and the run against a reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

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
