"""The pipeline viewer: its pure state, and its view driven headless."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from matplotlib.colors import to_rgba

from lessonlib import tinytales
from lessonlib.generation import prompt_logits
from lessonlib.sampling import sampling_probs
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.pipeline import (
    DRAW_COLOR,
    LAST_DRAW_COLOR,
    MAX_BARS,
    PipelineViewer,
)
from lessonlib.widgets.pipeline_state import (
    COUNTEREXAMPLE_LOGITS,
    GPT_SOURCE,
    HAND_MADE_LOGITS,
    PipelineViewerState,
    built_in_sources,
    initial_state,
    make_source,
    source_from_model,
)
from tests.stub_models import StubModel

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)


def hand_made(**kwargs: object) -> PipelineViewerState:
    return initial_state(source="hand-made", **kwargs)


# ----- state: the stages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (0.7, 4, 0.9), (2.0, 2, None), (0.3, None, 0.5)],
)
def test_final_stage_is_the_sampler(temperature: float, top_k, top_p) -> None:
    state = hand_made(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = torch.tensor(HAND_MADE_LOGITS, dtype=torch.float64)
    expected = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.allclose(state.stages.final, expected, atol=1e-12)


def test_kept_counts_shrink_stage_by_stage() -> None:
    state = hand_made(temperature=0.7, top_k=5, top_p=0.8)
    possible, after_k, after_p = state.kept_counts()
    assert possible == 8 and after_k == 5 and 1 <= after_p <= 5
    assert after_p == int((state.stages.final > 0).sum())


def test_counterexample_keeps_two_then_one_as_the_temperature_drops() -> None:
    state = initial_state(source="(3, 2, 1)", top_p=0.8)
    assert state.kept_counts() == (3, 3, 2)
    assert state.set_temperature(0.5).kept_counts() == (3, 3, 1)


def test_order_is_the_ranking_of_the_logits_at_every_stage() -> None:
    state = hand_made(temperature=0.4, top_k=6, top_p=0.95)
    assert state.order.tolist() == list(range(8))  # the hand-made logits are descending
    for probs in (state.stages.temperature, state.stages.top_k, state.stages.top_p):
        shown = probs[state.order]
        assert bool((shown[1:] <= shown[:-1]).all())


def test_stage_titles_say_what_each_stage_kept() -> None:
    titles = initial_state(source="(3, 2, 1)", temperature=0.5, top_p=0.8).stage_titles()
    assert titles[0].startswith("1 \u00b7 temperature \u03c4 = 0.50")
    assert titles[0].endswith("3 of 3 possible")
    assert titles[1] == "2 \u00b7 top-k off: 3 of 3 kept"
    assert titles[2] == "3 \u00b7 top-p p = 0.80: 1 of 3 kept (final distribution)"
    assert titles[3] == "4 \u00b7 draw: no draws yet (press draw)"


# ----- state: settings -----------------------------------------------------------------------


def test_filters_at_their_ends_are_off() -> None:
    state = hand_made()
    assert state.set_top_k(8).top_k is None and state.set_top_k(100).top_k is None
    assert state.set_top_p(1.0).top_p is None
    assert state.set_top_k(3).top_k == 3 and state.set_top_p(0.5).top_p == 0.5


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_bad_temperature_is_rejected_naming_it(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        hand_made().set_temperature(bad)
    with pytest.raises(TypeError, match="temperature"):
        hand_made().set_temperature("0.5")


def test_bad_filters_are_rejected_naming_them() -> None:
    with pytest.raises(ValueError, match="top_k must be an int >= 1 or None, got 0"):
        hand_made().set_top_k(0)
    with pytest.raises(TypeError, match="top_k must be an int >= 1 or None"):
        hand_made().set_top_k(2.5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\] or None, got 0"):
        hand_made().set_top_p(0)
    with pytest.raises(ValueError, match="top_p"):
        hand_made().set_top_p(1.2)
    with pytest.raises(TypeError, match=r"top_p must be a number in \(0, 1\] or None"):
        hand_made().set_top_p("0.5")
    with pytest.raises(TypeError, match="seed must be an int >= 0"):
        initial_state(seed=1.0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        initial_state(seed=-1)


def test_transitions_leave_the_old_state_alone() -> None:
    state = hand_made(seed=1)
    changed = state.set_temperature(0.5).set_top_k(3).set_top_p(0.7).draw(50)
    assert (state.temperature, state.top_k, state.top_p, state.num_draws) == (1.0, None, None, 0)
    assert (changed.temperature, changed.top_k, changed.top_p, changed.num_draws) == (
        0.5,
        3,
        0.7,
        50,
    )


def test_switching_source_keeps_settings_and_turns_a_too_large_k_off() -> None:
    state = hand_made(temperature=0.6, top_k=5, top_p=0.9)
    small = state.set_source("(3, 2, 1)")
    assert (small.temperature, small.top_k, small.top_p) == (0.6, None, 0.9)
    assert small.vocab_size == 3 and small.labels == ("a", "b", "c")
    with pytest.raises(ValueError, match="name must be one of"):
        state.set_source("nope")


# ----- state: draws --------------------------------------------------------------------------


def test_draws_add_up_remember_the_last_and_respect_the_filters() -> None:
    state = hand_made(temperature=0.8, top_k=3, seed=2)
    once = state.draw(1)
    assert once.num_draws == 1 and once.counts[once.last_draw] == 1
    many = once.draw(5000)
    assert many.num_draws == 5001 and many.counts[3:].tolist() == [0] * 5
    assert torch.allclose(many.frequencies, many.stages.final, atol=0.03)
    assert float(many.frequencies.sum()) == pytest.approx(1.0)


def test_draws_are_reproducible_with_the_seed() -> None:
    first = hand_made(seed=7).draw(300).draw(300)
    again = hand_made(seed=7).draw(300).draw(300)
    other = hand_made(seed=8).draw(300).draw(300)
    assert torch.equal(first.counts, again.counts) and first.last_draw == again.last_draw
    assert not torch.equal(first.counts, other.counts)


def test_changing_the_distribution_clears_the_draws() -> None:
    drawn = hand_made().draw(100)
    assert drawn.set_temperature(0.5).num_draws == 0
    assert drawn.set_top_k(2).num_draws == 0
    assert drawn.set_top_p(0.5).num_draws == 0
    assert drawn.set_source("(3, 2, 1)").num_draws == 0
    assert drawn.set_temperature(1.0).num_draws == 100  # the same distribution
    assert drawn.set_temperature(0.5).last_draw is None


def test_bad_number_of_draws_is_rejected() -> None:
    with pytest.raises(ValueError, match="n must be"):
        hand_made().draw(-1)
    assert hand_made().draw(0).num_draws == 0


def test_reset_restores_the_start_and_reseeds() -> None:
    fresh = hand_made(temperature=0.7, top_k=4, seed=5)
    used = fresh.set_temperature(2.0).set_top_k(None).set_top_p(0.3).set_source("(3, 2, 1)")
    restored = used.draw(40).reset()
    assert restored.same_as(fresh)
    assert torch.equal(restored.draw(200).counts, fresh.draw(200).counts)


# ----- state: sources ------------------------------------------------------------------------


def test_built_in_sources() -> None:
    sources = built_in_sources()
    assert list(sources) == ["hand-made", "(3, 2, 1)"]
    assert sources["(3, 2, 1)"].logits.tolist() == list(COUNTEREXAMPLE_LOGITS)
    assert sources["hand-made"].labels == tuple("abcdefgh")


def test_make_source_validates() -> None:
    with pytest.raises(ValueError, match="labels"):
        make_source("x", [1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        make_source("x", [-math.inf], ["a"])
    with pytest.raises(ValueError, match="NaN"):
        make_source("x", [math.nan], ["a"])


def test_source_from_model_is_the_prompt_logits() -> None:
    model = StubModel()
    source = source_from_model(model, TOKENIZER, "Once")
    expected = prompt_logits(model, "Once", tokenizer=TOKENIZER).double()
    assert torch.equal(source.logits, expected)
    assert source.name == GPT_SOURCE and len(source.labels) == len(tinytales.ALPHABET)
    assert "\u2423" in source.labels  # the space is drawn as a visible box
    with pytest.raises(TypeError, match="prompt"):
        source_from_model(model, TOKENIZER, 3)


def test_with_source_adds_and_shows_it() -> None:
    state = hand_made(top_k=5)
    gpt = source_from_model(StubModel(), TOKENIZER, "Once")
    shown = state.with_source(gpt)
    assert shown.source == GPT_SOURCE and shown.vocab_size == len(tinytales.ALPHABET)
    assert shown.top_k == 5
    assert GPT_SOURCE not in state.sources
    assert shown.reset().source == "hand-made" and GPT_SOURCE in shown.reset().sources


# ----- view ----------------------------------------------------------------------------------


def heights(viewer: PipelineViewer, panel: int) -> list[float]:
    return [bar.get_height() for bar in viewer.bars[panel]]


def test_constructing_the_view_displays_nothing(capsys) -> None:
    PipelineViewer()
    assert capsys.readouterr().out == ""


def test_view_shows_the_four_stages_of_the_state() -> None:
    viewer = PipelineViewer(temperature=0.7, top_k=5, top_p=0.8)
    stages = viewer.state.stages
    order = viewer.state.order
    assert heights(viewer, 0) == pytest.approx(stages.temperature[order].tolist())
    assert heights(viewer, 1) == pytest.approx(stages.top_k[order].tolist())
    assert heights(viewer, 2) == pytest.approx(stages.top_p[order].tolist())
    assert heights(viewer, 3) == [0.0] * 8
    titles = [ax.get_title(loc="left") for ax in viewer.axes]
    assert titles == list(viewer.state.stage_titles())
    # Top-5 at tau = 0.7 holds about (0.453, 0.256, 0.144, 0.094, 0.053): three reach 0.8.
    assert viewer.settings_label.value.endswith("tokens possible: 8 \u2192 5 \u2192 3")


def test_sliders_move_the_state_and_the_bars() -> None:
    viewer = PipelineViewer(source="(3, 2, 1)")
    viewer.top_p_slider.value = 0.8
    assert viewer.state.top_p == 0.8 and viewer.state.kept_counts()[2] == 2
    viewer.temperature_slider.value = 0.5
    assert viewer.state.kept_counts()[2] == 1
    assert heights(viewer, 2) == pytest.approx([1.0, 0.0, 0.0])
    viewer.top_k_slider.value = 2
    assert viewer.state.top_k == 2
    viewer.top_k_slider.value = 3  # the right end is off
    assert viewer.state.top_k is None
    viewer.top_p_slider.value = 1.0
    assert viewer.state.top_p is None


def test_draw_button_fills_the_fourth_panel_and_highlights_the_last_draw() -> None:
    viewer = PipelineViewer(temperature=0.8, top_k=3)
    viewer.draws_box.value = 400
    viewer.draw_button.click()
    assert viewer.state.num_draws == 400
    shares = heights(viewer, 3)
    assert sum(shares) == pytest.approx(1.0) and shares[3:] == [0.0] * 5
    last_position = viewer.state.order.tolist().index(viewer.state.last_draw)
    colors = [bar.get_facecolor() for bar in viewer.bars[3]]
    assert colors[last_position] == to_rgba(LAST_DRAW_COLOR)
    assert all(c == to_rgba(DRAW_COLOR) for i, c in enumerate(colors) if i != last_position)
    assert "400 draws" in viewer.axes[3].get_title(loc="left")
    viewer.temperature_slider.value = 1.5  # a new distribution clears the draws
    assert viewer.state.num_draws == 0 and heights(viewer, 3) == [0.0] * 8


def test_source_switch_rebuilds_bars_and_syncs_the_top_k_slider() -> None:
    viewer = PipelineViewer(top_k=5)
    viewer.source.value = "(3, 2, 1)"
    assert len(viewer.bars[0]) == 3 and viewer.top_k_slider.max == 3
    assert viewer.top_k_slider.value == 3 and viewer.state.top_k is None


def test_gpt_source_and_prompt_box() -> None:
    model = StubModel()
    viewer = PipelineViewer(model, TOKENIZER, source=GPT_SOURCE, prompt="Once", top_p=0.9)
    assert len(viewer.bars[0]) == MAX_BARS
    assert f"{MAX_BARS} highest logits of {len(tinytales.ALPHABET)}" in viewer.note_label.value
    viewer.source.value = "hand-made"
    viewer.prompt_box.value = "Once upon a time"  # a new prompt shows the GPT again
    assert viewer.source.value == GPT_SOURCE
    expected = source_from_model(model, TOKENIZER, "Once upon a time")
    assert torch.equal(viewer.state.logits, expected.logits)
    viewer.prompt_box.value = "Once #"  # '#' is not in the alphabet
    assert viewer.note_label.value.startswith("prompt not used")
    assert torch.equal(viewer.state.logits, expected.logits)


def test_reset_button_restores_controls_and_state() -> None:
    viewer = PipelineViewer(temperature=0.7, top_p=0.9)
    viewer.source.value = "(3, 2, 1)"
    viewer.temperature_slider.value = 2.0
    viewer.draw_button.click()
    viewer.reset_button.click()
    assert viewer.source.value == "hand-made" and viewer.state.num_draws == 0
    assert viewer.temperature_slider.value == pytest.approx(0.7, rel=1e-3)
    assert viewer.top_p_slider.value == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"temperature": 10.0},
            r"temperature must be on its slider's grid.*\[0\.05, 5\.0\], got 10\.0",
        ),
        ({"temperature": 0.73}, r"temperature .*multiple of 0\.05.*got 0\.73"),
        ({"top_p": 0.005}, r"top_p must be on its slider's grid.*\[0\.01, 1\.0\], got 0\.005"),
        ({"top_p": 0.955}, r"top_p .*multiple of 0\.01.*got 0\.955"),
    ],
)
def test_settings_the_sliders_cannot_show_are_rejected(settings: dict, message: str) -> None:
    # The browser would snap such a slider to its grid on display, changing the state silently.
    with pytest.raises(ValueError, match=message):
        PipelineViewer(**settings)


def test_settings_on_the_slider_grid_are_kept_exactly() -> None:
    viewer = PipelineViewer(temperature=5.0, top_p=0.95)
    assert viewer.state.temperature == 5.0 and viewer.state.top_p == 0.95
    assert viewer.temperature_slider.value == 5.0 and viewer.top_p_slider.value == 0.95


def test_model_and_tokenizer_come_together() -> None:
    with pytest.raises(ValueError, match="model and tokenizer"):
        PipelineViewer(StubModel(), None)


def test_importing_the_view_leaves_the_matplotlib_backend_alone() -> None:
    script = (
        "import matplotlib; matplotlib.use('agg'); "
        "import lessonlib.widgets.pipeline; "
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "agg"
