"""Tests for lessonlib.sampling: properties of the pipeline, pinned small cases, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lessonlib.sampling import (
    apply_temperature,
    filter_top_k,
    filter_top_p,
    sample_next,
    sampling_probs,
)

PROPERTY = settings(max_examples=300, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEMPERATURES = st.floats(0.05, 10.0)
TOP_KS = st.one_of(st.none(), st.integers(1, 45))
TOP_PS = st.one_of(st.none(), st.floats(0.01, 1.0, exclude_min=True))


@st.composite
def logits_tensors(draw: st.DrawFn, *, grid_only: bool = False) -> torch.Tensor:
    """float32 logits of shape (V,) or (B, V), V in 1..40, some -inf, one finite per row.

    Grid values are multiples of 1/8 in [-20, 20]: exact in float32, they tie often, and
    distinct values stay strictly ordered after dividing by any temperature in [0.05, 10].
    """
    batched = draw(st.booleans())
    rows = draw(st.integers(1, 4)) if batched else 1
    vocab_size = draw(st.integers(1, 40))
    style = draw(st.sampled_from(["grid", "few"] if grid_only else ["grid", "few", "free", "near"]))
    neg_inf_share = draw(st.sampled_from([0.0, 0.3, 0.9]))
    # Hypothesis picks the shape, style and seed; numpy fills the entries, because drawing each
    # entry through Hypothesis would cost ~15 us and 300 examples per property must stay fast.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (rows, vocab_size)
    if style == "grid":
        values = rng.integers(-160, 161, shape) / 8
    elif style == "few":  # heavy ties: one to three distinct grid values
        values = rng.choice(rng.integers(-160, 161, rng.integers(1, 4)) / 8, shape)
    elif style == "free":
        values = rng.uniform(-20, 20, shape)
    else:  # "near": neighbours a few float32 ulps apart, where rounding mistakes show
        base = np.float32(rng.uniform(-20, 20))
        values = base + rng.integers(0, 4, shape).astype(np.float32) * np.spacing(base)
    values = values.astype(np.float32)
    masked = rng.random(shape) < neg_inf_share
    # One anchor per row stays finite so that every row has something to sample.
    masked[np.arange(rows), rng.integers(0, vocab_size, rows)] = False
    values[masked] = -np.inf
    logits = torch.from_numpy(values)
    return logits if batched else logits[0]


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A (V,) tensor as one row, a (B, V) tensor unchanged."""
    return tensor if tensor.dim() == 2 else tensor.unsqueeze(0)


def maximal_set(row: torch.Tensor) -> set[int]:
    """Indices of the largest value of a 1-D tensor."""
    return set(torch.nonzero(row == row.max()).flatten().tolist())


def kept_set(row: torch.Tensor) -> set[int]:
    """Indices of the finite (kept) logits of a 1-D tensor."""
    return set(torch.nonzero(torch.isfinite(row)).flatten().tolist())


def brute_force_top_p(row: list[float], p: float) -> tuple[set[int], list[float]]:
    """Kept set of top-p by plain Python floats, and the prefix masses of the sorted order."""
    finite = [(value, index) for index, value in enumerate(row) if math.isfinite(value)]
    top = max(value for value, _ in finite)
    weights = {index: math.exp(value - top) for value, index in finite}
    total = sum(weights.values())
    # Descending by value, vocabulary order among ties.
    order = [index for _, index in sorted(finite, key=lambda pair: (-pair[0], pair[1]))]
    kept, masses, mass = set(), [], 0.0
    for index in order:
        mass += weights[index] / total
        masses.append(mass)
    for count, prefix_mass in enumerate(masses, start=1):
        if prefix_mass >= p:
            kept = set(order[:count])
            break
    return kept, masses


# --- probabilities -------------------------------------------------------------------------


@PROPERTY
@given(logits=logits_tensors(), temperature=TEMPERATURES, top_k=TOP_KS, top_p=TOP_PS)
def test_probs_are_nonnegative_and_sum_to_one(logits, temperature, top_k, top_p):
    probs = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    assert probs.shape == logits.shape and probs.dtype == logits.dtype
    assert bool((probs >= 0).all())
    sums = as_rows(probs).sum(dim=-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    # -inf logits get exactly zero probability.
    assert bool((probs[torch.isneginf(logits)] == 0).all())


@PROPERTY
@given(logits=logits_tensors(grid_only=True), temperature=TEMPERATURES)
def test_positive_temperature_keeps_the_maximal_set(logits, temperature):
    probs = sampling_probs(logits, temperature=temperature)
    for logit_row, prob_row in zip(as_rows(logits), as_rows(probs)):
        assert maximal_set(prob_row) == maximal_set(logit_row)


@PROPERTY
@given(logits=logits_tensors())
def test_top_k_one_puts_all_mass_on_the_maximal_set(logits):
    probs = sampling_probs(logits, top_k=1)
    greedy = sampling_probs(logits, temperature=0)
    for logit_row, prob_row, greedy_row in zip(as_rows(logits), as_rows(probs), as_rows(greedy)):
        best = maximal_set(logit_row)
        assert set(torch.nonzero(prob_row).flatten().tolist()) == best
        assert torch.allclose(prob_row[list(best)], torch.tensor(1 / len(best)))
        # Greedy is the one-hot at the first maximal index.
        assert greedy_row.tolist() == [float(i == min(best)) for i in range(len(logit_row))]


@PROPERTY
@given(logits=logits_tensors(grid_only=True), seed=st.integers(0, 2**32 - 1))
def test_sample_next_with_top_k_one_returns_the_unique_argmax(logits, seed):
    rows = as_rows(logits)
    assume(all(len(maximal_set(row)) == 1 for row in rows))
    generator = torch.Generator().manual_seed(seed)
    token_ids = sample_next(logits, top_k=1, generator=generator)
    assert torch.equal(token_ids, logits.argmax(dim=-1))
    assert torch.equal(token_ids, sample_next(logits, temperature=0))


def test_greedy_picks_the_first_maximal_index():
    logits = torch.tensor([[1.0, 3.0, 3.0], [0.0, 0.0, -1.0]])
    assert sampling_probs(logits, temperature=0).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert sample_next(logits, temperature=0).tolist() == [1, 0]


def test_pipeline_order_is_temperature_then_top_k_then_top_p():
    # Temperature before top-p: at temperature 0.5, softmax(6, 4, 2) gives the top token 0.867,
    # already >= 0.8; top-p on the untempered (3, 2, 1) would keep two tokens.
    tempered = sampling_probs(torch.tensor([3.0, 2.0, 1.0]), temperature=0.5, top_p=0.8)
    assert tempered.tolist() == [1.0, 0.0, 0.0]
    # Top-k before top-p: after top-k=2 the survivors renormalise to (0.625, 0.375), so p = 0.6
    # keeps one token; top-p first would see 0.5 < 0.6 and keep two.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    assert sampling_probs(logits, top_k=2, top_p=0.6).tolist() == [1.0, 0.0, 0.0]
    assert torch.count_nonzero(sampling_probs(logits, top_p=0.6)) == 2


def test_tiny_temperature_does_not_overflow_to_nan():
    # Without the per-row shift these divisions overflow to +inf and softmax returns NaN.
    half = torch.tensor([100.0, 120.0, 110.0], dtype=torch.float16)
    assert sampling_probs(half, temperature=0.001).tolist() == [0.0, 1.0, 0.0]
    single = torch.tensor([1.0, 3.0, 2.0])
    assert sampling_probs(single, temperature=1e-39).tolist() == [0.0, 1.0, 0.0]
    # The shift is per row: shifting the low row by the batch maximum would make it all -inf.
    batch = torch.tensor([[100.0, 120.0, 110.0], [0.0, 2.0, 1.0]], dtype=torch.float16)
    assert sampling_probs(batch, temperature=0.001).tolist() == [[0, 1, 0], [0, 1, 0]]


def test_half_precision_input_keeps_its_dtype():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).to(torch.bfloat16)
    probs = sampling_probs(logits, temperature=0.7, top_k=3, top_p=0.9)
    assert probs.dtype == torch.bfloat16
    assert abs(float(probs.float().sum()) - 1) < 1e-2
    assert sample_next(logits, generator=torch.Generator().manual_seed(0)).dtype == torch.long


# --- filters -------------------------------------------------------------------------------


@PROPERTY
@given(logits=logits_tensors())
def test_off_settings_are_exact_copies(logits):
    vocab_size = logits.shape[-1]
    outputs = [
        filter_top_k(logits, None),
        filter_top_k(logits, vocab_size),
        filter_top_k(logits, vocab_size + 3),
        filter_top_p(logits, None),
        filter_top_p(logits, 1.0),
        apply_temperature(logits, 1.0),
    ]
    for out in outputs:
        assert torch.equal(out, logits)
        assert out.data_ptr() != logits.data_ptr()


@PROPERTY
@given(logits=logits_tensors(), k=st.integers(1, 45))
def test_top_k_keeps_the_k_largest_and_everything_tied_with_the_kth(logits, k):
    filtered = filter_top_k(logits, k)
    for row, out in zip(as_rows(logits), as_rows(filtered)):
        if k >= len(row):
            assert torch.equal(out, row)
            continue
        kth = sorted(row.tolist(), reverse=True)[k - 1]
        # Kept logits (all those >= the k-th value) are unchanged, the others become -inf.
        assert torch.equal(out, torch.where(row >= kth, row, torch.tensor(-math.inf)))
        finite = int(torch.isfinite(row).sum())
        assert int(torch.isfinite(out).sum()) >= min(k, finite)


def test_top_k_keeps_ties_at_the_kth_value():
    logits = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0])
    filtered = filter_top_k(logits, 2)
    assert filtered.tolist() == [3.0, -math.inf, 2.0, 2.0, -math.inf]
    assert int(torch.isfinite(filtered).sum()) == 3


@PROPERTY
@given(logits=logits_tensors(), p1=TOP_PS, p2=TOP_PS)
def test_top_p_kept_set_grows_with_p(logits, p1, p2):
    low, high = sorted((1.0 if p is None else p) for p in (p1, p2))
    kept_low = torch.isfinite(filter_top_p(logits, low))
    kept_high = torch.isfinite(filter_top_p(logits, high))
    assert not bool((kept_low & ~kept_high).any())


@PROPERTY
@given(logits=logits_tensors(), p=st.floats(0.01, 0.99))
def test_top_p_keeps_the_smallest_prefix_with_mass_at_least_p(logits, p):
    rows = as_rows(logits)
    expected = []
    for row in rows.tolist():
        kept, masses = brute_force_top_p(row, p)
        # Stay clear of exact ties between a prefix mass and p; those are tested separately.
        assume(all(abs(mass - p) > 1e-6 for mass in masses))
        expected.append(kept)
    filtered = as_rows(filter_top_p(logits, p))
    for row, out, kept in zip(rows, filtered, expected):
        assert kept_set(out) == kept
        assert torch.equal(out[list(kept)], row[list(kept)])


@pytest.mark.parametrize(
    ("probs", "dtype", "p", "kept"),
    [
        # Dyadic probabilities are exact: the second token brings the mass to exactly 0.75,
        # so the third token sees mass 0.75 before it, which is not < 0.75.
        ([0.5, 0.25, 0.25], torch.float64, 0.75, [0, 1]),
        ([0.25, 0.25, 0.25, 0.25], torch.float32, 0.5, [0, 1]),
        ([0.25, 0.25, 0.25, 0.25], torch.float32, 0.5 + 1e-9, [0, 1, 2]),
    ],
)
def test_top_p_exact_boundary(probs, dtype, p, kept):
    logits = torch.log(torch.tensor(probs, dtype=dtype))
    # Precondition: softmax reproduces the dyadic probabilities exactly.
    assert torch.softmax(logits.double(), dim=-1).tolist() == probs
    assert kept_set(filter_top_p(logits, p)) == set(kept)


def test_top_p_half_precision_mass_is_accumulated_in_wide_floats():
    # 1000 equal tokens: mass before token j is j/1000, so p = 0.3005 keeps tokens 0..300.
    logits = torch.zeros(1000, dtype=torch.float16)
    filtered = filter_top_p(logits, 0.3005)
    assert filtered.dtype == torch.float16
    assert kept_set(filtered) == set(range(301))


def test_top_p_keeps_existing_neg_inf():
    logits = torch.tensor([1.0, -math.inf, 0.5, -math.inf])
    assert filter_top_p(logits, 0.999).tolist() == [1.0, -math.inf, 0.5, -math.inf]


@PROPERTY
@given(logits=logits_tensors(grid_only=True), temperature=TEMPERATURES, k=st.integers(1, 45))
def test_top_k_and_temperature_commute(logits, temperature, k):
    first_temperature = filter_top_k(apply_temperature(logits, temperature), k)
    first_top_k = apply_temperature(filter_top_k(logits, k), temperature)
    assert torch.equal(first_temperature, first_top_k)


def test_top_p_and_temperature_do_not_commute():
    logits = torch.tensor([3.0, 2.0, 1.0])
    # softmax(3, 2, 1) = (0.665, 0.245, 0.090): the first token alone is below 0.8.
    assert kept_set(filter_top_p(logits, 0.8)) == {0, 1}
    assert kept_set(apply_temperature(filter_top_p(logits, 0.8), 0.5)) == {0, 1}
    # softmax(6, 4, 2) = (0.867, 0.117, 0.016): the first token alone reaches 0.8.
    assert kept_set(filter_top_p(apply_temperature(logits, 0.5), 0.8)) == {0}


@PROPERTY
@given(logits=logits_tensors(), k=st.integers(1, 45), p=st.floats(0.01, 1.0))
def test_rows_are_filtered_independently(logits, k, p):
    rows = as_rows(logits)
    by_batch_k, by_batch_p = filter_top_k(rows, k), filter_top_p(rows, p)
    for index, row in enumerate(rows):
        assert torch.equal(by_batch_k[index], filter_top_k(row, k))
        assert torch.equal(by_batch_p[index], filter_top_p(row, p))


@PROPERTY
@given(logits=logits_tensors(), temperature=TEMPERATURES, top_k=TOP_KS, top_p=TOP_PS)
def test_no_function_modifies_its_input(logits, temperature, top_k, top_p):
    before = logits.clone()
    apply_temperature(logits, temperature)
    filter_top_k(logits, top_k)
    filter_top_p(logits, top_p)
    sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    sampling_probs(logits, temperature=0)
    sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    sample_next(logits, temperature=0)
    assert torch.equal(logits, before)


# --- sample_next ---------------------------------------------------------------------------


def test_sample_next_shape_and_dtype():
    generator = torch.Generator().manual_seed(0)
    single = sample_next(torch.zeros(7), generator=generator)
    batch = sample_next(torch.zeros(5, 7), generator=generator)
    greedy = sample_next(torch.zeros(5, 7), temperature=0)
    assert single.shape == () and single.dtype == torch.long
    assert batch.shape == (5,) and batch.dtype == torch.long
    assert greedy.shape == (5,) and greedy.dtype == torch.long


def test_sample_next_is_reproducible_with_a_seeded_generator():
    logits = torch.zeros(200, 10)
    first = sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(123))
    again = sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(123))
    other = sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(124))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_greedy_consumes_no_randomness():
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    sample_next(torch.tensor([0.1, 2.0, 0.3]), temperature=0, generator=generator)
    assert torch.equal(generator.get_state(), state)


def test_sample_next_never_draws_a_zero_probability_token():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, -math.inf, 1.9, 0.0, 1.0])
    draws = sample_next(
        logits.expand(2000, -1), top_k=3, generator=torch.Generator().manual_seed(1)
    )
    assert set(draws.tolist()) <= {1, 3, 5}
    # All three survivors have sizeable probability, so 2,000 draws see each of them.
    assert set(draws.tolist()) == {1, 3, 5}


def test_sample_next_frequencies_match_sampling_probs():
    logits = torch.tensor([1.2, 0.4, -0.3, 2.0, -math.inf, 0.9])
    settings_ = {"temperature": 0.8, "top_k": 5, "top_p": 0.95}
    probs = sampling_probs(logits, **settings_).double()
    draws = 20_000
    token_ids = sample_next(
        logits.expand(draws, -1), **settings_, generator=torch.Generator().manual_seed(2024)
    )
    counts = torch.bincount(token_ids, minlength=len(logits)).double()
    support = probs > 0
    assert bool((counts[~support] == 0).all())
    expected = probs[support] * draws
    chi_square = float(((counts[support] - expected) ** 2 / expected).sum())
    # 99.9th percentile of the chi-square distribution, keyed by degrees of freedom.
    critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}
    assert chi_square < critical[int(support.sum()) - 1]


# --- the pipeline is the composition of the public filters ---------------------------------


def plain_top_k_top_p(logits: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """Top-k then top-p through the public filters."""
    return filter_top_p(filter_top_k(logits, k), p)


@PROPERTY
@given(logits=logits_tensors(), temperature=TEMPERATURES, top_k=TOP_KS, top_p=TOP_PS)
def test_pipeline_is_the_composition_of_the_public_filters(logits, temperature, top_k, top_p):
    # Ties (grid and "few" rows), -inf entries, single rows and batches: sampling_probs must be
    # softmax of the filters a learner applies by hand, bit for bit.
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    filtered = filter_top_p(filter_top_k(apply_temperature(shifted, temperature), top_k), top_p)
    probs = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.equal(probs, torch.softmax(filtered, dim=-1))


def test_draws_are_those_of_the_former_top_k_first_route():
    # Until the course dropped it, a fast path sorted only the k survivors of top-k when both
    # filters were on (it paid off only at 50,257 tokens). These are its draws, recorded with it:
    # the plain composition that replaced it draws exactly the same tokens.
    logits = torch.randn(32, 50_257, generator=torch.Generator().manual_seed(3)) * 4
    generator = torch.Generator().manual_seed(11)
    drawn = sample_next(logits, temperature=0.8, top_k=50, top_p=0.9, generator=generator)
    assert drawn.tolist() == [
        13003, 25836, 34753, 25492, 38396, 22663, 12262, 24084, 21578, 46418, 11089,
        39388, 28412, 22678, 42205, 20737, 7915, 15036, 28027, 27755, 32849, 15640,
        21628, 42859, 20396, 28170, 25836, 37636, 16331, 12177, 18377, 38247,
    ]  # fmt: skip


@pytest.mark.parametrize("batch", [1, 32])
def test_pipeline_draws_match_the_plain_composition(batch):
    # sampling_probs must equal softmax of the public filters on the shifted, tempered logits
    # bit for bit, so that seeded draws (and saved notebook outputs) do not change.
    logits = torch.randn(batch, 50_257, generator=torch.Generator().manual_seed(3)) * 4
    settings_ = {"temperature": 0.8, "top_k": 50, "top_p": 0.9}
    tempered = apply_temperature(logits - logits.amax(dim=-1, keepdim=True), 0.8)
    expected = torch.softmax(plain_top_k_top_p(tempered, 50, 0.9), dim=-1)
    assert torch.equal(sampling_probs(logits, **settings_), expected)
    drawn = sample_next(logits, **settings_, generator=torch.Generator().manual_seed(11))
    reference = torch.multinomial(expected, 1, generator=torch.Generator().manual_seed(11))
    assert torch.equal(drawn, reference[:, 0])


# --- validation ----------------------------------------------------------------------------

GOOD = torch.tensor([1.0, 2.0, 3.0])
PUBLIC_CALLS = {
    "apply_temperature": lambda logits: apply_temperature(logits, 1.0),
    "filter_top_k": lambda logits: filter_top_k(logits, 2),
    "filter_top_p": lambda logits: filter_top_p(logits, 0.5),
    "sampling_probs": lambda logits: sampling_probs(logits),
    "sample_next": lambda logits: sample_next(logits),
}


@pytest.mark.parametrize("call", PUBLIC_CALLS.values(), ids=PUBLIC_CALLS.keys())
@pytest.mark.parametrize(
    ("logits", "error", "match"),
    [
        ([1.0, 2.0], TypeError, r"logits must be a torch\.Tensor.*got list"),
        (torch.tensor([1, 2, 3]), TypeError, r"logits must have a floating dtype.*torch\.int64"),
        (
            torch.zeros(1, 2, 3),
            ValueError,
            r"logits must have shape \(V,\) or \(B, V\).*\(1, 2, 3\)",
        ),
        (torch.tensor(1.0), ValueError, r"logits must have shape.*got shape \(\)"),
        (torch.zeros(0), ValueError, r"logits must not be empty, got shape \(0,\)"),
        (torch.tensor([1.0, math.nan]), ValueError, r"logits must be finite or -inf, got NaN"),
        (torch.tensor([[0.0, 1.0], [math.inf, 0.0]]), ValueError, r"got \+inf at index \(1, 0\)"),
        (torch.tensor([-math.inf, -math.inf]), ValueError, r"logits row 0 has no finite value"),
        (torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), ValueError, r"logits row 1 has no"),
    ],
    ids=["list", "int", "rank3", "scalar", "empty", "nan", "posinf", "all-neg-inf", "row-1"],
)
def test_bad_logits_are_rejected_by_every_function(call, logits, error, match):
    with pytest.raises(error, match=match):
        call(logits)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: apply_temperature(GOOD, 0), ValueError, r"temperature must be > 0.*greedy"),
        (
            lambda: apply_temperature(GOOD, -1),
            ValueError,
            r"temperature must be a finite number > 0, got -1$",
        ),
        (lambda: sampling_probs(GOOD, temperature=-1), ValueError, r"temperature.*got -1"),
        (lambda: sample_next(GOOD, temperature=math.nan), ValueError, r"temperature.*got nan"),
        (lambda: sample_next(GOOD, temperature=math.inf), ValueError, r"temperature.*got inf"),
        (lambda: sampling_probs(GOOD, temperature="0.5"), TypeError, r"temperature.*'0\.5'"),
        (lambda: sampling_probs(GOOD, temperature=None), TypeError, r"temperature.*None"),
        (lambda: sampling_probs(GOOD, temperature=True), TypeError, r"temperature.*bool"),
        (lambda: filter_top_k(GOOD, 0), ValueError, r"k must be an int >= 1 or None, got 0"),
        (lambda: sampling_probs(GOOD, top_k=0), ValueError, r"top_k must be an int >= 1.*got 0"),
        (lambda: sample_next(GOOD, top_k=-2), ValueError, r"top_k must be.*got -2"),
        (lambda: sampling_probs(GOOD, top_k=2.0), TypeError, r"top_k must be an int.*float"),
        (lambda: filter_top_k(GOOD, True), TypeError, r"k must be an int.*bool"),
        (lambda: filter_top_p(GOOD, 0), ValueError, r"p must be in \(0, 1\] or None, got 0"),
        (lambda: sampling_probs(GOOD, top_p=0), ValueError, r"top_p must be in \(0, 1\].*got 0"),
        (lambda: sampling_probs(GOOD, top_p=1.5), ValueError, r"top_p must be in .*got 1\.5"),
        (lambda: sample_next(GOOD, top_p=math.nan), ValueError, r"top_p must be in .*got nan"),
        (lambda: sample_next(GOOD, top_p="0.9"), TypeError, r"top_p must be a number.*str"),
        (lambda: sample_next(GOOD, generator=0), TypeError, r"generator must be a torch\.Gen"),
    ],
)
def test_bad_parameters_name_the_parameter_and_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_error_message_states_the_accepted_range_exactly():
    with pytest.raises(ValueError) as caught:
        sampling_probs(GOOD, top_p=1.5)
    assert str(caught.value) == "top_p must be in (0, 1] or None, got 1.5"


@pytest.mark.parametrize(
    ("bad", "match"),
    [(math.nan, r"got NaN at index \(1, 40000\)"), (math.inf, r"got \+inf at index \(1, 40000\)")],
)
def test_non_finite_logits_are_found_anywhere_in_a_long_row(bad, match):
    # The finite check reduces each row to its maximum; a bad value deep in a vectorised row
    # must still reach it.
    logits = torch.zeros(2, 50_257)
    logits[1, 40_000] = bad
    with pytest.raises(ValueError, match=match):
        sample_next(logits)


def test_huge_finite_logits_pass_the_finite_check():
    # The fast check sums the row maxima; 3e38 + 3e38 overflows to inf in float32, and the
    # precise check that follows must then find nothing wrong rather than raise.
    logits = torch.tensor([[3e38, 0.0, 1.0], [0.0, 3e38, 2.0]])
    assert sample_next(logits, temperature=0.0).tolist() == [0, 1]
    probs = sampling_probs(logits)
    assert torch.equal(probs.argmax(dim=-1), torch.tensor([0, 1]))


def test_check_temperature_names_the_parameter_and_the_accepted_range():
    from lessonlib import validation
    from lessonlib.sampling import check_temperature

    assert check_temperature is validation.check_temperature  # one validator, two addresses
    assert check_temperature(0) == 0.0 and check_temperature(2) == 2.0
    with pytest.raises(ValueError, match=r"^tau must be a finite number > 0, got 0$"):
        check_temperature(0, name="tau", greedy=False)
    with pytest.raises(ValueError, match=r">= 0 \(0 means greedy\), got nan"):
        check_temperature(math.nan)
    with pytest.raises(TypeError, match=r"temperature must be a real number .* of type bool"):
        check_temperature(True)
