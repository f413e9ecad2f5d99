"""The nucleus explorer: its pure state, and its view driven headless."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backend_bases import MouseEvent

from lessonlib import tinytales
from lessonlib.analysis.distributions import CONFIDENT, LONG_TAILED, QUIZ_NUCLEUS
from lessonlib.generation import prompt_logits
from lessonlib.sampling import filter_top_p
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.nucleus import (
    KEPT_COLOR,
    MASKED_COLOR,
    MAX_BARS,
    NucleusExplorer,
)
from lessonlib.widgets.nucleus_state import (
    GPT_SOURCE,
    NucleusExplorerState,
    built_in_distributions,
    from_model,
    initial_state,
    make_distribution,
)
from tests.stub_models import StubModel

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)


def state_for(values, p: float) -> NucleusExplorerState:
    labels = [str(i) for i in range(len(values))]
    distribution = make_distribution("test", values, labels)
    return initial_state({"test": distribution}, source="test", p=p)


# State.


def test_quiz_distribution_at_p_09_keeps_four_tokens_with_mass_093():
    state = initial_state(source="quiz", p=0.9)
    # 0.50 + 0.20 + 0.15 = 0.85 < 0.9, so the fourth token (0.08) is kept and crosses p.
    assert state.nucleus_size == 4
    assert state.kept_mass == pytest.approx(0.93)
    assert state.total == 6
    assert state.readout() == {
        "p": "p = 0.90",
        "size": "nucleus size 4",
        "kept": "tokens kept 4 / 6",
        "mass": "kept mass 0.930",
    }


def test_nucleus_grows_with_p():
    for name in ("confident", "long-tailed", "quiz"):
        state = initial_state(source=name)
        sizes = [state.set_p(p / 100).nucleus_size for p in range(1, 101)]
        assert sizes == sorted(sizes), name
        assert sizes[0] == 1 and sizes[-1] == state.total, name
    long_tailed = initial_state(source="long-tailed")
    assert long_tailed.set_p(0.5).nucleus_size < long_tailed.set_p(0.9).nucleus_size


def test_tiny_p_keeps_only_the_top_token():
    for name in ("confident", "long-tailed", "quiz"):
        state = initial_state(source=name, p=1e-9)
        assert state.nucleus_size == 1
        assert state.sorted_kept.tolist() == [True] + [False] * (state.total - 1)


def test_p_one_keeps_every_token_with_nonzero_probability():
    state = state_for([0.5, 0.0, 0.3, 0.2, 0.0], p=1.0)
    assert state.kept.tolist() == [True, False, True, True, False]
    assert state.kept_mass == pytest.approx(1.0)


def test_confident_keeps_one_and_long_tailed_keeps_many_at_p_09():
    assert initial_state(source="confident", p=0.9).nucleus_size == 1
    assert initial_state(source="long-tailed", p=0.9).nucleus_size > 10


def test_token_that_crosses_p_is_kept_and_the_boundary_is_strict():
    # Dyadic values are exact in binary: the mass before the third token is exactly 0.75.
    values = [0.5, 0.25, 0.125, 0.125]
    assert state_for(values, p=0.75).nucleus_size == 2  # mass before < p, not <= p
    assert state_for(values, p=0.7500001).nucleus_size == 3
    assert state_for(values, p=0.6).nucleus_size == 2  # 0.5 < 0.6: the crossing token stays


def test_renormalised_sums_to_one_over_the_kept_tokens_only():
    for name in ("confident", "long-tailed", "quiz"):
        for p in (0.05, 0.5, 0.9, 1.0):
            state = initial_state(source=name, p=p)
            renormalised = state.renormalised
            assert float(renormalised.sum()) == pytest.approx(1.0)
            assert bool((renormalised[~state.sorted_kept] == 0).all())
            kept = state.sorted_kept
            ratio = renormalised[kept] / state.sorted_probs[kept]
            assert torch.allclose(ratio, torch.full_like(ratio, 1 / state.kept_mass))


def test_sorted_view_is_descending_and_labels_follow_their_tokens():
    state = state_for([0.1, 0.6, 0.3], p=0.8)
    assert state.sorted_probs.tolist() == pytest.approx([0.6, 0.3, 0.1])
    assert state.sorted_labels == ("1", "2", "0")
    assert state.cumulative.tolist() == pytest.approx([0.6, 0.9, 1.0])
    assert state.kept.tolist() == [False, True, True]  # vocabulary order


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30).filter(lambda v: sum(v) > 1e-6),
    p=st.floats(1e-6, 1.0),
)
def test_kept_set_is_the_smallest_prefix_with_mass_at_least_p(values, p):
    state = state_for(values, p=p)
    kept = state.sorted_kept
    size = state.nucleus_size
    assert kept[:size].all() and not kept[size:].any()  # a prefix of the sorted tokens
    cumulative = state.sorted_probs.cumsum(0)
    tolerance = 1e-12
    assert float(cumulative[size - 1]) >= p - tolerance or bool(state.sorted_probs[size] == 0)
    if size > 1:
        assert float(cumulative[size - 2]) < p + tolerance  # one token fewer falls short of p


def test_kept_set_agrees_with_filter_top_p_on_random_logits():
    generator = torch.Generator().manual_seed(4)
    for _ in range(50):
        logits = 2 * torch.randn(40, generator=generator, dtype=torch.float64)
        p = float(torch.rand((), generator=generator, dtype=torch.float64)) * 0.999 + 0.001
        state = state_for(torch.softmax(logits, dim=-1), p=p)
        expected = torch.isfinite(filter_top_p(logits, p))
        assert state.kept.tolist() == expected.tolist()


def test_transitions_return_new_states_and_leave_the_old_one_alone():
    state = initial_state(source="confident", p=0.9)
    moved = state.set_p(0.5).set_distribution("long-tailed")
    assert (state.p, state.source) == (0.9, "confident")
    assert (moved.p, moved.source) == (0.5, "long-tailed")
    back = moved.reset()
    assert (back.p, back.source) == (0.9, "confident")


def test_set_p_rejects_values_outside_zero_one_naming_p():
    state = initial_state()
    for bad in (0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            state.set_p(bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="p must be a number"):
            state.set_p(bad)
    with pytest.raises(ValueError, match="p must be in"):
        initial_state(p=0)


def test_set_distribution_rejects_an_unknown_name_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"name must be one of .*'long-tailed'.*got 'peaked'"):
        initial_state().set_distribution("peaked")
    with pytest.raises(ValueError, match="source must be one of"):
        initial_state(source="peaked")


def test_make_distribution_checks_labels_and_values():
    with pytest.raises(ValueError, match="labels must have one entry per value"):
        make_distribution("x", [0.5, 0.5], ["a"])
    with pytest.raises(ValueError, match="non-negative"):
        make_distribution("x", [0.5, -0.5], ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        make_distribution("x", [[0.5, 0.5]], ["a", "b"])


def test_built_in_distributions_are_the_library_examples():
    distributions = built_in_distributions()
    assert list(distributions) == ["confident", "long-tailed", "quiz"]
    for name, values in (("confident", CONFIDENT), ("long-tailed", LONG_TAILED)):
        expected = torch.tensor(values, dtype=torch.float64)
        assert torch.allclose(distributions[name].probs, expected / expected.sum())
    assert distributions["quiz"].probs.tolist() == pytest.approx(list(QUIZ_NUCLEUS))


def test_from_model_is_the_full_softmax_of_the_prompt_logits():
    model = StubModel()
    distribution = from_model(model, TOKENIZER, "Once upon")
    expected = torch.softmax(prompt_logits(model, "Once upon", tokenizer=TOKENIZER).double(), -1)
    assert torch.allclose(distribution.probs, expected)
    assert len(distribution.labels) == TOKENIZER.vocab_size == 50
    assert "␣" in distribution.labels and "↵" in distribution.labels  # space and end of story
    assert distribution.name == GPT_SOURCE


def test_with_distribution_adds_a_source_that_reset_keeps():
    gpt = from_model(StubModel(), TOKENIZER, "Once")
    state = initial_state().with_distribution(gpt).set_distribution(GPT_SOURCE)
    assert state.total == 50
    fold = state.fold(30)
    assert fold.count == 20
    assert fold.mass == pytest.approx(float(state.sorted_probs[30:].sum()))
    assert fold.kept == int(state.sorted_kept[30:].sum())
    with pytest.raises(ValueError, match="shown must be an int >= 1, got 0"):
        state.fold(0)
    assert GPT_SOURCE in state.reset().distributions


# View, headless.


def readouts(explorer: NucleusExplorer) -> tuple[str, str, str, str]:
    return (
        explorer.p_label.value,
        explorer.size_label.value,
        explorer.kept_label.value,
        explorer.mass_label.value,
    )


def test_constructing_the_view_displays_nothing(capsys):
    NucleusExplorer()
    # Outside a kernel, IPython's display() prints the object's repr; nothing must appear.
    assert capsys.readouterr().out == ""


def test_view_starts_with_the_state_readouts():
    explorer = NucleusExplorer(source="quiz")
    assert readouts(explorer) == (
        "p = 0.90",
        "nucleus size 4",
        "tokens kept 4 / 6",
        "kept mass 0.930",
    )
    assert GPT_SOURCE not in explorer.source.options
    assert explorer.prompt_box.disabled


def test_p_slider_moves_the_nucleus_and_the_artists():
    explorer = NucleusExplorer(source="quiz")
    explorer.p_slider.value = 0.95
    assert explorer.size_label.value == "nucleus size 5"
    assert list(explorer.p_line.get_ydata()) == [0.95, 0.95]
    colours = [bar.get_facecolor() for bar in explorer.bars[:6]]
    assert colours[4] != colours[5]
    from matplotlib.colors import to_rgba

    assert colours[:5] == [to_rgba(KEPT_COLOR)] * 5 and colours[5] == to_rgba(MASKED_COLOR)
    assert len(explorer.renormalised_marks.get_xdata()) == 5
    assert not any(bar.get_visible() for bar in explorer.bars[6:])


def test_drag_p_line_sets_the_slider_and_clips_to_its_range():
    explorer = NucleusExplorer(source="long-tailed")
    explorer.drag_p_line(0.5)
    assert explorer.p_slider.value == 0.5
    assert explorer.p_label.value == "p = 0.50"
    assert explorer.size_label.value == "nucleus size 4"
    explorer.drag_p_line(-3.0)
    assert explorer.p_slider.value == 0.01 and explorer.size_label.value == "nucleus size 1"
    explorer.drag_p_line(7.0)
    assert explorer.p_slider.value == 1.0
    assert explorer.kept_label.value == "tokens kept 24 / 24"


def test_mouse_press_drag_and_release_move_the_p_line():
    explorer = NucleusExplorer(source="quiz")
    canvas, ax = explorer.canvas, explorer.ax
    explorer.figure.draw_without_rendering()  # fix the layout, so data -> pixels is final

    def mouse(name: str, y: float, button=None) -> None:
        x_pixels, y_pixels = ax.transData.transform((2.0, y))
        canvas.callbacks.process(name, MouseEvent(name, canvas, x_pixels, y_pixels, button))

    mouse("button_press_event", 0.6, button=1)
    assert explorer.p_slider.value == pytest.approx(0.6)
    mouse("motion_notify_event", 0.3)
    assert explorer.p_slider.value == pytest.approx(0.3)
    assert explorer.size_label.value == "nucleus size 1"
    mouse("button_release_event", 0.3, button=1)
    mouse("motion_notify_event", 0.8)  # no button held: the line stays
    assert explorer.p_slider.value == pytest.approx(0.3)


def test_switching_source_updates_the_readouts():
    explorer = NucleusExplorer()
    assert explorer.size_label.value == "nucleus size 1"  # confident at p = 0.9
    explorer.source.value = "long-tailed"
    assert explorer.kept_label.value == "tokens kept 17 / 24"
    assert explorer.state.source == "long-tailed"


def test_gpt_source_and_prompt_box():
    model = StubModel()
    explorer = NucleusExplorer(model, TOKENIZER, prompt="Once")
    assert GPT_SOURCE in explorer.source.options
    explorer.source.value = GPT_SOURCE
    assert explorer.kept_label.value.endswith(" / 50")
    assert f"top {MAX_BARS} of 50" in explorer.note_label.value
    assert sum(bar.get_visible() for bar in explorer.bars) == MAX_BARS

    explorer.source.value = "quiz"
    explorer.prompt_box.value = "Once upon a time"  # a new prompt switches to the GPT
    assert explorer.source.value == GPT_SOURCE
    expected = from_model(model, TOKENIZER, "Once upon a time")
    assert torch.equal(explorer.state.distribution.probs, expected.probs)

    explorer.prompt_box.value = "Once #"  # '#' is not in the alphabet
    assert explorer.note_label.value.startswith("prompt not used")
    assert torch.equal(explorer.state.distribution.probs, expected.probs)


def test_reset_button_restores_source_and_p():
    explorer = NucleusExplorer(source="quiz")
    explorer.source.value = "long-tailed"
    explorer.p_slider.value = 0.3
    explorer.reset_button.click()
    assert (explorer.source.value, explorer.p_slider.value) == ("quiz", 0.9)
    assert explorer.size_label.value == "nucleus size 4"


def test_importing_the_view_leaves_the_matplotlib_backend_alone():
    # In a fresh interpreter: ipympl switches the backend when first imported, unless undone.
    script = (
        "import matplotlib; matplotlib.use('agg'); "
        "import lessonlib.widgets.nucleus; "
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "agg"


@pytest.mark.parametrize("p", [0.005, 0.955])
def test_a_p_the_slider_cannot_show_is_rejected(p):
    # The slider would clamp or snap it, and the readout would disagree with the nucleus drawn.
    with pytest.raises(
        ValueError,
        match=rf"p must be on its slider's grid, a multiple of 0\.01 in \[0\.01, 1\.0\], got {p}",
    ):
        NucleusExplorer(p=p)


@pytest.mark.parametrize("p", [0.01, 0.37, 1.0])
def test_a_p_on_the_slider_grid_is_kept_exactly(p):
    explorer = NucleusExplorer(p=p)
    assert explorer.state.p == p and explorer.p_slider.value == p
    assert explorer.p_label.value == f"p = {p:.2f}"


def test_model_and_tokenizer_come_together():
    with pytest.raises(ValueError, match="model and tokenizer"):
        NucleusExplorer(StubModel(), None)
