"""What each stage of the chain keeps, and the finder of the smallest case where two orders differ."""

from __future__ import annotations

import itertools
import math
import re
import time

import pytest
import torch

from lessonlib.analysis import chain_order
from lessonlib.analysis.chain_order import (
    COMMUTING_PAIRS,
    GRID_STEPS,
    OrderCounterexample,
    active_stages,
    check_chain_settings,
    find_order_counterexample,
    format_counterexample,
    kept_after_each_stage,
    orders_always_agree,
)
from lessonlib.sampling import LIBRARY_ORDERS, STAGES, sampling_probs, stage_by_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOT_MIN_P = {"temperature": 2.0, "min_p": 0.1}
# One setting per stage at which it removes tokens from small distributions.
CUTTING = {
    "temperature": 0.5,
    "top_k": 2,
    "top_p": 0.8,
    "min_p": 0.1,
    "typical_p": 0.9,
    "eta_cutoff": 0.05,
}
NON_COMMUTING = [
    pair for pair in itertools.combinations(STAGES, 2) if frozenset(pair) not in COMMUTING_PAIRS
]


def every_grid_case(vocab_size: int, steps: int) -> torch.Tensor:
    """Every descending row of distinct positive multiples of 1/steps adding up to 1 (slowly)."""
    rows = [
        parts
        for parts in itertools.combinations(range(steps - 1, 0, -1), vocab_size)
        if sum(parts) == steps
    ]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, vocab_size) / steps


def final_sets_differ(logits: torch.Tensor, order_a, order_b, settings: dict) -> torch.Tensor:
    """Per row, whether the two orders end with different kept sets (no care for rounding)."""
    first = kept_after_each_stage(logits, order=order_a, **settings)[-1][1]
    second = kept_after_each_stage(logits, order=order_b, **settings)[-1][1]
    return (first != second).any(dim=-1)


# ----- kept_after_each_stage ---------------------------------------------------------------------


def test_kept_after_each_stage_reads_the_stage_probabilities() -> None:
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    settings = dict(CUTTING, temperature=1.3, top_k=6)
    order = LIBRARY_ORDERS["llama.cpp"]
    settings.pop("eta_cutoff")  # llama.cpp has no eta stage
    kept = kept_after_each_stage(logits, order=order, **settings)
    probs = stage_by_stage(logits, order=order, **settings)
    assert [stage for stage, _ in kept] == list(order)
    for (_, mask), (_, after) in zip(kept, probs):
        assert mask.dtype == torch.bool and torch.equal(mask, after > 0)
    final = sampling_probs(logits, order=order, **settings)
    assert torch.equal(kept[-1][1], final > 0)
    # Truncation only removes: each stage keeps a subset of what the stage before it kept.
    for (_, before), (_, after) in itertools.pairwise(kept):
        assert not bool((after & ~before).any())


def test_kept_after_each_stage_on_a_case_worked_by_hand() -> None:
    # P = (0.5, 0.3, 0.2): top_k = 2 keeps a and b.
    logits = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    kept = dict(kept_after_each_stage(logits, order=("top_k", "min_p"), top_k=2, min_p=0.7))
    assert kept["top_k"].tolist() == [True, True, False]
    # min_p = 0.7 keeps the tokens with P >= 0.7 P_max: 0.3 < 0.35, so only a.
    assert kept["min_p"].tolist() == [True, False, False]


def test_kept_after_each_stage_rejects_what_stage_by_stage_rejects() -> None:
    logits = torch.zeros(4)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        kept_after_each_stage(logits, order=STAGES, temperature=0)
    with pytest.raises(ValueError, match="min_p=0.1 is switched on"):
        kept_after_each_stage(logits, order=("temperature",), min_p=0.1)


# ----- which orders can differ -------------------------------------------------------------------


@pytest.mark.parametrize("pair", sorted(tuple(sorted(p)) for p in COMMUTING_PAIRS))
def test_commuting_pairs_keep_the_same_tokens_on_random_logits(pair: tuple[str, str]) -> None:
    generator = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(4000, 12, generator=generator, dtype=torch.float64)
    for temperature, top_k, min_p in itertools.product((0.3, 2.5), (1, 3, 7), (0.05, 0.3, 0.9)):
        settings = {"temperature": temperature, "top_k": top_k, "min_p": min_p}
        settings = {stage: settings[stage] for stage in pair}
        assert not bool(final_sets_differ(logits, pair, pair[::-1], settings).any())


@pytest.mark.parametrize("pair", NON_COMMUTING, ids="+".join)
def test_every_other_pair_has_a_counterexample(pair: tuple[str, str]) -> None:
    settings = {stage: CUTTING[stage] for stage in pair}
    assert not orders_always_agree(pair, pair[::-1], settings=settings)
    case = find_order_counterexample(pair, pair[::-1], settings=settings)
    assert case is not None
    assert bool(final_sets_differ(case.logits, pair, pair[::-1], settings))


def test_orders_always_agree_reads_off_stages_and_commuting_swaps() -> None:
    hf, vllm, llama = (LIBRARY_ORDERS[n] for n in ("Hugging Face", "vLLM", "llama.cpp"))
    # vLLM's order is HF's with min_p moved before top_k: with top_p off, they commute.
    assert orders_always_agree(hf, vllm, settings={"temperature": 0.7, "top_k": 5, "min_p": 0.1})
    assert not orders_always_agree(hf, vllm, settings={"top_p": 0.9, "min_p": 0.1})
    # Temperature 1 is off: llama.cpp's late temperature then changes nothing.
    assert orders_always_agree(hf, llama, settings={"temperature": 1.0, "min_p": 0.1})
    assert not orders_always_agree(hf, llama, settings=HOT_MIN_P)
    assert orders_always_agree(hf, llama, settings={"top_k": 3, "top_p": 0.8})
    assert active_stages(hf, {"temperature": 1.0, "top_p": 1.0, "min_p": 0.1}) == ("min_p",)


@pytest.mark.parametrize(
    ("order_a", "order_b", "settings"),
    [
        (("temperature", "top_k"), ("top_k", "temperature"), {"temperature": 2.0, "top_k": 2}),
        (LIBRARY_ORDERS["Hugging Face"], LIBRARY_ORDERS["vLLM"], {"top_k": 4, "min_p": 0.2}),
        (LIBRARY_ORDERS["Hugging Face"], LIBRARY_ORDERS["llama.cpp"], {"min_p": 0.3}),
        (STAGES, STAGES, CUTTING),
        (STAGES, STAGES[::-1], {}),
    ],
)
def test_orders_that_cannot_differ_give_none_without_a_search(
    monkeypatch, order_a, order_b, settings
) -> None:
    def no_search(*args, **kwargs):
        raise AssertionError("the finder searched orders that can never differ")

    monkeypatch.setattr(chain_order, "kept_after_each_stage", no_search)
    started = time.perf_counter()
    found = find_order_counterexample(order_a, order_b, settings=settings, max_vocab=26)
    assert found is None
    assert time.perf_counter() - started < 0.5


# ----- the finder ------------------------------------------------------------------------------


def test_temperature_before_or_after_min_p_at_tau_2() -> None:
    # Temperature first, min_p keeps P_i / P_max >= 0.1 ** 2 = 0.01; last, >= 0.1: on the
    # 0.1 grid two tokens never have a ratio in [0.01, 0.1), on the 0.05 grid (0.95, 0.05) has.
    order_a, order_b = ("temperature", "min_p"), ("min_p", "temperature")
    case = find_order_counterexample(order_a, order_b, settings=HOT_MIN_P)
    assert isinstance(case, OrderCounterexample)
    assert (case.vocab_size, case.grid) == (2, 0.05)
    ratio = float(case.probs[1] / case.probs[0])
    assert 0.01 <= ratio < 0.1
    assert dict(case.kept_a)["min_p"] == (0, 1) and dict(case.kept_b)["min_p"] == (0,)


@pytest.mark.parametrize(
    ("pair", "settings"),
    [
        (("temperature", "min_p"), HOT_MIN_P),
        (("temperature", "top_p"), {"temperature": 0.5, "top_p": 0.8}),
        (("top_k", "top_p"), {"top_k": 2, "top_p": 0.8}),
        (("top_p", "min_p"), {"top_p": 0.8, "min_p": 0.1}),
        # Only nine of the 499 cases of (2, 0.001) differ: random draws rarely meet the first.
        (("temperature", "eta_cutoff"), {"temperature": 2.0, "eta_cutoff": 0.01}),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, tuple) else "",
)
def test_the_case_found_is_the_smallest(pair, settings) -> None:
    """No (V, grid) before the finder's holds a case (each checked whole)."""
    case = find_order_counterexample(pair, pair[::-1], settings=settings)
    levels = [(2, grid) for grid in GRID_STEPS] + [(3, grid) for grid in GRID_STEPS[:3]]
    assert (case.vocab_size, case.grid) in levels
    for vocab_size, grid in levels[: levels.index((case.vocab_size, case.grid))]:
        logits = every_grid_case(vocab_size, round(1 / grid)).log()
        assert not bool(final_sets_differ(logits, pair, pair[::-1], settings).any())
    # On the finder's own level, with at most 500 cases, it returns the most peaked one.
    logits = every_grid_case(case.vocab_size, round(1 / case.grid)).log()
    if logits.shape[0] <= 500:
        first = int(final_sets_differ(logits, pair, pair[::-1], settings).nonzero()[0])
        assert torch.allclose(logits[first], case.logits)


def test_a_case_on_a_threshold_is_not_returned() -> None:
    # (0.75, 0.15, 0.1): a and b hold exactly typical_p = 0.9, so whether typical keeps b
    # hangs on rounding. A naive comparison counts it; a change of 1e-6 flips it.
    order_a, order_b = ("top_p", "typical_p"), ("typical_p", "top_p")
    settings = {"top_p": 0.8, "typical_p": 0.9}
    logits = torch.tensor([0.75, 0.15, 0.1], dtype=torch.float64).log()
    assert bool(final_sets_differ(logits, order_a, order_b, settings))
    nudged = logits + torch.tensor([0.0, 0.0, 1e-6], dtype=torch.float64)
    assert not bool(final_sets_differ(nudged, order_a, order_b, settings))
    case = find_order_counterexample(order_a, order_b, settings=settings)
    assert case is not None and not torch.allclose(case.logits, logits)
    for sign in (1, -1):
        moved = case.logits + sign * 1e-6 * torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
        assert bool(final_sets_differ(moved, order_a, order_b, settings))


def test_the_case_found_really_differs_when_recomputed() -> None:
    hf, llama = LIBRARY_ORDERS["Hugging Face"], LIBRARY_ORDERS["llama.cpp"]
    settings = {"temperature": 1.5, "top_k": 3, "top_p": 0.9, "min_p": 0.05}
    case = find_order_counterexample(hf, llama, settings=settings)
    assert torch.allclose(case.probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(case.logits, case.probs.log())
    steps = case.probs / case.grid
    assert torch.allclose(steps, steps.round(), atol=1e-9)  # on the grid
    assert bool((case.probs[1:] < case.probs[:-1]).all())  # distinct, descending
    final_a = sampling_probs(case.logits, order=hf, **settings)
    final_b = sampling_probs(case.logits, order=llama, **settings)
    assert not torch.equal(final_a > 0, final_b > 0)
    assert torch.allclose(case.final_a, final_a) and torch.allclose(case.final_b, final_b)
    for order, kept in ((hf, case.kept_a), (llama, case.kept_b)):
        again = kept_after_each_stage(case.logits, order=order, **settings)
        assert [stage for stage, _ in kept] == list(order)
        assert [ids for _, ids in kept] == [tuple(m.nonzero().flatten().tolist()) for _, m in again]


def test_the_finder_is_deterministic_for_a_seed() -> None:
    # Min-p against eta needs seven tokens, on the random part of the search.
    pair, settings = ("min_p", "eta_cutoff"), {"min_p": 0.1, "eta_cutoff": 0.05}
    first = find_order_counterexample(pair, pair[::-1], settings=settings, seed=3)
    again = find_order_counterexample(pair, pair[::-1], settings=settings, seed=3)
    assert first.vocab_size > 3  # found among random cases, not on an exhaustive level
    assert torch.equal(first.probs, again.probs) and first.cases_tried == again.cases_tried
    others = [
        find_order_counterexample(pair, pair[::-1], settings=settings, seed=seed).probs
        for seed in (4, 5)
    ]
    assert any(not torch.equal(first.probs, other) for other in others)


def test_none_when_nothing_is_found_in_reach() -> None:
    # eta_cutoff 3e-4 removes only probabilities below 3e-4: finer than the finest grid.
    pair = ("temperature", "eta_cutoff")
    settings = {"temperature": 1.5, "eta_cutoff": 3e-4}
    assert not orders_always_agree(pair, pair[::-1], settings=settings)
    assert find_order_counterexample(pair, pair[::-1], settings=settings) is None


def test_format_prints_the_case_compactly() -> None:
    hf, llama = LIBRARY_ORDERS["Hugging Face"], LIBRARY_ORDERS["llama.cpp"]
    case = find_order_counterexample(hf, llama, settings=HOT_MIN_P)
    text = format_counterexample(case, names=("Hugging Face", "llama.cpp"))
    lines = text.splitlines()
    assert len(lines) == 4
    printed = re.search(r"P = \(([^)]*)\)", lines[0])[1].split(", ")
    assert [float(p) for p in printed] == pytest.approx(case.probs.tolist(), abs=1e-12)
    assert all(len(p.split(".")[1]) == 2 for p in printed)  # the 0.05 grid needs 2 decimals
    assert lines[1] == "settings: temperature=2, min_p=0.1; the other stages off"
    assert lines[2].startswith("Hugging Face: temperature keeps {a, b} -> min_p keeps {a, b};")
    assert lines[3].startswith("llama.cpp:    min_p keeps {a} -> temperature keeps {a};")
    assert lines[3].endswith("final P: a 1.00")
    # Stages that are off are not printed.
    assert "top_p" not in text and "typical_p" not in text


# ----- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"settings": [("min_p", 0.1)]}, TypeError, "settings must be a mapping"),
        ({"settings": {"min-p": 0.1}}, ValueError, "settings may only name stages"),
        ({"settings": {"temperature": 0}}, ValueError, "temperature must be a finite number > 0"),
        ({"settings": {"min_p": 1.5}}, ValueError, r"min_p must be in \(0, 1\]"),
        ({"settings": {"top_k": 2.5}}, TypeError, "top_k must be an int"),
        ({"settings": {"eta_cutoff": 0.1}}, ValueError, "eta_cutoff=0.1 is switched on"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
        ({"tries": 0}, ValueError, "tries must be an int >= 1, got 0"),
        ({"max_vocab": 1}, ValueError, r"max_vocab must be an int in 2\.\.26, got 1"),
        ({"max_vocab": 27}, ValueError, r"max_vocab must be an int in 2\.\.26, got 27"),
        ({"order_b": "temperature"}, TypeError, "order must be a list or tuple"),
        ({"order_b": ("temperature", "temperature", "min_p")}, ValueError, "at most once"),
    ],
)
def test_bad_input_is_rejected_naming_it(kwargs: dict, error: type, fragment: str) -> None:
    arguments = {
        "order_a": ("temperature", "min_p"),
        "order_b": ("min_p", "temperature"),
        "settings": HOT_MIN_P,
        **kwargs,
    }
    order_a, order_b = arguments.pop("order_a"), arguments.pop("order_b")
    with pytest.raises(error, match=fragment):
        find_order_counterexample(order_a, order_b, **arguments)


def test_bad_formatter_input_is_rejected() -> None:
    case = find_order_counterexample(("temperature", "min_p"), ("min_p", "temperature"),
                                     settings=HOT_MIN_P)  # fmt: skip
    with pytest.raises(TypeError, match="case must be an OrderCounterexample"):
        format_counterexample("case")
    with pytest.raises(TypeError, match="names must be a tuple of two str"):
        format_counterexample(case, names=("only one",))


def test_settings_are_checked_and_completed() -> None:
    checked = check_chain_settings({"min_p": 0.1})
    assert checked == {
        "temperature": 1.0,
        "top_k": None,
        "top_p": None,
        "min_p": 0.1,
        "typical_p": None,
        "eta_cutoff": None,
    }
    assert math.isclose(check_chain_settings({"temperature": 2})["temperature"], 2.0)
