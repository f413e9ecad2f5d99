"""The sampling pipeline stage by stage, and what changes when two of its stages trade places."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessonlib import tinytales
from lessonlib.analysis.recorded import drawn_step_logits
from lessonlib.analysis.stage_order import (
    STAGES,
    SWAPS,
    compare_orders,
    draw_counts,
    draw_tokens,
    drawn_step_contexts,
    kept_mask,
    orders_disagree,
    record_steps,
    stage_probs,
    temperature_last_probs,
)
from lessonlib.generation import Generation, generate
from lessonlib.sampling import filter_top_k, filter_top_p, sampling_probs
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import StubModel

COUNTEREXAMPLE = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)


def random_rows(seed: int, rows: int = 200, vocab: int = 30, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, vocab, generator=generator, dtype=torch.float64)


TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)


# ----- stage_probs ---------------------------------------------------------------------------


def test_the_stages_are_the_fixed_order() -> None:
    assert STAGES == ("temperature", "top-k", "top-p", "draw")


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (0.7, 10, 0.9), (0.5, 3, None), (1.5, None, 0.8), (2.0, 1, 0.5)],
)
def test_the_last_stage_is_the_sampler(temperature: float, top_k: int | None, top_p) -> None:
    logits = random_rows(1, rows=16)
    stages = stage_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    expected = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.allclose(stages.final, expected, atol=1e-12)
    assert stages.final is stages.top_p


def test_each_stage_by_hand_on_a_small_row() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    stages = stage_probs(logits, temperature=0.5, top_k=3, top_p=0.9)
    scaled = torch.softmax(logits / 0.5, dim=-1)
    assert torch.allclose(stages.temperature, scaled)
    # Top-k keeps the first three, renormalised.
    three = torch.softmax(logits[:3] / 0.5, dim=-1)
    assert torch.allclose(stages.top_k[:3], three) and stages.top_k[3] == 0
    # Their probabilities are 0.867, 0.117, 0.016: the first two reach 0.9, so top-p keeps two.
    assert (stages.top_p > 0).tolist() == [True, True, False, False]
    assert torch.allclose(stages.top_p[:2], torch.softmax(logits[:2] / 0.5, dim=-1))


def test_a_filter_that_is_off_leaves_its_stage_unchanged() -> None:
    logits = random_rows(2, rows=4)
    stages = stage_probs(logits, temperature=0.8)
    assert torch.equal(stages.temperature, stages.top_k)
    assert torch.equal(stages.top_k, stages.top_p)


def test_stage_probs_keeps_float64_and_accepts_float32() -> None:
    assert stage_probs(COUNTEREXAMPLE, temperature=1.0).final.dtype == torch.float64
    assert stage_probs(COUNTEREXAMPLE.float(), temperature=1.0).final.dtype == torch.float32


def test_stage_probs_rejects_temperature_zero_naming_it() -> None:
    with pytest.raises(ValueError, match="temperature"):
        stage_probs(COUNTEREXAMPLE, temperature=0)


# ----- commuting -----------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5, 0.7, 1.5, 3.0])
@pytest.mark.parametrize("k", [1, 2, 5, 29])
def test_temperature_commutes_with_top_k(temperature: float, k: int) -> None:
    logits = random_rows(3)
    assert not bool(orders_disagree(logits, temperature=temperature, top_k=k).any())
    # Not only the kept set: the final probabilities agree too.
    first = sampling_probs(logits, temperature=temperature, top_k=k)
    last = temperature_last_probs(logits, temperature=temperature, top_k=k)
    assert torch.allclose(first, last, atol=1e-12)


def test_the_counterexample_of_the_issue() -> None:
    # Probabilities (0.665, 0.245, 0.090) at tau = 1 and (0.867, 0.117, 0.016) at tau = 0.5.
    at_one = kept_mask(COUNTEREXAMPLE, temperature=1.0, top_p=0.8)
    at_half = kept_mask(COUNTEREXAMPLE, temperature=0.5, top_p=0.8)
    assert at_one.tolist() == [True, True, False]
    assert at_half.tolist() == [True, False, False]
    # Temperature last: top-p sees tau = 1 whatever the temperature.
    last = kept_mask(COUNTEREXAMPLE, temperature=0.5, top_p=0.8, temperature_last=True)
    assert last.tolist() == [True, True, False]
    assert bool(orders_disagree(COUNTEREXAMPLE, temperature=0.5, top_p=0.8))
    assert not bool(orders_disagree(COUNTEREXAMPLE, temperature=1.0, top_p=0.8))


def test_temperature_does_not_commute_with_top_p_on_random_rows() -> None:
    logits = random_rows(4, scale=1.0)
    for temperature in (0.5, 1.5):
        assert bool(orders_disagree(logits, temperature=temperature, top_p=0.9).any())


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=12),
    temperature=st.floats(0.05, 20),
    p=st.floats(0.01, 1.0),
)
def test_cooler_first_keeps_a_subset_and_hotter_first_a_superset(logits, temperature, p) -> None:
    row = torch.tensor(logits, dtype=torch.float64)
    first = kept_mask(row, temperature=temperature, top_p=p)
    last = kept_mask(row, temperature=temperature, top_p=p, temperature_last=True)
    # Below 1 the temperature moves mass to the top, so every top prefix reaches p sooner; above
    # 1 later. Both kept sets are prefixes of the same ranking, so sooner means a subset.
    # (Near tau = 1 a prefix that holds p up to rounding could go either way: skipped.)
    if temperature < 0.999:
        assert not bool((first & ~last).any())
    elif temperature > 1.001:
        assert not bool((last & ~first).any())


def test_kept_sets_are_top_prefixes_in_both_orders() -> None:
    logits = random_rows(5, rows=50)
    for temperature_last in (False, True):
        kept = kept_mask(
            logits, temperature=0.7, top_k=8, top_p=0.9, temperature_last=temperature_last
        )
        order = logits.argsort(dim=-1, descending=True)
        sorted_kept = kept.gather(-1, order).int()
        # A prefix: once a token is dropped, every lower one is dropped too.
        assert bool((sorted_kept[:, 1:] <= sorted_kept[:, :-1]).all())
        assert bool((kept.sum(dim=-1) <= 8).all())


def test_kept_mask_rejects_a_non_bool_order_flag() -> None:
    with pytest.raises(TypeError, match="temperature_last"):
        kept_mask(COUNTEREXAMPLE, temperature=1.0, temperature_last="yes")
    with pytest.raises(TypeError, match="top_p_first"):
        kept_mask(COUNTEREXAMPLE, temperature=1.0, top_p_first=1)


# ----- top-k against top-p -------------------------------------------------------------------


def test_top_k_and_top_p_do_not_commute_on_the_counterexample() -> None:
    # Probabilities (0.665, 0.245, 0.090). Top-p 0.7 alone needs two tokens; after top-k 2 the
    # top token holds 0.665 / 0.910 = 0.731 of what is left, so top-p then stops at one.
    k_then_p = kept_mask(COUNTEREXAMPLE, temperature=1.0, top_k=2, top_p=0.7)
    p_then_k = kept_mask(COUNTEREXAMPLE, temperature=1.0, top_k=2, top_p=0.7, top_p_first=True)
    assert k_then_p.tolist() == [True, False, False]
    assert p_then_k.tolist() == [True, True, False]
    assert bool(orders_disagree(COUNTEREXAMPLE, temperature=1.0, top_k=2, top_p=0.7, swap="top-p"))
    # With only one filter on there is nothing to swap.
    for settings_ in ({"top_k": 2}, {"top_p": 0.7}):
        assert not bool(orders_disagree(COUNTEREXAMPLE, temperature=1.0, swap="top-p", **settings_))


@settings(max_examples=80, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=12),
    k=st.integers(1, 12),
    p=st.floats(0.01, 1.0),
)
def test_top_k_then_top_p_keeps_a_subset_of_both_filters_alone(logits, k, p) -> None:
    row = torch.tensor(logits, dtype=torch.float64)
    k_then_p = kept_mask(row, temperature=1.0, top_k=k, top_p=p)
    p_then_k = kept_mask(row, temperature=1.0, top_k=k, top_p=p, top_p_first=True)
    alone_k = kept_mask(row, temperature=1.0, top_k=k)
    alone_p = kept_mask(row, temperature=1.0, top_p=p)
    # Top-p first then top-k is the intersection of the two filters alone (both keep top
    # prefixes of the same ranking, with ties kept together).
    assert torch.equal(p_then_k, alone_k & alone_p)
    # Renormalising over the k survivors only raises every prefix's mass: top-p stops sooner.
    assert not bool((k_then_p & ~p_then_k).any())


def test_the_swap_is_named_and_checked() -> None:
    assert SWAPS == ("temperature", "top-p")
    with pytest.raises(ValueError, match="swap"):
        orders_disagree(COUNTEREXAMPLE, temperature=1.0, top_p=0.8, swap="top-k")


# ----- temperature last ----------------------------------------------------------------------


def test_temperature_last_by_hand() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    probs = temperature_last_probs(logits, temperature=0.5, top_k=3, top_p=0.8)
    # At tau = 1 top-k keeps three (0.665, 0.245, 0.090 renormalised); top-p 0.8 keeps two.
    expected = torch.softmax(torch.tensor([3.0, 2.0]) / 0.5, dim=-1).double()
    assert torch.allclose(probs[:2], expected) and probs[2:].tolist() == [0.0, 0.0]
    # Temperature first keeps only one token there.
    first = sampling_probs(logits, temperature=0.5, top_k=3, top_p=0.8)
    assert first.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_temperature_last_at_tau_one_is_the_sampler() -> None:
    logits = random_rows(6, rows=20)
    first = sampling_probs(logits, temperature=1.0, top_k=7, top_p=0.85)
    last = temperature_last_probs(logits, temperature=1.0, top_k=7, top_p=0.85)
    assert torch.allclose(first, last, atol=1e-12)


def test_temperature_last_composes_the_library_filters() -> None:
    logits = random_rows(7, rows=20)
    expected = torch.softmax(filter_top_p(filter_top_k(logits, 5), 0.7) / 1.7, dim=-1)
    got = temperature_last_probs(logits, temperature=1.7, top_k=5, top_p=0.7)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.equal(
        got > 0, kept_mask(logits, temperature=1.7, top_k=5, top_p=0.7, temperature_last=True)
    )


def test_temperature_last_leaves_its_input_alone() -> None:
    logits = random_rows(8, rows=3)
    before = logits.clone()
    temperature_last_probs(logits, temperature=0.5, top_k=2, top_p=0.5)
    stage_probs(logits, temperature=0.5, top_k=2, top_p=0.5)
    assert torch.equal(logits, before)


# ----- compare_orders ------------------------------------------------------------------------


def test_compare_orders_counts_the_rows_that_differ() -> None:
    logits = torch.stack([COUNTEREXAMPLE, COUNTEREXAMPLE * 10, torch.zeros(3, dtype=torch.float64)])
    result = compare_orders(logits, temperature=0.5, top_p=0.8)
    # Row 0 is the counterexample; row 1 is confident (one token either way); row 2 is flat,
    # and a flat row stays flat at any temperature.
    assert (result.steps, result.differ) == (3, 1)
    assert result.share.value == pytest.approx(1 / 3)
    assert result.kept_course == pytest.approx((1 + 1 + 3) / 3)
    assert result.kept_swapped == pytest.approx((2 + 1 + 3) / 3)
    assert result.kept_difference.value == pytest.approx(1 / 3)
    assert (result.temperature, result.top_k, result.top_p, result.swap) == (
        0.5,
        None,
        0.8,
        "temperature",
    )
    # Without groups each row is a unit: the standard error of the mean of (1, 0, 0).
    assert result.share.standard_error == pytest.approx(math.sqrt(1 / 3 / 3))
    assert result.share.units == 3


def test_compare_orders_swaps_top_k_and_top_p() -> None:
    logits = torch.stack([COUNTEREXAMPLE, COUNTEREXAMPLE * 10])
    result = compare_orders(logits, temperature=1.0, top_k=2, top_p=0.7, swap="top-p")
    assert (result.differ, result.kept_course, result.kept_swapped) == (1, 1.0, 1.5)


def test_compare_orders_with_top_k_only_never_differs() -> None:
    assert compare_orders(random_rows(9), temperature=0.3, top_k=4).differ == 0


def test_compare_orders_needs_a_matrix_of_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        compare_orders(COUNTEREXAMPLE, temperature=0.5, top_p=0.8)


# ----- draws ---------------------------------------------------------------------------------


def test_draws_follow_the_final_distribution_and_the_seed() -> None:
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0], dtype=torch.float64)
    settings_ = {"temperature": 0.8, "top_k": 4, "top_p": 0.9}
    counts = draw_counts(logits, n=20_000, generator=torch.Generator().manual_seed(0), **settings_)
    final = sampling_probs(logits, **settings_)
    assert int(counts.sum()) == 20_000
    assert bool((counts[final == 0] == 0).all())
    assert torch.allclose(counts.double() / 20_000, final, atol=0.01)
    again = draw_counts(logits, n=20_000, generator=torch.Generator().manual_seed(0), **settings_)
    assert torch.equal(counts, again)


def test_draw_tokens_shape_and_bad_input() -> None:
    tokens = draw_tokens(COUNTEREXAMPLE, n=7, temperature=1.0, generator=torch.Generator())
    assert tokens.shape == (7,) and tokens.dtype == torch.int64
    assert draw_tokens(COUNTEREXAMPLE, n=0, temperature=1.0).shape == (0,)
    assert draw_counts(COUNTEREXAMPLE, n=0, temperature=1.0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="n must be"):
        draw_tokens(COUNTEREXAMPLE, n=-1, temperature=1.0)
    with pytest.raises(ValueError, match=r"logits must have shape \(V,\)"):
        draw_tokens(COUNTEREXAMPLE.expand(2, -1), n=3, temperature=1.0)


# ----- recorded generations ------------------------------------------------------------------


def test_drawn_step_logits_and_contexts_follow_the_generation() -> None:
    generation = generate(
        StubModel(),
        ["Once", "Lily"],
        tokenizer=TOKENIZER,
        max_new_tokens=12,
        generator=torch.Generator().manual_seed(3),
        record_logits=True,
    )
    rows = drawn_step_logits(generation)
    lengths = [len(ids) for ids in generation.token_ids]
    assert rows.shape == (sum(lengths), len(tinytales.ALPHABET))
    assert torch.equal(rows[: lengths[0]], generation.logits[0, : lengths[0]])
    contexts = drawn_step_contexts(generation, TOKENIZER, width=6)
    assert len(contexts) == rows.shape[0]
    assert contexts[0] == ("Once", TOKENIZER.decode(generation.token_ids[0][:1]))
    second_row = contexts[lengths[0]]
    assert second_row[0] == "Lily"
    drawn = "".join(char for _, char in contexts[: lengths[0]])
    assert drawn == TOKENIZER.decode(generation.token_ids[0])
    assert all(len(before) <= 6 for before, _ in contexts)


def test_record_steps_batches_continue_one_generator() -> None:
    model = StubModel()
    recorded = record_steps(
        model, TOKENIZER, stories=5, batch_size=2, generator=torch.Generator().manual_seed(4)
    )
    assert len(recorded.texts) == len(recorded.story_lengths) == 5
    assert recorded.logits.shape == (sum(recorded.story_lengths), len(tinytales.ALPHABET))
    assert len(recorded.contexts) == recorded.logits.shape[0]
    # The first batch is one generate call with the same generator and batch size.
    first = generate(
        model,
        ["", ""],
        tokenizer=TOKENIZER,
        max_new_tokens=model.block_size,
        generator=torch.Generator().manual_seed(4),
        record_logits=True,
    )
    assert list(recorded.texts[:2]) == first.texts
    head = sum(recorded.story_lengths[:2])
    assert torch.equal(recorded.logits[:head], drawn_step_logits(first))
    again = record_steps(
        model, TOKENIZER, stories=5, batch_size=2, generator=torch.Generator().manual_seed(4)
    )
    assert again.texts == recorded.texts and torch.equal(again.logits, recorded.logits)


def test_record_steps_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="stories"):
        record_steps(StubModel(), TOKENIZER, stories=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="batch_size"):
        record_steps(StubModel(), TOKENIZER, stories=2, batch_size=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        record_steps(StubModel(), TOKENIZER, stories=2, generator=0)


def test_drawn_step_logits_needs_recorded_logits() -> None:
    plain = Generation(prompts=[""], texts=["a"], token_ids=[[1]], finished=[False])
    with pytest.raises(ValueError, match="record_logits"):
        drawn_step_logits(plain)
    with pytest.raises(TypeError, match="Generation"):
        drawn_step_logits("not a generation")


def test_thread_count_is_restored_after_each_call() -> None:
    before = torch.get_num_threads()
    compare_orders(random_rows(10, rows=5), temperature=0.5, top_p=0.9)
    assert torch.get_num_threads() == before
