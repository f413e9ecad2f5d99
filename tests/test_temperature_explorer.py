"""Tests for the temperature explorer: pure state transitions, constructors, and the view headless."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from lessonlib import tinytales
from lessonlib.bigram import BIGRAM_SYMBOLS, load_bigram
from lessonlib.checkpoint import load_model
from lessonlib.generation import prompt_logits
from lessonlib.sampling import sampling_probs
from lessonlib.widgets.temperature import DEFAULT_PROMPT, TemperatureExplorer
from lessonlib.widgets.temperature_state import TemperatureExplorerState

LABELS = ("a", "b", "c", "d", "e")
LOGITS = (2.0, 1.0, 0.0, -1.0, 0.5)  # argmax "a"; "e" sits between "b" and "c"
NAME_PROMPT = "Once upon a time, there was a little kid named "


def small_state(**kwargs: object) -> TemperatureExplorerState:
    return TemperatureExplorerState.from_logits(LOGITS, LABELS, **kwargs)


def random_logits(seed: int, size: int = 12) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def gpt():
    return load_model()


# ----- temperature ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_positive_temperature_never_moves_the_argmax(seed: int) -> None:
    logits = random_logits(seed) * 3
    state = TemperatureExplorerState.from_logits(logits, [str(i) for i in range(12)])
    for temperature in (0.05, 0.1, 0.5, 0.7, 1.0, 1.5, 2.0, 5.0, 100.0):
        assert state.set_temperature(temperature).argmax == int(logits.argmax())


def test_worked_example_of_the_lesson() -> None:
    # The pinned values for logits (2, 1, 0), to three decimals.
    state = TemperatureExplorerState.from_logits([2.0, 1.0, 0.0], ["x", "y", "z"])
    expected = {1.0: (0.665, 0.245, 0.090), 0.5: (0.867, 0.117, 0.016), 2.0: (0.506, 0.307, 0.186)}
    for temperature, probs in expected.items():
        shown = state.set_temperature(temperature).probs.tolist()
        assert shown == pytest.approx(probs, abs=5e-4)


def test_temperature_regimes() -> None:
    state = small_state()
    uniform_entropy = math.log(len(LABELS))
    assert state.set_temperature(0).probs.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert state.set_temperature(0).entropy == 0.0
    assert state.set_temperature(0.05).p_argmax > 0.999
    assert state.set_temperature(1000).entropy == pytest.approx(uniform_entropy, abs=1e-4)
    entropies = [state.set_temperature(t).entropy for t in (0.1, 0.5, 1, 2, 5)]
    assert entropies == sorted(entropies) and len(set(entropies)) == 5


def test_temperature_one_shows_the_softmax_of_the_logits() -> None:
    state = small_state()
    expected = torch.softmax(torch.tensor(LOGITS, dtype=torch.float64), -1)
    assert torch.allclose(state.probs, expected)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_temperature_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        small_state().set_temperature(bad)
    with pytest.raises(TypeError, match="temperature"):
        small_state().set_temperature("1")


# ----- top-k ---------------------------------------------------------------------------------


def test_top_k_one_is_one_hot_at_the_argmax() -> None:
    state = small_state().set_temperature(3.0).set_top_k(1)
    assert state.probs.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_top_k_keeps_the_k_largest_renormalised() -> None:
    state = small_state().set_top_k(2)
    kept = torch.softmax(torch.tensor([2.0, 1.0], dtype=torch.float64), -1)
    assert torch.allclose(state.probs[:2], kept)
    assert state.probs[2:].tolist() == [0.0, 0.0, 0.0]
    assert state.kept.tolist() == [True, True, False, False, False]


def test_top_k_of_the_vocabulary_size_is_off() -> None:
    state = small_state().set_top_k(3)
    assert state.set_top_k(len(LABELS)).top_k is None
    assert state.set_top_k(None).top_k is None
    with pytest.raises(ValueError, match="top_k must be an int >= 1 or None, got 0"):
        state.set_top_k(0)
    with pytest.raises(TypeError, match="top_k must be an int >= 1 or None"):
        state.set_top_k(2.5)


# ----- set_probability (the dragged bar) -----------------------------------------------------


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("token, q", [(0, 0.2), (2, 0.7), (4, 0.05), (3, 0.999)])
def test_set_probability_lands_at_q_and_scales_the_rest(
    temperature: float, token: int, q: float
) -> None:
    before = small_state().set_temperature(temperature)
    after = before.set_probability(token, q)
    assert float(after.probs[token]) == pytest.approx(q, abs=1e-12)
    assert float(after.probs.sum()) == pytest.approx(1.0, abs=1e-12)
    others = [j for j in range(len(LABELS)) if j != token]
    factor = (1 - q) / (1 - float(before.probs[token]))
    assert after.probs[others].tolist() == pytest.approx(
        (before.probs[others] * factor).tolist(), rel=1e-9
    )
    assert after.edited and not before.edited


def test_set_probability_accepts_a_label() -> None:
    state = small_state()
    assert state.set_probability("c", 0.4).same_as(state.set_probability(2, 0.4))
    with pytest.raises(ValueError, match="token"):
        state.set_probability("z", 0.4)
    with pytest.raises(ValueError, match="token must be an int in 0..4, got 5"):
        state.set_probability(5, 0.4)
    with pytest.raises(TypeError, match="token must be an int index or a label str"):
        state.set_probability(1.0, 0.4)


def test_bar_dragged_to_zero_and_back() -> None:
    state = small_state()
    zero = state.set_probability("a", 0.0)
    assert float(zero.probs[0]) == 0.0
    expected = state.probs[1:] / state.probs[1:].sum()
    assert torch.allclose(zero.probs[1:], expected)
    back = zero.set_probability("a", 0.5)
    assert float(back.probs[0]) == pytest.approx(0.5)


def test_bar_dragged_to_one_makes_a_one_hot() -> None:
    one = small_state().set_probability("c", 1.0)
    assert one.probs.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert one.argmax_label == "c"
    # The others hold 0, and scaling 0 gives 0: dragging "c" down changes nothing ...
    assert one.set_probability("c", 0.3).probs.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    # ... but another bar can be dragged up, taking its share from "c".
    two = one.set_probability("a", 0.25)
    assert two.probs.tolist() == pytest.approx([0.25, 0.0, 0.75, 0.0, 0.0])


def test_set_probability_under_top_k_rescales_only_kept_tokens() -> None:
    state = small_state().set_top_k(3)  # keeps a, b, e
    after = state.set_probability("b", 0.5)
    assert float(after.probs[1]) == pytest.approx(0.5)
    assert after.probs[[2, 3]].tolist() == [0.0, 0.0]
    ratio = float(after.probs[0] / after.probs[4])
    assert ratio == pytest.approx(float(state.probs[0] / state.probs[4]))


def test_a_bar_top_k_removed_enters_only_near_the_smallest_kept_bar() -> None:
    # What lesson 02 tells the learner: a removed bar stays at 0 until it is dragged about as
    # high as the smallest bar top-k keeps; then it enters and that bar drops out.
    state = small_state().set_top_k(3)  # keeps a, b, e; "e" is the smallest kept bar
    smallest = float(state.probs[4])
    low = state.set_probability("c", smallest / 2)
    assert float(low.probs[2]) == 0.0 and low.kept.tolist() == state.kept.tolist()
    high = state.set_probability("c", smallest)
    assert float(high.probs[2]) > 0 and float(high.probs[4]) == 0.0
    assert [high.labels[i] for i in high.kept.nonzero().flatten().tolist()] == ["a", "b", "c"]


def test_set_probability_at_temperature_zero_stays_one_hot() -> None:
    greedy = small_state().set_temperature(0)
    assert greedy.set_probability("b", 0.2).probs.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    # Solved at temperature 1: raising "e" above "a" there moves the greedy pick to "e".
    moved = greedy.set_probability("e", 0.9)
    assert moved.argmax_label == "e" and moved.p_argmax == 1.0
    assert float(moved.set_temperature(1.0).probs[4]) == pytest.approx(0.9)


def test_the_only_possible_token_keeps_probability_one() -> None:
    state = TemperatureExplorerState.from_logits([0.0, -math.inf], ["x", "y"])
    assert state.set_probability("x", 0.3).same_as(state)


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_bad_probability_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=r"q must be a finite number in \[0, 1\]"):
        small_state().set_probability(0, bad)
    with pytest.raises(TypeError, match=r"q must be a real number in \[0, 1\]"):
        small_state().set_probability(0, "0.5")


# ----- draws ---------------------------------------------------------------------------------


def test_draw_counts_add_up_and_leave_the_old_state_alone() -> None:
    state = small_state(seed=3)
    once = state.draw(100)
    twice = once.draw(250)
    assert (state.num_draws, once.num_draws, twice.num_draws) == (0, 100, 350)
    assert bool((twice.counts >= once.counts).all())
    assert float(twice.frequencies.sum()) == pytest.approx(1.0)
    assert state.frequencies.tolist() == [0.0] * 5


def test_draws_are_reproducible_with_the_seed() -> None:
    first = small_state(seed=7).draw(500).draw(500)
    again = small_state(seed=7).draw(500).draw(500)
    other = small_state(seed=8).draw(500).draw(500)
    assert torch.equal(first.counts, again.counts)
    assert not torch.equal(first.counts, other.counts)


def test_empirical_frequencies_approach_the_bars() -> None:
    state = small_state(seed=1).set_temperature(1.5).draw(40_000)
    assert torch.allclose(state.frequencies, state.probs, atol=0.01)


def test_draws_follow_top_k_and_greedy() -> None:
    assert small_state().set_top_k(2).draw(2000).counts[2:].tolist() == [0, 0, 0]
    assert small_state().set_temperature(0).draw(50).counts.tolist() == [50, 0, 0, 0, 0]


def test_changing_the_distribution_clears_the_counts() -> None:
    drawn = small_state().draw(100)
    assert drawn.set_temperature(0.5).num_draws == 0
    assert drawn.set_top_k(2).num_draws == 0
    assert drawn.set_probability(1, 0.5).num_draws == 0
    assert drawn.set_temperature(1.0).num_draws == 100  # unchanged distribution


def test_bad_number_of_draws_is_rejected() -> None:
    with pytest.raises(ValueError, match="n must be an int in 0..1000000, got -1"):
        small_state().draw(-1)
    with pytest.raises(TypeError, match="n must be an int in 0..1000000"):
        small_state().draw(2.0)
    assert small_state().draw(0).num_draws == 0


# ----- reset ---------------------------------------------------------------------------------


def test_reset_restores_the_initial_state() -> None:
    fresh = small_state(seed=5)
    used = fresh.set_temperature(0.2).set_top_k(2).set_probability("b", 0.6).draw(300)
    assert not used.same_as(fresh)
    restored = used.reset()
    assert restored.same_as(fresh)
    # The generator is re-seeded too: the same draws as from the fresh state.
    assert torch.equal(restored.draw(200).counts, fresh.draw(200).counts)


# ----- constructors --------------------------------------------------------------------------


def test_from_logits_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        TemperatureExplorerState.from_logits([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        TemperatureExplorerState.from_logits([-math.inf, -math.inf], ["a", "b"])
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        TemperatureExplorerState.from_logits([1.0], ["a"], seed=-1)
    with pytest.raises(TypeError, match="seed must be an int >= 0"):
        TemperatureExplorerState.from_logits([1.0], ["a"], seed=True)


def test_from_bigram_matches_the_bigram_model() -> None:
    model, _ = load_bigram()
    for context in ("·", "q", "e"):
        state = TemperatureExplorerState.from_bigram(context)
        assert state.labels == tuple(BIGRAM_SYMBOLS) and state.vocab_size == 27
        assert torch.allclose(state.probs, model.probs(context).double(), atol=1e-6)
        assert state.truth is None
    # Census names: after "q" comes "u" (Quinn, Quentin, ...), by far.
    assert TemperatureExplorerState.from_bigram("q").argmax_label == "u"
    with pytest.raises(ValueError, match="context_char"):
        TemperatureExplorerState.from_bigram("Q")


def test_from_model_is_the_gpt_after_the_prompt(gpt) -> None:
    model, tokenizer = gpt
    state = TemperatureExplorerState.from_model(model, tokenizer, NAME_PROMPT)
    assert state.labels == tuple(tokenizer.labels()) and state.vocab_size == 50
    expected = sampling_probs(prompt_logits(model, NAME_PROMPT, tokenizer=tokenizer).double())
    assert torch.allclose(state.probs, expected)


def test_truth_is_aligned_to_the_vocabulary(gpt) -> None:
    model, tokenizer = gpt
    state = TemperatureExplorerState.from_model(model, tokenizer, NAME_PROMPT)
    truth = tinytales.next_char_distribution(NAME_PROMPT)
    assert state.truth is not None
    assert float(state.truth.sum()) == pytest.approx(1.0)
    for char, p in truth.items():
        assert float(state.truth[tokenizer.chars.index(char)]) == pytest.approx(p)
    # Only capital letters can start a name.
    assert {state.labels[i] for i in torch.nonzero(state.truth).flatten().tolist()} <= set(
        "ABDEFGHIJKLMNORSTWZ"
    )
    # The story ends only after a full stop: the boundary token's truth is 0 here, 1 at the end.
    assert float(state.truth[tokenizer.boundary_id]) == 0.0
    story = tinytales.generate_stories(1, seed=0)[0]
    ended = TemperatureExplorerState.from_model(model, tokenizer, story)
    assert ended.truth is not None and float(ended.truth[tokenizer.boundary_id]) == 1.0


def test_the_gpt_is_close_to_the_truth_after_a_name_prompt(gpt) -> None:
    model, tokenizer = gpt
    state = TemperatureExplorerState.from_model(model, tokenizer, NAME_PROMPT)
    total_variation = 0.5 * float((state.probs - state.truth).abs().sum())
    assert total_variation < 0.25


def test_no_truth_for_an_impossible_prompt(gpt) -> None:
    model, tokenizer = gpt
    assert TemperatureExplorerState.from_model(model, tokenizer, "Hello").truth is None
    with pytest.raises(ValueError, match="'Q'"):
        TemperatureExplorerState.from_model(model, tokenizer, "Q")


# ----- the view, headless --------------------------------------------------------------------


@pytest.fixture
def explorer() -> TemperatureExplorer:
    return TemperatureExplorer(seed=0)


def test_view_starts_on_the_bigram(explorer: TemperatureExplorer) -> None:
    state = explorer.state
    assert len(explorer.bars) == 27 and explorer.top_k_slider.max == 27
    assert explorer.argmax_label.value == f"argmax: {state.argmax_label!r}"
    assert explorer.p_argmax_label.value == f"P(argmax) = {state.p_argmax:.3f}"
    assert explorer.draws_label.value == "draws: 0"
    heights = [bar.get_height() for bar in explorer.bars]
    assert heights == pytest.approx(state.probs.tolist())
    assert explorer.bars[state.argmax].get_facecolor() != explorer.bars[0].get_facecolor()
    assert not any(bar.get_visible() for bar in explorer.truth_bars)


def test_temperature_slider_changes_the_p_argmax_readout(explorer: TemperatureExplorer) -> None:
    before = explorer.p_argmax_label.value
    argmax = explorer.argmax_label.value
    explorer.temperature_slider.value = 0.2
    assert explorer.state.temperature == pytest.approx(0.2)
    assert explorer.p_argmax_label.value != before
    assert explorer.argmax_label.value == argmax  # tau > 0 keeps the argmax
    assert explorer.temperature_label.value == "τ = 0.20"
    assert max(bar.get_height() for bar in explorer.bars) == pytest.approx(explorer.state.p_argmax)


def test_greedy_toggle_and_slider(explorer: TemperatureExplorer) -> None:
    explorer.greedy_toggle.value = True
    assert explorer.state.temperature == 0
    assert explorer.p_argmax_label.value == "P(argmax) = 1.000"
    assert explorer.temperature_label.value == "τ = 0 (greedy)"
    explorer.temperature_slider.value = 2.0  # moving the slider leaves greedy mode
    assert not explorer.greedy_toggle.value and explorer.state.temperature == pytest.approx(2.0)


def test_draw_button_adds_counts_and_ticks(explorer: TemperatureExplorer) -> None:
    explorer.draw_button.click()
    assert explorer.state.num_draws == 100
    assert explorer.draws_label.value == "draws: 100"
    assert explorer.draw_ticks.get_visible()
    assert list(explorer.draw_ticks.get_ydata()) == explorer.state.frequencies.tolist()
    explorer.draws_box.value = 400
    explorer.draw_button.click()
    assert explorer.draws_label.value == "draws: 500"
    explorer.temperature_slider.value = 0.5
    assert explorer.draws_label.value == "draws: 0"
    assert not explorer.draw_ticks.get_visible()


def test_top_k_slider(explorer: TemperatureExplorer) -> None:
    explorer.top_k_slider.value = 1
    assert explorer.state.top_k == 1 and explorer.top_k_label.value == "top-k: 1"
    assert explorer.p_argmax_label.value == "P(argmax) = 1.000"
    explorer.top_k_slider.value = 27
    assert explorer.state.top_k is None and explorer.top_k_label.value == "top-k: off"


def test_drag_bar_and_its_keyboard_twin(explorer: TemperatureExplorer) -> None:
    z = explorer.state.index("z")
    explorer.drag_bar(z, 0.6)
    assert float(explorer.state.probs[z]) == pytest.approx(0.6)
    assert explorer.argmax_label.value == "argmax: 'z'"
    assert explorer.bars[z].get_height() == pytest.approx(0.6)
    explorer.drag_bar(z, 1.7)  # clipped to 1
    assert explorer.state.probs[z] == 1.0
    explorer.reset_button.click()
    explorer.bar_dropdown.value = explorer.state.index("a")
    assert explorer.probability_slider.value == pytest.approx(
        float(explorer.state.probs[1]), abs=1e-3
    )
    explorer.probability_slider.value = 0.3
    assert float(explorer.state.probs[1]) == pytest.approx(0.3)


def test_mouse_drag_on_the_canvas(explorer: TemperatureExplorer) -> None:
    explorer.canvas.draw()  # lay the figure out, so that data coordinates map to pixels
    height = explorer.figure.bbox.height
    e = explorer.state.index("e")

    def mouse(kind: str, x: float, q: float, buttons: int) -> None:
        # What ipympl's front end sends: pixels from the top-left corner.
        px, py = explorer.axes.transData.transform((x, q))
        explorer.canvas.manager.handle_json(
            {"type": kind, "x": px, "y": height - py, "button": 0, "buttons": buttons}
            | {"modifiers": [], "guiEvent": None}
        )

    mouse("button_press", e + 0.2, 0.15, 1)
    assert float(explorer.state.probs[e]) == pytest.approx(0.15, abs=0.01)
    mouse("motion_notify", e + 0.3, 0.18, 1)
    assert float(explorer.state.probs[e]) == pytest.approx(0.18, abs=0.01)
    mouse("button_release", e + 0.3, 0.18, 0)
    mouse("motion_notify", e + 0.3, 0.05, 0)  # no button held: no change
    assert float(explorer.state.probs[e]) == pytest.approx(0.18, abs=0.01)
    assert explorer.state.argmax_label == "e"


def test_reset_button(explorer: TemperatureExplorer) -> None:
    initial = explorer.state
    explorer.temperature_slider.value = 3.0
    explorer.top_k_slider.value = 5
    explorer.drag_bar(3, 0.4)
    explorer.draw_button.click()
    explorer.reset_button.click()
    assert explorer.state.same_as(initial)
    assert explorer.temperature_slider.value == 1.0 and explorer.top_k_slider.value == 27
    assert explorer.p_argmax_label.value == f"P(argmax) = {initial.p_argmax:.3f}"


def test_context_dropdown_keeps_the_settings(explorer: TemperatureExplorer) -> None:
    explorer.temperature_slider.value = 0.5
    explorer.context_dropdown.value = "q"
    assert explorer.state.title == "census names bigram, after 'q'"
    assert explorer.state.temperature == pytest.approx(0.5)
    assert explorer.argmax_label.value == "argmax: 'u'"


def test_source_switch_to_the_gpt_with_truth(gpt) -> None:
    model, tokenizer = gpt
    explorer = TemperatureExplorer(model, tokenizer)
    explorer.temperature_slider.value = 0.7
    explorer.source.value = "gpt"
    assert explorer.prompt_box.value == DEFAULT_PROMPT
    assert len(explorer.bars) == 50 and explorer.top_k_slider.max == 50
    assert explorer.state.temperature == pytest.approx(0.7)
    assert all(bar.get_visible() for bar in explorer.truth_bars)
    truth_heights = [bar.get_height() for bar in explorer.truth_bars]
    assert truth_heights == pytest.approx(explorer.state.truth.tolist())
    explorer.prompt_box.value = "Hello"
    assert not any(bar.get_visible() for bar in explorer.truth_bars)
    assert "No TinyTales truth" in explorer.status.value
    explorer.prompt_box.value = "Q is not in the alphabet"
    assert "Prompt not used" in explorer.status.value
    explorer.source.value = "bigram"
    assert len(explorer.bars) == 27 and explorer.top_k_slider.max == 27
    assert explorer.output.outputs == ()


def test_constructor_checks_its_arguments(gpt) -> None:
    with pytest.raises(ValueError, match="together"):
        TemperatureExplorer(gpt[0])
    with pytest.raises(ValueError, match="source"):
        TemperatureExplorer(source="llama")


def test_view_shows_its_widget(explorer: TemperatureExplorer) -> None:
    bundle = explorer._repr_mimebundle_()
    assert (
        bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    )


def test_importing_the_view_keeps_the_matplotlib_backend() -> None:
    code = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot\n"
        "import lessonlib.widgets.temperature\n"
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "svg"
