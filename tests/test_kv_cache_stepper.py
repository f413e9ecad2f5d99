"""The KV cache stepper: its pure state, its work numbers, and its view driven headless."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.flops import forward_flops, generation_flops
from lessonlib.model import GPT, GPTConfig
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.kv_cache import NEWEST_COLOR, RECOMPUTED_COLOR, KVCacheStepper
from lessonlib.widgets.kv_cache_state import (
    DEFAULT_TEXT,
    KVCacheStepperState,
    cache_rows,
    from_model,
)

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
CONFIG = GPTConfig(
    vocab_size=len(tinytales.ALPHABET), block_size=32, n_layer=2, n_head=2, n_embd=16
)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def toy_state(tokens: int = 5, **kwargs: object) -> KVCacheStepperState:
    rows = torch.arange(tokens * 3, dtype=torch.float32).reshape(tokens, 3)
    labels = [chr(ord("a") + i) for i in range(tokens)]
    return KVCacheStepperState(config=CONFIG, labels=labels, keys=rows, values=-rows, **kwargs)


# ----- state ---------------------------------------------------------------------------------


def test_step_zero_has_an_empty_cache_and_no_work():
    state = toy_state()
    assert state.step == 0 and state.max_step == 5
    assert state.newest_row is None and state.computed_rows == range(0)
    assert state.cumulative_work(True) == state.cumulative_work(False) == 0
    assert state.step_ratio is None and state.cumulative_ratio is None
    assert state.readout() == {
        "step": "step 0 / 5",
        "computed": "no token yet: nothing computed",
        "step_work": "this step: 0 FLOPs with the cache, 0 without",
        "with": "cumulative work, cache on: 0 FLOPs",
        "without": "cumulative work, cache off: 0 FLOPs",
        "step_ratio": "per-step ratio: none yet",
        "ratio": "cumulative ratio: none yet",
    }


def test_forward_and_back_move_one_step_and_stop_at_the_ends():
    state = toy_state(tokens=3)
    steps = [state.step]
    for _ in range(5):
        state = state.forward()
        steps.append(state.step)
    assert steps == [0, 1, 2, 3, 3, 3]
    assert state.back().step == 2 and toy_state().back().step == 0


def test_transitions_return_new_states():
    state = toy_state()
    moved = state.set_step(3).set_cache(False)
    assert (state.step, state.use_cache) == (0, True)
    assert (moved.step, moved.use_cache) == (3, False)
    assert moved.toggle_cache().use_cache is True
    assert moved.reset().step == 0 and moved.reset().use_cache is True


def test_with_the_cache_only_the_newest_row_is_computed():
    state = toy_state().set_step(4)
    assert state.newest_row == 3
    assert list(state.computed_rows) == [3]
    assert list(state.set_cache(False).computed_rows) == [0, 1, 2, 3]
    assert state.readout()["computed"] == "cache on: this step computes K and V for 1 row, reuses 3"
    assert (
        state.set_cache(False).readout()["computed"]
        == "cache off: this step recomputes K and V for all 4 rows"
    )


def test_work_numbers_are_those_of_lessonlib_flops():
    state = toy_state(tokens=12)
    for step in range(13):
        at = state.set_step(step)
        for use_cache in (True, False):
            expected = generation_flops(
                CONFIG, prompt_length=1, max_new_tokens=step, use_cache=use_cache
            ).total
            assert at.cumulative_work(use_cache) == expected
            # The switch changes what the view highlights, never the two totals it shows.
            assert at.toggle_cache().cumulative_work(use_cache) == expected


def test_cumulative_work_adds_the_work_of_each_step():
    state = toy_state(tokens=6).set_step(6)
    # Step s reads s tokens: one new token after s - 1 cached, or the whole s-token context.
    with_cache = sum(
        forward_flops(CONFIG, past_tokens=s - 1, new_tokens=1).total for s in range(1, 7)
    )
    without = sum(forward_flops(CONFIG, past_tokens=0, new_tokens=s).total for s in range(1, 7))
    assert state.cumulative_work(True) == with_cache
    assert state.cumulative_work(False) == without
    assert state.step_work(False) == forward_flops(CONFIG, past_tokens=0, new_tokens=6).total
    assert state.step_work(True) == forward_flops(CONFIG, past_tokens=5, new_tokens=1).total
    assert state.readout()["with"] == f"cumulative work, cache on: {with_cache:,} FLOPs"


def test_cumulative_ratio_starts_at_one_and_grows():
    state = toy_state(tokens=12)
    ratios = [state.set_step(s).cumulative_ratio for s in range(1, 13)]
    assert ratios[0] == 1.0  # one token: both ways run the same single-token pass
    assert all(b > a for a, b in itertools.pairwise(ratios))
    last = state.set_step(12)
    assert last.cumulative_ratio == last.cumulative_work(False) / last.cumulative_work(True)
    assert last.readout()["ratio"] == (
        f"cumulative ratio (steps 1 .. 12, off / on) {last.cumulative_ratio:.2f}×"
    )


def test_per_step_ratio_is_the_step_and_exceeds_the_cumulative_one():
    """A pass over s tokens has s rows in every product where a cached step has one."""
    state = toy_state(tokens=12)
    for step in range(1, 13):
        at = state.set_step(step)
        without = forward_flops(CONFIG, past_tokens=0, new_tokens=step).total
        with_cache = forward_flops(CONFIG, past_tokens=step - 1, new_tokens=1).total
        assert at.step_ratio == without / with_cache == step
        assert at.step_ratio >= at.cumulative_ratio  # equal only at step 1
        assert at.readout()["step_work"] == (
            f"this step: {with_cache:,} FLOPs with the cache, {without:,} without"
        )
    assert state.set_step(7).readout()["step_ratio"] == "per-step ratio (this step, off / on) 7.00×"


def test_state_rejects_bad_input():
    with pytest.raises(ValueError, match=r"step must be an int in 0\.\.5, got 6"):
        toy_state().set_step(6)
    with pytest.raises(TypeError, match=r"step must be an int in 0\.\.5, got True"):
        toy_state().set_step(True)
    with pytest.raises(TypeError, match="use_cache must be a bool, got 1"):
        toy_state().set_cache(1)
    with pytest.raises(ValueError, match="labels must name 1 .. block_size=32 tokens, got 0"):
        KVCacheStepperState(
            config=CONFIG, labels=(), keys=torch.zeros(0, 2), values=torch.zeros(0, 2)
        )
    with pytest.raises(ValueError, match=r"keys must be a tensor of shape \(2, dims\)"):
        KVCacheStepperState(
            config=CONFIG, labels=("a", "b"), keys=torch.zeros(3, 2), values=torch.zeros(2, 2)
        )
    with pytest.raises(ValueError, match="keys and values must have the same shape"):
        KVCacheStepperState(
            config=CONFIG, labels=("a", "b"), keys=torch.zeros(2, 2), values=torch.zeros(2, 3)
        )


# ----- the model's rows ----------------------------------------------------------------------


def test_rows_of_one_pass_equal_rows_cached_token_by_token(model):
    """The past never changes: feeding the tokens one at a time fills the same rows."""
    ids = torch.tensor([TOKENIZER.boundary_id, *TOKENIZER.encode(DEFAULT_TEXT)])
    keys, values = cache_rows(model, ids, layer=1, head=1, dims=5)
    kv_cache = model.new_kv_cache(1)
    with torch.inference_mode():
        for token in ids:
            model(token.view(1, 1), kv_cache=kv_cache)
    assert keys.shape == values.shape == (len(ids), 5)
    assert torch.allclose(keys, kv_cache.keys[1, 0, 1, : len(ids), :5], atol=1e-6)
    assert torch.allclose(values, kv_cache.values[1, 0, 1, : len(ids), :5], atol=1e-6)
    assert not torch.allclose(keys, cache_rows(model, ids, layer=0, head=1, dims=5)[0])


def test_from_model_labels_the_boundary_and_spaces(model):
    state = from_model(model, TOKENIZER, "Once upon a")
    assert state.labels == ("↵", "O", "n", "c", "e", "␣", "u", "p", "o", "n", "␣", "a")
    assert state.max_step == 12 and state.keys.shape == (12, 8)
    assert state.description == "layer 0, head 0: the first 8 of 8 dimensions"


def test_cache_rows_rejects_bad_choices(model):
    ids = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"layer must be an int in 0\.\.1, got 2"):
        cache_rows(model, ids, layer=2)
    with pytest.raises(ValueError, match=r"head must be an int in 0\.\.1, got -1"):
        cache_rows(model, ids, head=-1)
    with pytest.raises(ValueError, match=r"dims must be an int in 1\.\.8, got 9"):
        cache_rows(model, ids, dims=9)
    with pytest.raises(ValueError, match="token_ids must be a 1-d tensor"):
        cache_rows(model, ids[None, :])


# ----- view, headless ------------------------------------------------------------------------


def filled_rows(image) -> int:
    """Rows of a heatmap that show numbers (not masked)."""
    mask = np.ma.getmaskarray(image.get_array())
    return int((~mask.all(axis=1)).sum())


def outlined(stepper: KVCacheStepper, panel: int = 0) -> dict[int, str]:
    """Visible row outlines of one panel: row -> edge colour as hex."""
    from matplotlib.colors import to_hex

    return {
        row: to_hex(box.get_edgecolor())
        for row, box in enumerate(stepper.outlines[panel])
        if box.get_visible()
    }


def test_next_fills_one_row_at_a_time(model):
    stepper = KVCacheStepper(model, TOKENIZER)
    assert [filled_rows(image) for image in stepper.images] == [0, 0]
    assert stepper.back_button.disabled and not stepper.next_button.disabled
    for step in (1, 2, 3):
        stepper.next_button.click()
        assert stepper.step_slider.value == stepper.state.step == step
        assert [filled_rows(image) for image in stepper.images] == [step, step]
        assert outlined(stepper) == {step - 1: NEWEST_COLOR}
    assert stepper.step_label.value == "step 3 / 12"
    assert (
        stepper.computed_label.value == "cache on: this step computes K and V for 1 row, reuses 2"
    )
    shown = stepper.images[1].get_array()
    assert np.allclose(shown[:3], stepper.state.values[:3].numpy())


def test_cache_off_outlines_every_row_and_keeps_both_totals(model):
    stepper = KVCacheStepper(model, TOKENIZER)
    stepper.step_slider.value = 5
    with_cache = stepper.with_label.value
    stepper.cache_switch.value = False
    assert outlined(stepper, panel=1) == {
        0: RECOMPUTED_COLOR,
        1: RECOMPUTED_COLOR,
        2: RECOMPUTED_COLOR,
        3: RECOMPUTED_COLOR,
        4: NEWEST_COLOR,
    }
    assert stepper.computed_label.value == "cache off: this step recomputes K and V for all 5 rows"
    assert stepper.with_label.value == with_cache
    expected = generation_flops(CONFIG, prompt_length=1, max_new_tokens=5, use_cache=False).total
    assert stepper.without_label.value == f"cumulative work, cache off: {expected:,} FLOPs"
    assert stepper.ratio_label.value == f"<b>{stepper.state.readout()['ratio']}</b>"
    assert stepper.step_ratio_label.value == "<b>per-step ratio (this step, off / on) 5.00×</b>"
    assert stepper.step_work_label.value == stepper.state.readout()["step_work"]


def test_slider_to_the_end_back_and_reset(model):
    stepper = KVCacheStepper(model, TOKENIZER, text="Lily")
    stepper.step_slider.value = 5
    assert stepper.next_button.disabled and [filled_rows(i) for i in stepper.images] == [5, 5]
    stepper.back_button.click()
    assert stepper.state.step == 4 and filled_rows(stepper.images[0]) == 4
    stepper.cache_switch.value = False
    stepper.reset_button.click()
    assert (stepper.state.step, stepper.state.use_cache) == (0, True)
    assert (stepper.step_slider.value, stepper.cache_switch.value) == (0, True)
    assert filled_rows(stepper.images[0]) == 0 and outlined(stepper) == {}
    assert stepper.ratio_label.value == "<b>cumulative ratio: none yet</b>"
    assert stepper.step_ratio_label.value == "<b>per-step ratio: none yet</b>"


def test_view_shows_as_its_widget(model):
    stepper = KVCacheStepper(model, TOKENIZER)
    bundle = stepper._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert stepper.output.outputs == ()  # no callback has failed
