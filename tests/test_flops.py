"""Counted work: the FLOP formulas of lessonlib.analysis.flops against torch's own FLOP counter; the clock."""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lessonlib import tinytales
from lessonlib.analysis.flops import (
    ForwardFlops,
    count_operations,
    fit_exponent,
    forward_flops,
    generation_flops,
    generation_step_flops,
    measure_flops,
    time_side_by_side,
)
from lessonlib.generation import generate
from lessonlib.model import GPT, GPTConfig
from lessonlib.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
COURSE = GPTConfig(vocab_size=len(tinytales.ALPHABET))  # the shipped model's shape
# Uneven sizes, so that a formula that swaps two of them cannot pass by accident.
ODD = GPTConfig(vocab_size=len(tinytales.ALPHABET), block_size=24, n_layer=3, n_head=2, n_embd=24)


def model_for(config: GPTConfig) -> GPT:
    """A random GPT of this shape: the number of operations does not depend on the weights."""
    torch.manual_seed(0)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def course_model() -> GPT:
    return model_for(COURSE)


@pytest.fixture(scope="module")
def odd_model() -> GPT:
    return model_for(ODD)


def counted_forward(model: GPT, past_tokens: int, new_tokens: int, batch_size: int = 1) -> int:
    """torch's count for one forward pass of new_tokens after past_tokens cached positions."""
    generator = torch.Generator().manual_seed(past_tokens + new_tokens)
    ids = torch.randint(
        model.vocab_size, (batch_size, past_tokens + new_tokens), generator=generator
    )
    with torch.inference_mode():
        cache = model.new_kv_cache(batch_size) if past_tokens else None
        if cache is not None:
            model(ids[:, :past_tokens], kv_cache=cache)
        return measure_flops(lambda: model(ids[:, past_tokens:], kv_cache=cache))


# ----- one forward pass ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("past_tokens", "new_tokens"), [(0, 1), (0, 7), (0, 64), (5, 1), (10, 3), (100, 1), (30, 34)]
)
def test_formula_equals_torch_counter_on_the_course_model(course_model, past_tokens, new_tokens):
    formula = forward_flops(COURSE, past_tokens=past_tokens, new_tokens=new_tokens)
    assert counted_forward(course_model, past_tokens, new_tokens) == formula.total


@pytest.mark.parametrize(("past_tokens", "new_tokens"), [(0, 1), (0, 24), (9, 1), (4, 5)])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_formula_equals_torch_counter_on_an_uneven_shape(
    odd_model, past_tokens, new_tokens, batch_size
):
    formula = forward_flops(
        ODD, past_tokens=past_tokens, new_tokens=new_tokens, batch_size=batch_size
    )
    assert counted_forward(odd_model, past_tokens, new_tokens, batch_size) == formula.total


def test_one_token_with_no_past_by_hand():
    # Pinned from the formula written out by hand for n_embd 128, 4 layers, vocabulary 50: per
    # layer 24 * 128^2 for the weight matrices and 4 * 128 * (1 x 1 context) for attention.
    flops = forward_flops(COURSE, past_tokens=0, new_tokens=1)
    assert flops.total == 4 * (24 * 128**2 + 4 * 128) + 2 * 128 * 50 == 1_587_712
    assert flops.attention == 4 * 4 * 128
    assert flops.weights == flops.total - flops.attention


def test_counter_does_not_see_the_fused_cpu_attention(course_model):
    """Why measure_flops switches backends: on CPU the default SDPA kernel is not counted.

    If a torch release starts counting it, this test fails and the module docstring (and the
    lesson's sentence about it) must change.
    """
    ids = torch.zeros(1, 16, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        course_model(ids)
    flops = forward_flops(COURSE, past_tokens=0, new_tokens=16)
    assert counter.get_total_flops() == flops.weights < flops.total


def test_parts_scale_as_stated():
    one = forward_flops(COURSE, past_tokens=0, new_tokens=1)
    # Weight matrices: linear in the new tokens, independent of the past.
    for past, new in [(0, 10), (50, 10), (200, 10)]:
        flops = forward_flops(COURSE, past_tokens=past, new_tokens=new)
        assert flops.weights == new * one.weights
        assert flops.attention == new * (past + new) * one.attention
    double = forward_flops(COURSE, past_tokens=3, new_tokens=5, batch_size=2)
    single = forward_flops(COURSE, past_tokens=3, new_tokens=5)
    assert double.total == 2 * single.total


def test_forward_flops_rejects_bad_input():
    with pytest.raises(ValueError, match="new_tokens must be an int >= 1, got 0"):
        forward_flops(COURSE, past_tokens=0, new_tokens=0)
    with pytest.raises(ValueError, match="past_tokens must be an int >= 0, got -1"):
        forward_flops(COURSE, past_tokens=-1, new_tokens=1)
    with pytest.raises(ValueError, match="block_size=512, got 510 \\+ 3"):
        forward_flops(COURSE, past_tokens=510, new_tokens=3)
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got True"):
        forward_flops(COURSE, past_tokens=0, new_tokens=1, batch_size=True)
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        forward_flops({"n_embd": 128}, past_tokens=0, new_tokens=1)


# ----- generation ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("prompts", [["Once"], ["Once", "The "]])
def test_generation_formula_equals_torch_counter_on_generate(course_model, use_cache, prompts):
    def run() -> None:
        generate(
            course_model,
            prompts,
            tokenizer=TOKENIZER,
            max_new_tokens=6,
            generator=torch.Generator().manual_seed(0),
            use_cache=use_cache,
            stop_at_boundary=False,  # exactly 6 steps, whatever is drawn
        )

    formula = generation_flops(
        COURSE,
        prompt_length=1 + len(prompts[0]),  # the boundary token, then the prompt
        max_new_tokens=6,
        use_cache=use_cache,
        batch_size=len(prompts),
    )
    assert measure_flops(run) == formula.total


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_past_the_block_size_follows_the_loop(odd_model, use_cache):
    # Block 24: the 7-token context grows past it, so the cache is refilled from the window.
    def run() -> None:
        generate(
            odd_model,
            "Lily a",
            tokenizer=TOKENIZER,
            max_new_tokens=25,
            generator=torch.Generator().manual_seed(0),
            use_cache=use_cache,
            stop_at_boundary=False,
        )

    formula = generation_flops(ODD, prompt_length=7, max_new_tokens=25, use_cache=use_cache)
    assert measure_flops(run) == formula.total


def test_steps_with_and_without_the_cache():
    one = forward_flops(COURSE, past_tokens=0, new_tokens=1)
    cached = generation_step_flops(COURSE, prompt_length=5, max_new_tokens=4, use_cache=True)
    uncached = generation_step_flops(COURSE, prompt_length=5, max_new_tokens=4, use_cache=False)
    # Both start with the same pass over the 5 prompt tokens (the prefill).
    assert cached[0] == uncached[0] == forward_flops(COURSE, past_tokens=0, new_tokens=5)
    assert [s.weights for s in cached[1:]] == [one.weights] * 3
    assert [s.weights for s in uncached] == [n * one.weights for n in (5, 6, 7, 8)]
    assert [s.attention for s in cached[1:]] == [n * one.attention for n in (6, 7, 8)]


def test_past_the_block_the_cache_saves_nothing():
    config = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4)
    cached = generation_step_flops(config, prompt_length=3, max_new_tokens=12, use_cache=True)
    uncached = generation_step_flops(config, prompt_length=3, max_new_tokens=12, use_cache=False)
    # The context reaches 9 > 8 tokens at step 6: from then on both run the full window.
    assert cached[6:] == uncached[6:]
    assert all(c.total < u.total for c, u in zip(cached[1:6], uncached[1:6]))


@pytest.mark.parametrize("new_tokens", [1, 2, 17, 512])
def test_closed_form_ratios_from_a_single_token_prompt(new_tokens):
    """Generating N tokens from one token: weights cost N(N+1)/2 vs N, attention ~N^3/3 vs N^2/2."""
    N = new_tokens
    without = generation_flops(COURSE, prompt_length=1, max_new_tokens=N, use_cache=False)
    with_cache = generation_flops(COURSE, prompt_length=1, max_new_tokens=N, use_cache=True)
    assert Fraction(without.weights, with_cache.weights) == Fraction(N + 1, 2)
    assert Fraction(without.attention, with_cache.attention) == Fraction(2 * N + 1, 3)


def test_generation_rejects_bad_input():
    with pytest.raises(ValueError, match="prompt_length must be an int >= 1, got 0"):
        generation_flops(COURSE, prompt_length=0, max_new_tokens=3, use_cache=True)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -2"):
        generation_flops(COURSE, prompt_length=1, max_new_tokens=-2, use_cache=True)
    with pytest.raises(TypeError, match="use_cache must be a bool, got 'yes'"):
        generation_flops(COURSE, prompt_length=1, max_new_tokens=3, use_cache="yes")


def test_forward_flops_add_by_part():
    a, b = ForwardFlops(1, 2, 3, 4), ForwardFlops(10, 20, 30, 40)
    assert a + b == ForwardFlops(11, 22, 33, 44)
    assert (a + b).total == 110 and (a + b).weights == 88


# ----- exponents -----------------------------------------------------------------------------


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0, 3.0])
def test_fit_exponent_recovers_a_power_law(exponent):
    lengths = [1, 2, 4, 8, 16, 32]
    assert fit_exponent(lengths, [7 * n**exponent for n in lengths]) == pytest.approx(exponent)


def test_fitted_exponents_of_generation_cost():
    # 16 .. 512 new tokens from a one-token prompt; below 16 the "+1" of N(N+1)/2 still shows.
    lengths = [2**k for k in range(4, 10)]
    parts = {
        use_cache: [
            generation_flops(COURSE, prompt_length=1, max_new_tokens=n, use_cache=use_cache)
            for n in lengths
        ]
        for use_cache in (False, True)
    }
    weights = {k: fit_exponent(lengths, [p.weights for p in v]) for k, v in parts.items()}
    attention = {k: fit_exponent(lengths, [p.attention for p in v]) for k, v in parts.items()}
    total = {k: fit_exponent(lengths, [p.total for p in v]) for k, v in parts.items()}
    assert weights[False] == pytest.approx(2, abs=0.05) and weights[True] == pytest.approx(1)
    assert attention[False] == pytest.approx(3, abs=0.05)
    assert attention[True] == pytest.approx(2, abs=0.05)
    # At these lengths the weight matrices dominate, so the total sits just above 2 and 1.
    assert 2 < total[False] < 2.5 and round(total[False]) == 2
    assert 1 < total[True] < 1.5 and round(total[True]) == 1


def test_fit_exponent_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        fit_exponent([1, 2], [1])
    with pytest.raises(ValueError, match="two distinct"):
        fit_exponent([3, 3], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_exponent([1, 2], [0, 2])
    assert not math.isnan(fit_exponent([1, 2], [1, 2]))


def test_count_operations_counts_what_python_starts_once_each():
    x = torch.ones(4, 3)
    weight = torch.ones(2, 3)
    counted = count_operations(lambda: torch.nn.functional.linear(x, weight) + 1)
    # linear calls a matrix product inside; only the outer call counts.
    assert counted == {"aten::linear": 1, "aten::add": 1}
    assert count_operations(lambda: (x[1:], x.view(12))) == {"aten::slice": 1, "aten::view": 1}


def test_a_cached_step_adds_three_operations_per_layer(odd_model):
    """The cache's cost in operations: store keys and values (slice, narrow, copy), read them
    back (narrow, unbind), less the two selects that pick k and v without a cache."""
    ids = torch.zeros(1, 6, dtype=torch.long)
    with torch.inference_mode():
        bare = count_operations(lambda: odd_model(ids[:, :1]))
        cache = odd_model.new_kv_cache(1)
        cache.reserve(6)  # as generate does: no growth inside the counted step
        odd_model(ids[:, :5], kv_cache=cache)
        cached = count_operations(lambda: odd_model(ids[:, 5:], kv_cache=cache))
    assert sum(cached.values()) - sum(bare.values()) == 3 * ODD.n_layer
    assert cached["aten::copy_"] == ODD.n_layer  # keys and values stored in one copy per layer
    assert bare["aten::linear"] == cached["aten::linear"] == 4 * ODD.n_layer + 1


# ----- side-by-side timing -------------------------------------------------------------------


def test_time_side_by_side_alternates_and_rotates_the_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    seconds = time_side_by_side(runs, rounds=4)
    assert calls == [*"abc", *"bca", *"cab", *"abc"]  # round r starts at run r mod 3
    assert list(seconds) == ["a", "b", "c"]
    assert all(len(times) == 4 and min(times) >= 0 for times in seconds.values())


def test_time_side_by_side_runs_on_its_threads_without_autograd():
    seen = []
    runs = {"x": lambda: seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))}
    before = torch.get_num_threads()
    time_side_by_side(runs, rounds=2)
    time_side_by_side(runs, rounds=1, threads=2)
    assert seen == [(1, True), (1, True), (2, True)]
    assert torch.get_num_threads() == before and not torch.is_inference_mode_enabled()


def test_time_side_by_side_measures_each_call():
    seconds = time_side_by_side({"slow": lambda: time.sleep(0.02), "fast": lambda: None}, rounds=3)
    assert min(seconds["slow"]) >= 0.02
    assert all(fast < slow for fast, slow in zip(seconds["fast"], seconds["slow"]))


def test_time_side_by_side_rejects_bad_input():
    with pytest.raises(ValueError, match="runs must be a non-empty mapping"):
        time_side_by_side({}, rounds=1)
    with pytest.raises(TypeError, match=r"runs\['x'\] must be callable, got int"):
        time_side_by_side({"x": 3}, rounds=1)
    with pytest.raises(ValueError, match="rounds must be an int >= 1, got 0"):
        time_side_by_side({"x": lambda: None}, rounds=0)
    with pytest.raises(TypeError, match="progress must be a bool, got 1"):
        time_side_by_side({"x": lambda: None}, rounds=1, progress=1)
    with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
        time_side_by_side({"x": lambda: None}, rounds=1, threads=0)
