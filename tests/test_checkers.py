"""Tests for lessonlib.teaching.checkers: each checker passes correct code and catches its bugs.

The buggy functions below are the "natural first attempts" a learner writes; each must fail
with a message that shows the failing input, and correct implementations (the library's and
independent ones written here) must pass every case.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.model import GPT, GPTConfig
from lessonlib.paths import REPO_ROOT
from lessonlib.sampling import apply_temperature, filter_top_k, filter_top_p
from lessonlib.speculative import accept_or_resample
from lessonlib.teaching.checkers import (
    ACCEPT_DRAWS,
    GREEDY_PROMPTS,
    Case,
    CheckResult,
    accept_or_resample_cases,
    check_against_reference,
    check_my_accept_or_resample,
    check_my_greedy,
    check_my_min_p,
    check_my_temperature,
    check_my_top_k,
    check_my_top_p,
    compare_kept_prefix,
    compare_logits,
    min_p_cases,
    temperature_cases,
    top_k_cases,
    top_p_cases,
)
from lessonlib.teaching.checkers import speculative as accept_checker
from lessonlib.tinytales import ALPHABET
from lessonlib.tokenizer import CharTokenizer
from lessonlib.truncation import filter_min_p

NEG_INF = float("-inf")


# ----- independent correct implementations ---------------------------------------------------


def temperature_by_reciprocal(logits: Tensor, temperature: float) -> Tensor:
    """Multiplying by 1 / t rounds differently from dividing; still right (0 refused first)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; greedy is its own branch")
    return logits * (1.0 / temperature)


def top_k_by_sorting(logits: Tensor, k: int) -> Tensor:
    """Sort each row and compare with its k-th value, kept as a column."""
    kth = logits.sort(dim=-1, descending=True).values[..., k - 1 : k]
    return torch.where(logits >= kth, logits, torch.full_like(logits, NEG_INF))


def top_k_row_by_row(logits: Tensor, k: int) -> Tensor:
    """Plain Python over rows and tokens."""
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    out = []
    for row in rows:
        kth = sorted(row, reverse=True)[min(k, len(row)) - 1]
        out.append([x if x >= kth else NEG_INF for x in row])
    return torch.tensor(out, dtype=logits.dtype).reshape(logits.shape)


def top_p_float32_unstable(logits: Tensor, p: float) -> Tensor:
    """float32 arithmetic and an unstable sort: ties at the cut may come out in any order."""
    sorted_logits, sorted_idx = torch.sort(logits.float(), dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    keep_sorted = probs.cumsum(dim=-1) - probs < p
    keep = keep_sorted.scatter(-1, sorted_idx, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_reversed_ties(logits: Tensor, p: float) -> Tensor:
    """Break ties towards the *last* index (the opposite of the library), in plain Python."""
    out = []
    for row in logits.reshape(-1, logits.shape[-1]).to(torch.float64):
        probs = torch.softmax(row, dim=-1).tolist()
        order = sorted(range(len(probs)), key=lambda i: (-probs[i], -i))
        kept, mass = set(), 0.0
        for i in order:
            if mass >= p:
                break
            kept.add(i)
            mass += probs[i]
        out.append([x if i in kept else NEG_INF for i, x in enumerate(row.tolist())])
    return torch.tensor(out, dtype=logits.dtype).reshape(logits.shape)


# ----- buggy first attempts --------------------------------------------------------------------


def temperature_multiplied(logits: Tensor, temperature: float) -> Tensor:
    return logits * temperature


def temperature_softmaxed(logits: Tensor, temperature: float) -> Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def temperature_in_place(logits: Tensor, temperature: float) -> Tensor:
    logits /= temperature
    return logits


def temperature_in_place_returns_copy(logits: Tensor, temperature: float) -> Tensor:
    """Changes the input, but returns a new tensor: only the in-place check catches it."""
    logits /= temperature
    return logits.clone()


def temperature_divides_by_zero(logits: Tensor, temperature: float) -> Tensor:
    """The source lesson's bug: right for every temperature > 0, [inf, inf, nan] at 0."""
    return logits / temperature


def temperature_reciprocal_unguarded(logits: Tensor, temperature: float) -> Tensor:
    """Raises at 0, but Python's ZeroDivisionError rather than a ValueError naming temperature."""
    return logits * (1.0 / temperature)


def temperature_crashes(logits: Tensor, temperature: float) -> Tensor:
    raise ZeroDivisionError("learner code failed")


def top_k_kth_without_keepdim(logits: Tensor, k: int) -> Tensor:
    """The seed lesson's bug: the k-th value loses its last dimension."""
    kth = torch.topk(logits, k).values[..., -1]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_keeps_k_minus_one(logits: Tensor, k: int) -> Tensor:
    kth = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG_INF)


def top_k_off_by_one_index(logits: Tensor, k: int) -> Tensor:
    kth = torch.sort(logits, descending=True).values[..., k : k + 1]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_by_indices_drops_ties(logits: Tensor, k: int) -> Tensor:
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(
        -1, torch.topk(logits, k).indices, True
    )
    return logits.masked_fill(~keep, NEG_INF)


def top_k_softmaxed(logits: Tensor, k: int) -> Tensor:
    kth = torch.topk(logits, k).values[..., -1:]
    return torch.softmax(logits.masked_fill(logits < kth, NEG_INF), dim=-1)


def top_k_keeps_k_plus_one(logits: Tensor, k: int) -> Tensor:
    """topk of k + 1 values: its last is the (k+1)-th largest (fails when k = V, after case 1)."""
    kth = torch.topk(logits, min(k + 1, logits.shape[-1])).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_returns_input_when_k_covers_all(logits: Tensor, k: int) -> Tensor:
    """Right values, but for k >= V it hands back the input itself, not a new tensor."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_in_place(logits: Tensor, k: int) -> Tensor:
    kth = torch.topk(logits, k).values[..., -1:]
    logits[logits < kth] = NEG_INF
    return logits


def top_p_mask_in_sorted_order(logits: Tensor, p: float) -> Tensor:
    """Right mask, wrong order: applied to the logits in vocabulary order without scattering."""
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove = probs.cumsum(dim=-1) - probs >= p
    return logits.masked_fill(remove, NEG_INF)


def top_p_seed_indices(logits: Tensor, p: float) -> Tensor:
    """The seed lesson's snippet: masked_fill given sorted indices instead of a boolean mask."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    mask = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) > p
    mask[..., 1:] = mask[..., :-1].clone()
    mask[..., 0] = False
    return logits.masked_fill(sorted_idx[mask], NEG_INF)


def top_p_returns_sorted(logits: Tensor, p: float) -> Tensor:
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, NEG_INF)


def top_p_without_shift(logits: Tensor, p: float) -> Tensor:
    """Removes token j when the mass *including* it exceeds p: can remove the top token."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    remove = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) > p
    return logits.masked_fill(remove.scatter(-1, sorted_idx, remove), NEG_INF)


def top_p_keeps_boundary(logits: Tensor, p: float) -> Tensor:
    """Keeps token j when the mass before it is <= p (the seed's code, not its formula)."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    keep = probs.cumsum(dim=-1) - probs <= p
    return logits.masked_fill(~keep.scatter(-1, sorted_idx, keep), NEG_INF)


def top_p_flat_indices(logits: Tensor, p: float) -> Tensor:
    """Right for one row; for a batch the flat index list lands in the wrong rows."""
    out = logits.clone()
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    out[sorted_idx[probs.cumsum(dim=-1) - probs >= p]] = NEG_INF
    return out


def top_p_ascending(logits: Tensor, p: float) -> Tensor:
    """Right: sort ascending and drop the low tail whose mass is <= 1 - p (as Hugging Face does)."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1)
    remove = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) <= 1 - p
    remove[..., -1] = False  # the top token always stays
    return logits.masked_fill(remove.scatter(-1, sorted_idx, remove), NEG_INF)


def top_p_view_when_p_is_one(logits: Tensor, p: float) -> Tensor:
    """Right values, but for p = 1 returns a view of the input, which shares its memory."""
    return logits[..., :] if p == 1 else filter_top_p(logits, p)


def top_k_fills_minus_1e9(logits: Tensor, k: int) -> Tensor:
    """Right set, but the removed tokens get -1e9, a finite logit, instead of -inf."""
    kth = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth, -1e9)


def top_p_from_exp(logits: Tensor, p: float) -> Tensor:
    """Probabilities as exp(logits), never normalised: right only when the logits already are."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    weights = sorted_logits.exp()
    drop_sorted = weights.cumsum(dim=-1) - weights >= p
    return logits.masked_fill(drop_sorted.scatter(-1, sorted_idx, drop_sorted), NEG_INF)


def top_p_fills_minus_1e9(logits: Tensor, p: float) -> Tensor:
    """Right set, but the removed tokens get -1e9 instead of -inf."""
    return filter_top_p(logits, p).nan_to_num(neginf=-1e9)


def top_p_in_place(logits: Tensor, p: float) -> Tensor:
    kept = filter_top_p(logits, p)
    logits.copy_(kept)
    return logits


# ----- correct code passes ---------------------------------------------------------------------


@pytest.mark.parametrize("fn", [apply_temperature, temperature_by_reciprocal])
def test_temperature_checker_passes_correct_code(fn) -> None:
    result = check_my_temperature(fn)
    assert result.passed
    assert result.first_failure is None
    assert result.cases_run == len(temperature_cases())
    assert str(result) == f"All {result.cases_run} cases pass (temperature)."


@pytest.mark.parametrize("fn", [filter_top_k, top_k_by_sorting, top_k_row_by_row])
def test_top_k_checker_passes_correct_code(fn) -> None:
    result = check_my_top_k(fn)
    assert result.passed, str(result)
    assert result.cases_run == len(top_k_cases())


@pytest.mark.parametrize(
    "fn", [filter_top_p, top_p_float32_unstable, top_p_reversed_ties, top_p_ascending]
)
def test_top_p_checker_passes_correct_code(fn) -> None:
    result = check_my_top_p(fn)
    assert result.passed, str(result)
    assert result.cases_run == len(top_p_cases())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_checkers_pass_the_library_on_other_seeds(seed: int) -> None:
    assert check_my_temperature(apply_temperature, seed=seed).passed
    assert check_my_top_k(filter_top_k, seed=seed).passed
    assert check_my_top_p(top_p_float32_unstable, seed=seed).passed


# ----- each bug is caught, and the message shows the input ------------------------------------


def assert_fails_on(result: CheckResult, *words: str) -> None:
    """The check failed and its message shows the input, expected/got and each of `words`."""
    assert not result.passed
    assert result.first_failure is not None
    assert str(result) == result.first_failure
    assert "logits   = [" in result.first_failure
    assert "expected = [" in result.first_failure
    assert "Problem:" in result.first_failure
    for word in words:
        assert word in result.first_failure, result.first_failure


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (temperature_multiplied, ("multiplied by the temperature",)),
        (temperature_softmaxed, ("not probabilities",)),
        # At temperature 1 its in-place division changes nothing, and it returns its input.
        (temperature_in_place, ("case 1 of", "returned its input logits", "logits.clone()")),
        (temperature_in_place_returns_copy, ("case 2 of", "changed its input logits in place")),
        (temperature_crashes, ("raised ZeroDivisionError: learner code failed",)),
    ],
)
def test_temperature_checker_catches_bugs(fn, words: tuple[str, ...]) -> None:
    assert_fails_on(check_my_temperature(fn), "temperature = ", *words)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (top_k_kth_without_keepdim, ("a batch of 3 rows", "[..., -1:] (not [..., -1])")),
        (top_k_keeps_k_minus_one, ("case 1 of", "k        = 2", "k - 1 tokens")),
        (top_k_off_by_one_index, ("case 1 of", "tokens [0, 3]", "you keep k + 1 tokens")),
        (top_k_keeps_k_plus_one, ("case 1 of", "tokens [0, 3, 4]", "you keep k + 1 tokens")),
        (top_k_by_indices_drops_ties, ("ties at the k-th value", "tied with the k-th")),
        (top_k_softmaxed, ("case 1 of", "got      = [0.27, 0.0", "not probabilities")),
        (top_k_returns_input_when_k_covers_all, ("k = V keeps every token", "logits.clone()")),
        (top_k_in_place, ("in place",)),
        (top_k_fills_minus_1e9, ("case 1 of", "float('-inf'), not a large negative number")),
    ],
)
def test_top_k_checker_catches_bugs(fn, words: tuple[str, ...]) -> None:
    assert_fails_on(check_my_top_k(fn), *words)


def test_top_k_missing_keepdim_is_caught_even_when_it_broadcasts_silently() -> None:
    # With as many rows as tokens, (B, V) < (B,) broadcasts without an error: wrong rows, no crash.
    square = [case for case in top_k_cases() if case.logits.shape == (4, 4)]
    assert square
    logits = square[0].logits
    assert not torch.equal(top_k_kth_without_keepdim(logits, 2), filter_top_k(logits, 2))
    result = check_against_reference(
        top_k_kth_without_keepdim, filter_top_k, square, name="top-k", param_name="k"
    )
    assert_fails_on(result, "4 rows of 4 tokens", "got      = [[", "right for each row on its own")
    # The advice is about the k-th value's dimension, not about indices (that is top-p's bug).
    assert "flat list" not in str(result)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (top_p_mask_in_sorted_order, ("case 1 of", "in sorted order", "scatter")),
        (top_p_seed_indices, ("raised RuntimeError", "boolean mask", "scatter")),
        (top_p_returns_sorted, ("in sorted order",)),
        (top_p_without_shift, ("case 1 of", "got them at tokens [1]")),
        (top_p_keeps_boundary, ("exactly p = 0.5", "p        = 0.5", "strictly")),
        (top_p_flat_indices, ("a batch of 3 rows", "right for each row on its own", "flat list")),
        (top_p_from_exp, ("do not sum to 1", "torch.softmax")),
        (top_p_fills_minus_1e9, ("float('-inf'), not a large negative number",)),
        (top_p_view_when_p_is_one, ("p = 1 keeps every token", "(or a view of them)")),
        (top_p_in_place, ("in place",)),
    ],
)
def test_top_p_checker_catches_bugs(fn, words: tuple[str, ...]) -> None:
    assert_fails_on(check_my_top_p(fn), "probs    = [", *words)


def test_top_p_missing_top_token_is_named_when_p_is_below_the_top_probability() -> None:
    # Right everywhere except where p is below the top probability, where the unshifted
    # "cumulative > p" removes every token.
    def loses_top_token(logits: Tensor, p: float) -> Tensor:
        return top_p_without_shift(logits, p) if p == 0.3 else filter_top_p(logits, p)

    result = check_my_top_p(loses_top_token)
    assert_fails_on(
        result,
        "p below the top token's probability",
        "got      = [-inf, -inf, -inf, -inf]",
        "top token must always survive",
    )


def test_top_p_boundary_cases_are_exact() -> None:
    # The boundary cases only test "<" against "<=" if the masses hit p exactly, in float64
    # (the library) and in float32 (a learner's softmax): (0.5, 0.25, ...) sums exactly.
    # Summed in either order (lessonlib descending, Hugging Face ascending), so their
    # probabilities must be exact powers of two, and some prefix must hit p exactly.
    for case in top_p_cases():
        if "exact" not in case.note:
            continue
        for dtype in (torch.float64, torch.float32):
            rows = case.logits.to(dtype).reshape(-1, case.logits.shape[-1])
            probs = torch.softmax(rows.sort(dim=-1, descending=True).values, dim=-1)
            assert set(probs.unique().tolist()) <= {0.0, 0.125, 0.25, 0.5, 1.0}, case.note
            before = probs.cumsum(dim=-1) - probs
            assert bool((before == case.param).any()), (case.note, dtype)
    assert filter_top_p(top_p_cases()[1].logits, 0.5).isfinite().sum() == 2
    assert top_p_keeps_boundary(top_p_cases()[1].logits, 0.5).isfinite().sum() == 3


def test_boundary_bug_is_caught_in_float32_too() -> None:
    cases = [Case(c.logits.float(), c.param, c.note) for c in top_p_cases() if "exact" in c.note]
    result = check_against_reference(
        top_p_keeps_boundary, filter_top_p, cases, name="top-p", compare=compare_kept_prefix
    )
    assert not result.passed


# ----- the engine ------------------------------------------------------------------------------


def test_engine_reports_an_exception_instead_of_raising() -> None:
    def broken(logits: Tensor, k: int) -> Tensor:
        raise ValueError("oops in learner code")

    result = check_my_top_k(broken)
    assert not result.passed
    assert result.cases_run == 1
    assert "raised ValueError: oops in learner code" in str(result)


def test_engine_reports_a_non_tensor_result() -> None:
    result = check_my_top_k(lambda logits, k: logits.tolist())
    assert_fails_on(result, "returned a list, expected a torch.Tensor")


def test_engine_reports_shape_and_nan() -> None:
    assert_fails_on(check_my_temperature(lambda x, t: (x / t)[..., :-1]), "expected shape (3,)")
    assert_fails_on(check_my_temperature(lambda x, t: x * float("nan")), "got NaN at token 0")


def test_engine_stops_at_the_first_failure_and_counts_cases() -> None:
    cases = [Case(torch.tensor([1.0, 2.0]), 1.0), Case(torch.tensor([1.0, 2.0]), 2.0, "second")]
    result = check_against_reference(
        lambda x, t: x.clone(), apply_temperature, cases, name="identity", param_name="temperature"
    )
    assert not result.passed
    assert result.cases_run == 2
    assert result.first_failure.startswith("identity: case 2 of 2 fails (second).")
    assert "token 0: expected 0.5, got 1.0" in result.first_failure


def test_temperature_zero_must_raise_a_value_error() -> None:
    # The source lesson's bug passes every rescaling case, and is caught at temperature 0 only.
    cases = temperature_cases()
    zero = [number for number, case in enumerate(cases, start=1) if case.raises is not None]
    assert [(cases[n - 1].param, cases[n - 1].raises) for n in zero] == [(0.0, ValueError)]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(cases[zero[0] - 1].logits, 0.0)
    rescaling = [case for case in cases if case.raises is None]
    assert check_against_reference(
        temperature_divides_by_zero, apply_temperature, rescaling, name="t"
    ).passed
    assert check_my_temperature(temperature_divides_by_zero).cases_run == zero[0]
    for fn, problem in (
        (temperature_divides_by_zero, "but it returned a result"),
        (temperature_reciprocal_unguarded, "raised ZeroDivisionError"),
    ):
        result = check_my_temperature(fn)
        assert not result.passed
        for words in (
            "temperature = 0.0",
            "expected = raises ValueError",
            problem,
            "Hint: temperature 0 is not a rescaling: raise a ValueError naming temperature",
        ):
            assert words in result.first_failure, result.first_failure
    assert "got      = [inf, inf, nan]" in str(check_my_temperature(temperature_divides_by_zero))


def test_engine_checks_that_the_reference_raises_too() -> None:
    # A case that expects an exception the reference does not raise is the checker's bug.
    case = Case(torch.tensor([1.0, 2.0]), 2.0, raises=ValueError)
    with pytest.raises(AssertionError, match="case 1 expects ValueError"):
        check_against_reference(apply_temperature, apply_temperature, [case], name="t")


def test_engine_rejects_results_that_share_the_input_memory() -> None:
    cases = [Case(torch.tensor([1.0, 2.0]), 1.0)]
    for fn in (
        lambda x, t: x,
        lambda x, t: x.view(-1),
        lambda x, t: x[..., :],
        lambda x, t: x.contiguous(),  # already contiguous: returns x itself
    ):
        result = check_against_reference(fn, apply_temperature, cases, name="t")
        assert not result.passed
        assert "Hint: return a new tensor (e.g. logits.clone()), not the input itself." in str(
            result
        )
    # A view of a *new* tensor is fine: it shares no memory with the input.
    for fn in (lambda x, t: (x / t).view(-1), lambda x, t: x.clone()[..., :], lambda x, t: x + 0):
        assert check_against_reference(fn, apply_temperature, cases, name="t").passed


def test_engine_gives_the_learner_a_copy() -> None:
    original = torch.tensor([1.0, 2.0])
    cases = [Case(original, 2.0)]
    check_against_reference(temperature_in_place, apply_temperature, cases, name="t")
    assert torch.equal(original, torch.tensor([1.0, 2.0]))


def test_engine_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="learner_fn must be a function"):
        check_against_reference(3, apply_temperature, temperature_cases(), name="t")
    with pytest.raises(ValueError, match="cases must hold at least one Case"):
        check_against_reference(apply_temperature, apply_temperature, [], name="t")


def test_result_repr_is_the_plain_words() -> None:
    result = check_my_top_k(top_k_keeps_k_minus_one)
    assert repr(result) == str(result)
    assert repr(check_my_top_k(filter_top_k)).startswith("All ")


def test_compare_logits_and_kept_prefix_on_ties() -> None:
    logits = torch.tensor([1.0, 1.0, 0.0])
    keep_first = torch.tensor([1.0, NEG_INF, NEG_INF])
    keep_second = torch.tensor([NEG_INF, 1.0, NEG_INF])
    assert compare_logits(logits, keep_first, keep_second) is not None
    assert compare_kept_prefix(logits, keep_first, keep_second) is None
    # Keeping the smaller logit instead of the tied larger one is still wrong.
    assert compare_kept_prefix(logits, keep_first, torch.tensor([NEG_INF, NEG_INF, 0.0]))
    # A kept token must keep its own logit.
    assert "unchanged" in compare_kept_prefix(
        logits, keep_first, torch.tensor([2.0, NEG_INF, NEG_INF])
    )


def test_cases_are_deterministic_and_cover_shapes() -> None:
    for make in (temperature_cases, top_k_cases, top_p_cases):
        first, again = make(seed=5), make(seed=5)
        assert all(
            torch.equal(a.logits, b.logits) and a.param == b.param for a, b in zip(first, again)
        )
        shapes = {case.logits.dim() for case in first}
        assert shapes == {1, 2}
        assert any(torch.isneginf(case.logits).any() for case in first)
        # Every row keeps a finite logit, as the sampler requires.
        for case in first:
            rows = case.logits.reshape(-1, case.logits.shape[-1])
            assert bool(torch.isfinite(rows).any(dim=-1).all())


# ----- the greedy decoder checker --------------------------------------------------------------


class CountingModel:
    """A fake language model: after token id i it is sure the next id is i + 1 (mod V)."""

    vocab_size = 11
    block_size = 64

    def __call__(self, token_ids: Tensor, kv_cache=None) -> Tensor:
        following = (token_ids + 1) % self.vocab_size
        return torch.nn.functional.one_hot(following, self.vocab_size).float() * 5.0

    def new_kv_cache(self, batch_size: int):
        return None


# "\n" (id 0) is the boundary: from any prompt the model counts up to "." and then ends.
COUNTING_TOKENIZER = CharTokenizer("\nabcdefgh .", boundary="\n")
COUNTING_PROMPTS = ("", "ab", "fg h")


def greedy_loop(model, prompt, *, tokenizer, max_new_tokens):
    """A correct learner loop: argmax of the last position, stop at the boundary."""
    ids = [tokenizer.boundary_id, *tokenizer.encode(prompt)]
    new = []
    for _ in range(max_new_tokens):
        next_id = int(model(torch.tensor([ids]))[0, -1].argmax())
        if next_id == tokenizer.boundary_id:
            break
        ids.append(next_id)
        new.append(next_id)
    return tokenizer.decode(new)


def greedy_loop_never_stops(model, prompt, *, tokenizer, max_new_tokens):
    ids = [tokenizer.boundary_id, *tokenizer.encode(prompt)]
    for _ in range(max_new_tokens):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return tokenizer.decode(ids[1 + len(prompt) :])


def greedy_loop_returns_prompt_too(model, prompt, *, tokenizer, max_new_tokens):
    return prompt + greedy_loop(model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens)


def greedy_loop_first_position(model, prompt, *, tokenizer, max_new_tokens):
    ids = [tokenizer.boundary_id, *tokenizer.encode(prompt)]
    for _ in range(max_new_tokens):
        next_id = int(model(torch.tensor([ids]))[0, 0].argmax())  # the first position, not -1
        if next_id == tokenizer.boundary_id:
            break
        ids.append(next_id)
    return tokenizer.decode(ids[1 + len(prompt) :])


def greedy_loop_without_start_marker(model, prompt, *, tokenizer, max_new_tokens):
    ids = tokenizer.encode(prompt)  # an empty prompt leaves nothing to read
    for _ in range(max_new_tokens):
        next_id = int(model(torch.tensor([ids]))[0, -1].argmax())
        if next_id == tokenizer.boundary_id:
            break
        ids.append(next_id)
    return tokenizer.decode(ids[len(prompt) :])


def check_counting(fn, **kwargs) -> CheckResult:
    return check_my_greedy(
        fn, model=CountingModel(), tokenizer=COUNTING_TOKENIZER, prompts=COUNTING_PROMPTS, **kwargs
    )


def test_greedy_checker_passes_a_correct_loop() -> None:
    result = check_counting(greedy_loop, max_new_tokens=20)
    assert result.passed, str(result)
    assert str(result) == "All 3 cases pass (greedy decoder)."


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (greedy_loop_never_stops, ("prompt 1 of 3", "expected the end of the text, got '\\n'",
                                   "stop when the model picks the boundary token")),
        (greedy_loop_returns_prompt_too, ("prompt 2 of 3", "prompt   = 'ab'", "the prompt")),
        (greedy_loop_first_position, ("expected 'b', got 'a'", "last position")),
        (greedy_loop_without_start_marker, ("prompt 1 of 3", "raised", "boundary token")),
    ],
)  # fmt: skip
def test_greedy_checker_catches_bugs(fn, words: tuple[str, ...]) -> None:
    result = check_counting(fn, max_new_tokens=20)
    assert not result.passed
    assert "expected = " in result.first_failure
    for word in words:
        assert word in result.first_failure, result.first_failure


def test_greedy_checker_reports_a_wrong_return_type_and_early_stop() -> None:
    assert "returned a list" in str(check_counting(lambda m, p, **kw: [1, 2]))
    stops_early = check_counting(lambda m, p, **kw: greedy_loop(m, p, **kw)[:2], max_new_tokens=20)
    assert "you stopped early" in str(stops_early)


def test_greedy_checker_passes_the_library_on_the_shipped_prompts() -> None:
    # The default prompts are TinyTales text; a tiny random GPT over that alphabet stands in
    # for the shipped model, so the test is fast and checks that every prompt encodes.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=512, n_layer=1, n_head=1, n_embd=8))
    tokenizer = CharTokenizer(ALPHABET, boundary="\n")
    result = check_my_greedy(greedy_loop, model=model.eval(), tokenizer=tokenizer)
    assert result.passed, str(result)
    assert result.cases_run == len(GREEDY_PROMPTS)
    assert tinytales.next_char_distribution(GREEDY_PROMPTS[-1])  # a possible story prefix


def test_greedy_checker_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn must be a function"):
        check_counting("not a function")
    with pytest.raises(ValueError, match="prompts must hold at least one prompt"):
        check_my_greedy(
            greedy_loop, model=CountingModel(), tokenizer=COUNTING_TOKENIZER, prompts=()
        )


# ----- stubs -------------------------------------------------------------------------------------


def my_stub(logits: Tensor, param: float) -> Tensor:
    """A notebook's stub: the learner has not written the body yet."""
    raise NotImplementedError


@pytest.mark.parametrize("checker", [check_my_temperature, check_my_top_k, check_my_top_p])
def test_a_stub_gets_one_friendly_line(checker) -> None:
    result = checker(my_stub)
    assert not result.passed and result.not_written and result.cases_run == 0
    assert str(result) == (
        "not written yet: fill in the body of my_stub above, then run this cell again."
    )


def test_a_greedy_stub_gets_one_friendly_line() -> None:
    def my_greedy(model, prompt, *, tokenizer, max_new_tokens):
        raise NotImplementedError

    model = GPT(
        GPTConfig(
            vocab_size=COUNTING_TOKENIZER.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8
        )
    )
    result = check_my_greedy(
        my_greedy, model=model, tokenizer=COUNTING_TOKENIZER, prompts=COUNTING_PROMPTS
    )
    assert result.not_written
    assert "fill in the body of my_greedy above" in str(result)


def test_hint_false_keeps_the_report_and_drops_only_the_hint() -> None:
    with_hint = check_my_top_k(top_k_kth_without_keepdim)
    without = check_my_top_k(top_k_kth_without_keepdim, hint=False)
    assert "  Hint: " in str(with_hint) and "Hint" not in str(without)
    assert str(without) == "\n".join(
        line for line in str(with_hint).split("\n") if not line.startswith("  Hint: ")
    )
    assert not without.passed and "Problem:" in str(without)
    assert check_my_top_k(filter_top_k, hint=False).passed


# ----- the min-p checker -------------------------------------------------------------------------


def load_solution_min_p():
    """`my_min_p` from the solutions file of lesson 09 (a plain module, not a package)."""
    path = REPO_ROOT / "notebooks" / "solutions" / "09_beyond_top_p.py"
    spec = importlib.util.spec_from_file_location("solutions_09_beyond_top_p", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.my_min_p


def min_p_in_log_space(logits: Tensor, min_p: float) -> Tensor:
    """llama.cpp's form: keep z >= max z + log(min_p); no softmax at all."""
    threshold = logits.amax(dim=-1, keepdim=True) + math.log(min_p)
    return logits.masked_fill(logits < threshold, NEG_INF)


def min_p_from_exp(logits: Tensor, min_p: float) -> Tensor:
    """exp(logits) never normalised, but compared with min_p * exp(max): the sum cancels."""
    weights = logits.exp()
    return logits.masked_fill(weights < min_p * logits.amax(dim=-1, keepdim=True).exp(), NEG_INF)


def min_p_from_log_softmax(logits: Tensor, min_p: float) -> Tensor:
    log_probs = torch.log_softmax(logits, dim=-1)
    threshold = log_probs.amax(dim=-1, keepdim=True) + math.log(min_p)
    return torch.where(log_probs >= threshold, logits, torch.full_like(logits, NEG_INF))


def min_p_float32_ratio(logits: Tensor, min_p: float) -> Tensor:
    """float32 arithmetic whatever the input's dtype, and a ratio instead of a product."""
    probs = torch.softmax(logits.float(), dim=-1)
    return logits.masked_fill(probs / probs.amax(dim=-1, keepdim=True) < min_p, NEG_INF)


def min_p_row_by_row(logits: Tensor, min_p: float) -> Tensor:
    """Plain Python over rows and tokens, with math.exp."""
    out = []
    for row in logits.reshape(-1, logits.shape[-1]).tolist():
        top = max(row)
        out.append([x if math.exp(x - top) >= min_p else NEG_INF for x in row])
    return torch.tensor(out, dtype=logits.dtype).reshape(logits.shape)


def min_p_compares_logits(logits: Tensor, min_p: float) -> Tensor:
    """The natural first attempt: min_p times the largest logit, as if logits were probabilities."""
    return logits.masked_fill(logits < min_p * logits.amax(dim=-1, keepdim=True), NEG_INF)


def min_p_absolute(logits: Tensor, min_p: float) -> Tensor:
    """Forgets the top token: min_p used as a probability threshold on its own."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p, NEG_INF)


def min_p_exp_absolute(logits: Tensor, min_p: float) -> Tensor:
    """exp(logits) taken for probabilities and compared with min_p alone."""
    return logits.masked_fill(logits.exp() < min_p, NEG_INF)


def min_p_strict(logits: Tensor, min_p: float) -> Tensor:
    """Keeps only tokens strictly above the threshold: drops one exactly at it."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs <= min_p * probs.amax(dim=-1, keepdim=True), NEG_INF)


def min_p_strict_in_log_space(logits: Tensor, min_p: float) -> Tensor:
    threshold = logits.amax(dim=-1, keepdim=True) + math.log(min_p)
    return logits.masked_fill(logits <= threshold, NEG_INF)


def min_p_without_keepdim(logits: Tensor, min_p: float) -> Tensor:
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1), NEG_INF)


def min_p_batch_max(logits: Tensor, min_p: float) -> Tensor:
    """The largest probability of the whole batch, not of each row."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), NEG_INF)


def min_p_max_pair(logits: Tensor, min_p: float) -> Tensor:
    """probs.max(dim=-1, keepdim=True) is a (values, indices) pair, not a tensor."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True), NEG_INF)


def min_p_returns_probs(logits: Tensor, min_p: float) -> Tensor:
    """Right tokens, but their probabilities (0 for the dropped ones) instead of logits."""
    probs = torch.softmax(logits, dim=-1)
    return probs.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)


def min_p_fills_minus_1e9(logits: Tensor, min_p: float) -> Tensor:
    return filter_min_p(logits, min_p).nan_to_num(neginf=-1e9)


def min_p_in_place(logits: Tensor, min_p: float) -> Tensor:
    probs = torch.softmax(logits, dim=-1)
    logits[probs < min_p * probs.amax(dim=-1, keepdim=True)] = NEG_INF
    return logits


def min_p_returns_input_when_nothing_drops(logits: Tensor, min_p: float) -> Tensor:
    """Right values, but hands back the input itself when every token stays (a flat row)."""
    drop = torch.softmax(logits, dim=-1) < min_p * torch.softmax(logits, dim=-1).amax(
        dim=-1, keepdim=True
    )
    return logits if not drop.any() else logits.masked_fill(drop, NEG_INF)


@pytest.mark.parametrize(
    "fn",
    [
        filter_min_p,
        load_solution_min_p(),
        min_p_in_log_space,
        min_p_from_exp,
        min_p_from_log_softmax,
        min_p_float32_ratio,
        min_p_row_by_row,
    ],
)
def test_min_p_checker_passes_correct_code(fn) -> None:
    result = check_my_min_p(fn)
    assert result.passed, str(result)
    assert result.cases_run == len(min_p_cases())
    assert str(result) == f"All {result.cases_run} cases pass (min-p)."


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_min_p_checker_passes_every_formulation_on_other_seeds(seed: int) -> None:
    for fn in (load_solution_min_p(), min_p_in_log_space, min_p_from_exp, min_p_float32_ratio):
        assert check_my_min_p(fn, seed=seed).passed, str(check_my_min_p(fn, seed=seed))


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (min_p_compares_logits, ("case 1 of", "got them at tokens [0, 1, 2]", "compared the logits",
                                 "logits >= the row's largest logit + log(min_p)")),
        (min_p_absolute, ("case 1 of", "got them at tokens [0]", "with min_p itself",
                          "a flat row, whose every token is below min_p, loses every token")),
        (min_p_exp_absolute, ("case 1 of", "got them at tokens [0, 1, 2, 3, 4]",
                              "compared exp(logits) with min_p", "the sum cancels")),
        (min_p_strict, ("case 3 of", "min_p * top probability = 0.25", "got them at tokens [1]",
                        "keep >=, not >")),
        (min_p_strict_in_log_space, ("case 3 of", "exactly min_p times the top one",
                                     "keep >=, not >")),
        (min_p_without_keepdim, ("a batch: a confident row", "raised RuntimeError",
                                 "each row has its own top probability", "keepdim=True")),
        (min_p_batch_max, ("right for each row on its own", "amax(dim=-1, keepdim=True)")),
        (min_p_max_pair, ("raised TypeError", "returns a pair (values, indices)")),
        (min_p_returns_probs, ("got      = [0.5, 0.2, 0.0", "not probabilities")),
        (min_p_fills_minus_1e9, ("float('-inf'), not a large negative number",)),
        (min_p_in_place, ("case 1 of", "changed its input logits in place")),
        (min_p_returns_input_when_nothing_drops, ("case 2 of", "a flat row", "logits.clone()")),
    ],
)  # fmt: skip
def test_min_p_checker_catches_bugs(fn, words: tuple[str, ...]) -> None:
    assert_fails_on(check_my_min_p(fn), "min_p    = ", "probs    = [", *words)


def test_min_p_first_case_tells_the_slips_apart() -> None:
    # Case 1 is built so that each slip keeps a different number of tokens: the hint that names
    # a slip is then never a guess between two of them.
    case = min_p_cases()[0]
    counts = [
        int(fn(case.logits, case.param).isfinite().sum())
        for fn in (filter_min_p, min_p_compares_logits, min_p_absolute, min_p_exp_absolute)
    ]
    assert counts == [2, 3, 1, 5]
    assert torch.allclose(
        torch.softmax(case.logits, dim=-1), torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    )


def test_min_p_strict_comparison_is_named_at_min_p_one() -> None:
    # Strict only where min_p = 1, so that it passes the exact tie of case 3 and is caught where
    # min_p = 1 puts the tied top tokens themselves at the threshold: ">" keeps none of them.
    def strict_at_one(logits: Tensor, min_p: float) -> Tensor:
        return min_p_strict(logits, min_p) if min_p == 1 else filter_min_p(logits, min_p)

    result = check_my_min_p(strict_at_one)
    assert_fails_on(
        result,
        "min_p = 1 keeps the top token and its ties",
        "got      = [-inf, -inf, -inf, -inf]",
        "keep >=, not >",
    )
    assert check_my_min_p(min_p_strict).cases_run < result.cases_run


def test_min_p_absolute_threshold_empties_a_flat_row() -> None:
    # Right wherever the row is not flat, so that the flat row (case 2) is where it fails.
    def loses_flat_rows(logits: Tensor, min_p: float) -> Tensor:
        flat = bool((logits == logits.amax(dim=-1, keepdim=True)).all())
        return min_p_absolute(logits, min_p) if flat else filter_min_p(logits, min_p)

    result = check_my_min_p(loses_flat_rows)
    assert_fails_on(
        result,
        "case 2 of",
        "got      = [-inf, -inf, -inf, -inf, -inf, -inf]",
        "a fraction of the top token's probability",
    )


def test_min_p_tie_case_is_exact_in_every_formulation() -> None:
    # The tie only tests ">=" against ">" if the token hits min_p times the top exactly, in
    # float64 (the case's dtype) and in float32 (a learner's cast), for probabilities, for
    # exp(logits) and in log space.
    tied = [case for case in min_p_cases() if "exactly" in case.note]
    assert len(tied) == 1
    case = tied[0]
    min_p = case.param
    for dtype in (torch.float64, torch.float32):
        z = case.logits.to(dtype)
        probs = torch.softmax(z, dim=-1)
        assert bool((probs == min_p * probs.max()).any()), dtype
        assert bool((z.exp() == min_p * z.max().exp()).any()), dtype
        assert bool((z == z.max() + math.log(min_p)).any()), dtype
        log_probs = torch.log_softmax(z, dim=-1)
        assert bool((log_probs == log_probs.max() + math.log(min_p)).any()), dtype
    kept = filter_min_p(case.logits, min_p).isfinite().sum()
    assert kept == min_p_strict(case.logits, min_p).isfinite().sum() + 1 == 2


def test_min_p_hint_false_and_the_stub() -> None:
    with_hint = check_my_min_p(min_p_compares_logits)
    without = check_my_min_p(min_p_compares_logits, hint=False)
    assert "  Hint: " in str(with_hint) and "Hint" not in str(without)
    assert "Problem:" in str(without)
    stub = check_my_min_p(my_stub)
    assert stub.not_written and stub.cases_run == 0
    assert str(stub) == (
        "not written yet: fill in the body of my_stub above, then run this cell again."
    )


def test_min_p_cases_are_deterministic_and_cover_shapes() -> None:
    first, again, other = min_p_cases(seed=5), min_p_cases(seed=5), min_p_cases(seed=6)
    assert all(torch.equal(a.logits, b.logits) and a.param == b.param for a, b in zip(first, again))
    assert any(not torch.equal(a.logits, b.logits) for a, b in zip(first, other))
    assert {case.logits.dim() for case in first} == {1, 2}
    assert any(torch.isneginf(case.logits).any() for case in first)
    for case in first:
        assert 0 < case.param <= 1
        rows = case.logits.reshape(-1, case.logits.shape[-1])
        assert bool(torch.isfinite(rows).any(dim=-1).all())


# ----- the accept/reject step of speculative decoding ---------------------------------------------


def load_solution_accept_or_resample():
    """`my_accept_or_resample` from the solutions file of lesson 10."""
    path = REPO_ROOT / "notebooks" / "solutions" / "10_speculative_decoding.py"
    spec = importlib.util.spec_from_file_location("solutions_10_speculative_decoding", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.my_accept_or_resample


def step_by_the_library(p: Tensor, q: Tensor, x: int, generator: torch.Generator) -> int:
    return accept_or_resample(p, q, x, generator=generator)[0]


def step_at_or_below(p, q, x, generator):
    """u <= P/Q instead of u < P/Q: differs only when u equals the ratio (about 2^-24 a draw)."""
    if torch.rand((), generator=generator) <= p[x] / q[x]:
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1, generator=generator))


def step_with_min_and_float64(p, q, x, generator):
    """min(1, P/Q) spelled out, in Python floats; the residual normalised by hand, in float64."""
    keep = min(1.0, float(p[x]) / float(q[x]))
    if float(torch.rand(1, generator=generator)) < keep:
        return x
    residual = (p.double() - q.double()).clamp(min=0)
    return torch.multinomial(residual / residual.sum(), 1, generator=generator)  # a (1,) tensor


def step_by_bernoulli(p, q, x, generator):
    """A Bernoulli draw with the clipped ratio, and the residual never normalised (multinomial
    normalises): both harmless."""
    keep = torch.clamp(p[x] / q[x], max=1.0)
    if bool(torch.bernoulli(keep, generator=generator)):
        return x
    return int(torch.multinomial(torch.relu(p - q), 1, generator=generator))


def step_by_inverse_cdf(p, q, x, generator):
    """The residual drawn by hand: a uniform against its normalised running sum."""
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    residual = torch.clamp(p - q, min=0)
    running = torch.cumsum(residual / residual.sum(), dim=0)
    u = torch.rand((), generator=generator)
    return min(int((running <= u).sum()), len(p) - 1)  # rounding may leave the sum just below 1


def step_resamples_from_p(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    return int(torch.multinomial(p, 1, generator=generator))


def step_resamples_from_q(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    return int(torch.multinomial(q, 1, generator=generator))


def step_always_keeps(p, q, x, generator):
    return x


def step_inverted_ratio(p, q, x, generator):
    if torch.rand((), generator=generator) < q[x] / p[x]:
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1, generator=generator))


def step_without_a_draw(p, q, x, generator):
    if p[x] >= q[x]:
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1, generator=generator))


def step_keeps_with_p(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x]:
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1, generator=generator))


def step_bernoulli_without_min(p, q, x, generator):
    if bool(torch.bernoulli(p[x] / q[x], generator=generator)):
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1, generator=generator))


def step_without_clamp(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    return int(torch.multinomial(p - q, 1, generator=generator))


def step_draws_the_residual_first(p, q, x, generator):
    """Right wherever the residual has mass, but draws from it before knowing it is needed."""
    residual = torch.clamp(p - q, min=0)
    fallback = int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    return x if torch.rand((), generator=generator) < p[x] / q[x] else fallback


def step_inverse_cdf_unnormalised(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    running = torch.cumsum(torch.clamp(p - q, min=0), dim=0)
    return int((running <= torch.rand((), generator=generator)).sum())


def step_with_abs(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    return int(torch.multinomial((p - q).abs(), 1, generator=generator))


def step_returns_a_pair(p, q, x, generator):
    return accept_or_resample(p, q, x, generator=generator)


def step_in_place(p, q, x, generator):
    if torch.rand((), generator=generator) < p[x] / q[x]:
        return x
    p -= q
    return int(torch.multinomial(p.clamp_(min=0), 1, generator=generator))


def step_without_the_generator(p, q, x, generator):
    """Right distribution, but from torch's global generator: no seed reproduces it."""
    if torch.rand(()) < p[x] / q[x]:
        return x
    return int(torch.multinomial(torch.clamp(p - q, min=0), 1))


@pytest.mark.parametrize(
    "fn",
    [
        step_by_the_library,
        step_at_or_below,
        step_with_min_and_float64,
        step_by_bernoulli,
        step_by_inverse_cdf,
    ],
)
def test_accept_checker_passes_correct_and_harmless_variants(fn) -> None:
    result = check_my_accept_or_resample(fn)
    assert result.passed, str(result)
    assert str(result) == f"All {result.cases_run} cases pass (accept/reject step)."


def test_accept_checker_passes_the_solution_for_another_seed() -> None:
    # Seed 0 (the notebook's) is tests/test_exercises.py's: other cases, other draws, same verdict.
    result = check_my_accept_or_resample(load_solution_accept_or_resample(), seed=1)
    assert result.passed, str(result)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (step_resamples_from_p, ("case 1 of", "after a rejection you drew from P itself")),
        (step_resamples_from_q, ("case 1 of", "you drew from Q, the draft's distribution")),
        (step_always_keeps, ("case 1 of", "got      = [1.0, 0.0, 0.0]", "every time", "0.286")),
        (step_inverted_ratio, ("case 1 of", "every time")),  # Q/P > 1 here: always kept
        (step_without_a_draw, ("case 1 of", "without a random draw")),
        (step_keeps_with_p, ("you kept x with probability P(x)",)),
        (step_with_abs, ("case 1 of", "draw u = torch.rand")),  # no named slip: the steps
    ],
)  # fmt: skip
def test_accept_checker_catches_each_slip_by_its_distribution(fn, words) -> None:
    result = check_my_accept_or_resample(fn)
    assert not result.passed and not result.not_written
    text = str(result)
    for line in ("p        = [", "q        = [", "drafted_token = ", "expected = [", "Problem:"):
        assert line in text, text
    assert "shares of 1200 calls" in text and "a correct step stays within" in text
    for word in words:
        assert word in text, text


def test_accept_checker_names_the_inverted_ratio_where_it_differs() -> None:
    # Right where P(x) < Q(x) (case 1 cannot tell the two apart: both always keep x there), so
    # that case 2, where P(x) > Q(x), is where the upside-down ratio shows.
    def inverted_only_where_p_wins(p, q, x, generator):
        rule = step_inverted_ratio if p[x] > q[x] else step_by_the_library
        return rule(p, q, x, generator)

    result = check_my_accept_or_resample(inverted_only_where_p_wins)
    assert "case 2 of" in str(result) and "the ratio is upside down" in str(result)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (step_bernoulli_without_min, ("case 2 of", "raised RuntimeError", "torch.bernoulli needs")),
        (step_without_clamp, ("case 1 of", "raised RuntimeError", "clamp the negative")),
        (step_draws_the_residual_first, ("case 5 of", "(P = Q", "only after a rejection")),
        (step_inverse_cdf_unnormalised, ("returned token 3, but the vocabulary has 3 tokens",
                                         "divide the residual by its sum first")),
        (step_returns_a_pair, ("case 1 of", "returned a tuple", "return the token id alone")),
        (step_in_place, ("case 1 of", "changed p or q in place", "instead of changing p")),
        (step_without_the_generator, ("case 13 of 13", "seeded alike returned different",
                                      "pass generator=generator")),
    ],
)  # fmt: skip
def test_accept_checker_reports_errors_and_misuse(fn, words) -> None:
    result = check_my_accept_or_resample(fn)
    assert not result.passed and "Problem:" in str(result)
    for word in words:
        assert word in str(result), str(result)


def simulated_l1(exact: Tensor, draws: int, runs: int, generator: torch.Generator) -> Tensor:
    """L1 distances of the shares of `runs` simulated runs of `draws` exact draws each."""
    counts = torch.zeros(runs, len(exact), dtype=torch.float64)
    left = torch.full((runs,), float(draws), dtype=torch.float64)
    mass = 1.0
    for token, prob in enumerate(exact.tolist()):
        # A multinomial count, one token at a time: binomial in what the earlier tokens left.
        share = min(1.0, prob / mass) if mass > 0 else 0.0
        counts[:, token] = torch.binomial(left, torch.full_like(left, share), generator=generator)
        left, mass = left - counts[:, token], mass - prob
    return (counts / draws - exact).abs().sum(dim=-1)


def test_accept_checker_threshold_keeps_its_false_alarm_rate_and_catches_every_slip() -> None:
    """20,000 simulated correct runs of each case stay within its threshold (the bound promises
    a failure less than once in 13 million runs); and each named slip lies more than twice the
    threshold from the right distribution in some case, so that its shares, within the
    threshold of its own distribution, are caught whatever the seed."""
    cases = accept_or_resample_cases()
    generator = torch.Generator().manual_seed(0)
    worst_slip = [0.0] * len(accept_checker._accept_slips(cases[0]))
    for case in cases:
        exact = accept_checker._position_distribution(case)
        eps = accept_checker._l1_threshold(len(exact), ACCEPT_DRAWS, len(cases))
        assert float(simulated_l1(exact, ACCEPT_DRAWS, 20_000, generator).max()) < eps
        for index, (slip, _) in enumerate(accept_checker._accept_slips(case)):
            worst_slip[index] = max(worst_slip[index], float((slip - exact).abs().sum()) / eps)
    assert min(worst_slip) > 2, worst_slip


def test_accept_checker_hint_false_and_the_stub() -> None:
    def my_accept_or_resample(p, q, drafted_token, generator):
        raise NotImplementedError

    stub = check_my_accept_or_resample(my_accept_or_resample)
    assert stub.not_written and stub.cases_run == 0
    assert "fill in the body of my_accept_or_resample above" in str(stub)
    with_hint = check_my_accept_or_resample(step_resamples_from_p)
    without = check_my_accept_or_resample(step_resamples_from_p, hint=False)
    assert "  Hint: " in str(with_hint) and "Hint" not in str(without)
    assert str(without).split("\n") == [
        line for line in str(with_hint).split("\n") if not line.startswith("  Hint: ")
    ]
    with pytest.raises(TypeError, match="fn must be a function"):
        check_my_accept_or_resample("not a function")
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        check_my_accept_or_resample(step_by_the_library, seed=-1)


def test_accept_cases_are_valid_positions_and_deterministic() -> None:
    first, again, other = (accept_or_resample_cases(seed=s) for s in (3, 3, 4))
    assert len(first) == 12
    for a, b in zip(first, again):
        assert (
            torch.equal(a.p, b.p) and torch.equal(a.q, b.q) and a.drafted_token == b.drafted_token
        )
    assert any(a.p.shape != b.p.shape or not torch.equal(a.p, b.p) for a, b in zip(first, other))
    for case in first:
        # Each is a position lessonlib's own step accepts: distributions, x drawn from Q.
        accept_or_resample(case.p, case.q, case.drafted_token)
        assert case.q[case.drafted_token] > 0
