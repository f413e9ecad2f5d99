"""The chain viewer: its pure state, and its view driven headless."""

from __future__ import annotations

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.chain_order import find_order_counterexample
from lessonlib.generation import prompt_logits
from lessonlib.sampling import LIBRARY_ORDERS, STAGES, sampling_probs
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.chain import FIND_LABEL, MAX_BARS, PLACEHOLDER, ChainViewer
from lessonlib.widgets.chain_state import (
    COUNTEREXAMPLE_SOURCE,
    GPT_SOURCE,
    LONG_TAIL_LOGITS,
    NOT_IN_LIBRARY,
    ChainViewerState,
    chain_sources,
    initial_state,
    source_from_model,
)
from lessonlib.widgets.pipeline_state import HAND_MADE_LOGITS
from tests.stub_models import StubModel

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
HOT_MIN_P = {"temperature": 2.0, "min_p": 0.1}


def hand_made(**settings: object) -> ChainViewerState:
    return initial_state(source="hand-made", settings=settings)


# ----- state: the order ------------------------------------------------------------------------


def test_starts_in_hugging_faces_order_with_every_stage_off() -> None:
    state = initial_state()
    assert state.order == LIBRARY_ORDERS["Hugging Face"] and state.preset == "Hugging Face"
    assert state.stages_on == () and state.absent == () and state.finder is None
    assert state.settings["temperature"] == 1.0
    assert all(state.settings[stage] is None for stage in STAGES[1:])
    assert int((state.final_probs > 0).sum()) == len(HAND_MADE_LOGITS)


@pytest.mark.parametrize("name", list(LIBRARY_ORDERS))
def test_presets_are_the_libraries_orders(name: str) -> None:
    state = hand_made(**HOT_MIN_P).apply_preset(name)
    assert state.order == LIBRARY_ORDERS[name] and state.preset == name
    assert state.absent == tuple(stage for stage in STAGES if stage not in LIBRARY_ORDERS[name])
    for stage in state.absent:
        assert state.stage_readout(stage) == NOT_IN_LIBRARY
    assert f"({name})" in state.order_text()
    # The chain is the sampler's, in the library's order.
    expected = sampling_probs(state.logits, order=LIBRARY_ORDERS[name], **HOT_MIN_P)
    assert torch.allclose(state.final_probs, expected, atol=1e-12)


def test_a_stage_a_library_lacks_is_off_and_comes_back_with_its_setting() -> None:
    state = hand_made(temperature=0.7, eta_cutoff=0.05)
    assert "eta_cutoff" in state.stages_on
    llama = state.apply_preset("llama.cpp")
    assert llama.absent == ("eta_cutoff",) and llama.settings["eta_cutoff"] == 0.05
    assert llama.effective_settings["eta_cutoff"] is None
    assert llama.stages_on == ("temperature",)
    expected = sampling_probs(llama.logits, order=LIBRARY_ORDERS["llama.cpp"], temperature=0.7)
    assert torch.allclose(llama.final_probs, expected, atol=1e-12)
    with pytest.raises(ValueError, match=f"eta_cutoff is {NOT_IN_LIBRARY}"):
        llama.set_setting("eta_cutoff", 0.1)
    with pytest.raises(ValueError, match=f"eta_cutoff is {NOT_IN_LIBRARY}"):
        llama.move_up("eta_cutoff")
    back = llama.apply_preset("Hugging Face")
    assert back.effective_settings["eta_cutoff"] == 0.05 and back.same_as(state)


def test_moving_min_p_before_temperature_cuts_the_hand_made_tail() -> None:
    # tau = 2 first: min_p keeps z >= max z + 2 log 0.1 = -2.6, all eight tokens. Temperature
    # after min_p: it keeps z >= 2.0 + log 0.1 = -0.30, so g (-0.6) and h (-1.5) go.
    state = hand_made(**HOT_MIN_P)
    assert state.kept_labels(state.final_probs > 0) == tuple("abcdefgh")
    moved = state.move_down("temperature").move_down("temperature").move_down("temperature")
    assert moved.order[:4] == ("top_k", "top_p", "min_p", "temperature")
    assert moved.preset is None and moved.order_name == "your order"
    assert moved.kept_labels(moved.final_probs > 0) == tuple("abcdef")
    assert moved.stage_readout("min_p") == "kept 6 of 8: a b c d e f"
    assert moved.final_text().startswith("final: kept 6 of 8: a b c d e f; llama.cpp's order")
    # Up undoes down.
    assert moved.move_up("temperature").order == ("top_k", "top_p", "temperature", *STAGES[3:])


def test_moves_at_the_ends_change_nothing_and_bad_stages_are_named() -> None:
    state = hand_made()
    assert state.move_up("temperature") is state
    assert state.move_down("eta_cutoff") is state
    with pytest.raises(ValueError, match="stage must be one of"):
        state.move_up("min-p")


def test_transitions_leave_the_old_state_alone() -> None:
    state = hand_made()
    changed = state.move_down("temperature").set_setting("min_p", 0.2).apply_preset("vLLM")
    assert state.order == STAGES and state.settings["min_p"] is None
    assert changed.order == LIBRARY_ORDERS["vLLM"] and changed.settings["min_p"] == 0.2


# ----- state: settings and sources -------------------------------------------------------------


def test_settings_at_their_ends_are_off() -> None:
    state = hand_made()
    assert state.set_setting("top_k", 8).settings["top_k"] is None
    assert state.set_setting("top_p", 1.0).settings["top_p"] is None
    assert state.set_setting("typical_p", 1.0).settings["typical_p"] is None
    assert state.set_setting("top_k", 3).settings["top_k"] == 3
    assert state.set_setting("min_p", 0.1).stage_readout("min_p").startswith("kept ")
    assert state.stage_readout("min_p").startswith("off, kept 8 of 8")


@pytest.mark.parametrize(
    ("stage", "value", "error", "fragment"),
    [
        ("temperature", 0.0, ValueError, "temperature must be a finite number > 0"),
        ("temperature", "2", TypeError, "temperature must be a real number"),
        ("top_k", 0, ValueError, "top_k must be an int >= 1 or None, got 0"),
        ("min_p", 1.5, ValueError, r"min_p must be in \(0, 1\] or None"),
        ("eta_cutoff", -0.1, ValueError, "eta_cutoff must be in"),
        ("tau", 1.0, ValueError, "stage must be one of"),
    ],
)
def test_bad_settings_are_rejected_naming_them(stage, value, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        hand_made().set_setting(stage, value)


def test_bad_construction_is_rejected() -> None:
    with pytest.raises(ValueError, match="preset must be one of"):
        initial_state(preset="transformers")
    with pytest.raises(ValueError, match="compare_with must be one of"):
        initial_state(compare_with="vllm")
    with pytest.raises(ValueError, match="settings may only name stages"):
        initial_state(settings={"tau": 2.0})
    with pytest.raises(ValueError, match="source must be one of"):
        initial_state(source="nope")
    with pytest.raises(ValueError, match="sources must name at least one source"):
        initial_state({})
    with pytest.raises(ValueError, match="order must hold the 'temperature' stage, got"):
        ChainViewerState(sources=chain_sources(), source="hand-made", order=("min_p",))
    with pytest.raises(ValueError, match="order must name each stage at most once"):
        ChainViewerState(sources=chain_sources(), source="hand-made", order=STAGES + STAGES)


def test_sources_and_the_model_prompt() -> None:
    sources = chain_sources()
    assert list(sources) == ["hand-made", "(3, 2, 1)", "long tail"]
    assert sources["long tail"].logits.tolist() == list(LONG_TAIL_LOGITS)
    state = hand_made(top_k=5)
    gpt = source_from_model(StubModel(), TOKENIZER, "Once")
    shown = state.with_source(gpt)
    assert shown.source == GPT_SOURCE and shown.vocab_size == len(tinytales.ALPHABET)
    expected = prompt_logits(StubModel(), "Once", tokenizer=TOKENIZER).double()
    assert torch.equal(shown.logits, expected) and shown.settings["top_k"] == 5
    assert shown.set_source("(3, 2, 1)").settings["top_k"] is None  # k >= V is off


def test_the_long_tail_shows_each_librarys_min_p() -> None:
    state = initial_state(source="long tail", settings=HOT_MIN_P)
    # HF: z >= 4 - 4.61 keeps 11 tokens; llama.cpp: z >= 4 - 2.30 keeps a, b, c.
    assert int((state.final_probs > 0).sum()) == 11
    assert state.final_text().endswith("llama.cpp's order keeps 3: a b c")
    assert int((state.apply_preset("llama.cpp").final_probs > 0).sum()) == 3


# ----- state: the counterexample search --------------------------------------------------------


def test_the_search_compares_with_the_chosen_library() -> None:
    state = hand_made(**HOT_MIN_P).find_counterexample()
    expected = find_order_counterexample(
        LIBRARY_ORDERS["Hugging Face"], LIBRARY_ORDERS["llama.cpp"], settings=HOT_MIN_P
    )
    case = state.finder.case
    assert state.finder.compared_with == "llama.cpp"
    assert torch.equal(case.probs, expected.probs) and case.kept_b == expected.kept_b
    assert state.finder.text.startswith(
        "Smallest case found, Hugging Face's order vs llama.cpp's order:\nV = 2 tokens a, b"
    )
    # A change of what is compared clears the result; another source does not.
    assert state.set_source("long tail").finder is state.finder
    assert state.set_setting("min_p", 0.2).finder is None
    assert state.move_down("top_k").finder is None
    assert state.set_compare_with("vLLM").finder is None


def test_the_search_says_why_it_cannot_compare_or_cannot_differ() -> None:
    state = hand_made(**HOT_MIN_P)
    same = state.set_compare_with("vLLM").find_counterexample().finder
    assert same.case is None and "both orders run temperature \u2192 min_p" in same.text
    swapped = hand_made(top_k=3, min_p=0.2).set_compare_with("vLLM").find_counterexample()
    assert "swapping stages that commute" in swapped.finder.text
    lacking = hand_made(typical_p=0.9).set_compare_with("vLLM").find_counterexample().finder
    assert lacking.text.startswith("vLLM has no typical_p stage, and typical_p is on here")
    assert "Every stage is off" in hand_made().find_counterexample().finder.text
    nothing = hand_made(temperature=1.5, eta_cutoff=0.0003)
    for _ in range(5):
        nothing = nothing.move_up("eta_cutoff")
    text = nothing.set_compare_with("Hugging Face").find_counterexample().finder.text
    assert text.startswith("No case found with up to V = 8 tokens")


def test_show_counterexample_adds_it_as_a_source() -> None:
    with pytest.raises(ValueError, match="no counterexample to show"):
        hand_made().show_counterexample()
    found = hand_made(**HOT_MIN_P).find_counterexample()
    shown = found.show_counterexample()
    assert shown.source == COUNTEREXAMPLE_SOURCE and shown.vocab_size == 2
    assert torch.equal(shown.logits, found.finder.case.logits)
    # On the case itself, this order and llama.cpp's keep different tokens.
    assert not torch.equal(shown.final_probs > 0, shown.compare_probs > 0)


# ----- view ------------------------------------------------------------------------------------


def heights(bars) -> list[float]:
    return [bar.get_height() for bar in bars]


def row_stages(viewer: ChainViewer) -> list[str]:
    return [row.children[1].description for row in viewer.rows_box.children]


def test_constructing_the_view_displays_nothing(capsys) -> None:
    ChainViewer()
    assert capsys.readouterr().out == ""


def test_view_shows_the_rows_readouts_and_bars_of_the_state() -> None:
    viewer = ChainViewer(**HOT_MIN_P)
    state = viewer.state
    assert row_stages(viewer) == list(STAGES)
    assert [viewer.positions[s].value for s in STAGES] == ["1.", "2.", "3.", "4.", "5.", "6."]
    assert all(viewer.readouts[s].value == state.stage_readout(s) for s in STAGES)
    assert viewer.order_label.value == state.order_text()
    assert viewer.final_label.value == state.final_text()
    assert viewer.up_buttons["temperature"].disabled and viewer.down_buttons["eta_cutoff"].disabled
    assert not viewer.down_buttons["temperature"].disabled
    assert heights(viewer.bars) == pytest.approx(state.final_probs[state.ranking].tolist())
    assert heights(viewer.outlines) == pytest.approx(state.compare_probs[state.ranking].tolist())
    assert viewer.finder_html.value == PLACEHOLDER
    assert viewer.show_button.disabled


def test_down_buttons_move_the_stage_and_the_readouts_follow() -> None:
    viewer = ChainViewer(**HOT_MIN_P)
    for _ in range(3):
        viewer.down_buttons["temperature"].click()
    assert row_stages(viewer)[:4] == ["top_k", "top_p", "min_p", "temperature"]
    assert viewer.positions["temperature"].value == "4."
    assert viewer.preset_dropdown.value is None  # an order of one's own
    assert viewer.readouts["min_p"].value == "kept 6 of 8: a b c d e f"
    assert viewer.final_label.value.startswith("final: kept 6 of 8")
    assert heights(viewer.bars)[6:] == [0.0, 0.0]
    viewer.up_buttons["temperature"].click()
    assert row_stages(viewer)[2] == "temperature"


def test_the_preset_dropdown_reorders_and_marks_missing_stages() -> None:
    viewer = ChainViewer(source="long tail", **HOT_MIN_P)
    viewer.preset_dropdown.value = "llama.cpp"
    assert viewer.state.order == LIBRARY_ORDERS["llama.cpp"]
    assert row_stages(viewer) == [*LIBRARY_ORDERS["llama.cpp"], "eta_cutoff"]
    assert viewer.readouts["eta_cutoff"].value == NOT_IN_LIBRARY
    assert viewer.positions["eta_cutoff"].value == "\u2013"
    assert viewer.sliders["eta_cutoff"].disabled and viewer.up_buttons["eta_cutoff"].disabled
    assert viewer.down_buttons["min_p"].disabled is False
    assert viewer.down_buttons["temperature"].disabled  # last of the stages llama.cpp has
    assert viewer.final_label.value.startswith("final: kept 3 of 14: a b c")
    assert viewer.axes.get_title(loc="left").startswith("final distribution in llama.cpp's order")


def test_sliders_set_the_stages() -> None:
    viewer = ChainViewer()
    viewer.sliders["min_p"].value = 0.3
    assert viewer.state.settings["min_p"] == 0.3
    viewer.sliders["min_p"].value = 0.0  # the left end is off
    assert viewer.state.settings["min_p"] is None
    viewer.sliders["top_k"].value = 2
    assert viewer.state.settings["top_k"] == 2
    assert viewer.readouts["top_k"].value == "kept 2 of 8: a b"
    viewer.sliders["top_k"].value = 8  # the right end is off
    assert viewer.state.settings["top_k"] is None
    viewer.sliders["temperature"].value = 0.35
    assert viewer.state.settings["temperature"] == 0.35
    viewer.sliders["eta_cutoff"].value = 0.0005
    assert viewer.state.settings["eta_cutoff"] == 0.0005


def test_find_and_show_buttons() -> None:
    viewer = ChainViewer(**HOT_MIN_P)
    assert viewer.find_button.description == FIND_LABEL
    viewer.find_button.click()
    assert viewer.finder_html.value.startswith("<pre")
    assert "V = 2 tokens a, b with P = (0.95, 0.05)" in viewer.finder_html.value
    assert not viewer.show_button.disabled
    viewer.show_button.click()
    assert viewer.source_buttons.value == COUNTEREXAMPLE_SOURCE
    assert COUNTEREXAMPLE_SOURCE in viewer.source_buttons.options
    assert len(viewer.bars) == 2
    viewer.compare_dropdown.value = "vLLM"  # a new comparison clears the result
    assert viewer.finder_html.value == PLACEHOLDER and viewer.show_button.disabled


def test_refused_input_shows_a_line_of_text_not_a_traceback() -> None:
    viewer = ChainViewer(StubModel(), TOKENIZER, source=GPT_SOURCE, prompt="Once")
    before = viewer.state
    viewer.prompt_box.value = "Once #"  # '#' is not in the alphabet
    assert viewer.error_label.value.startswith('<span style="color: #b00020">not applied: ')
    assert "#" in viewer.error_label.value and viewer.state is before
    viewer.prompt_box.value = "Once upon"  # a good prompt clears the message
    assert viewer.error_label.value == ""
    assert viewer.state.logits.shape == (len(tinytales.ALPHABET),)
    viewer.preset_dropdown.value = "vLLM"
    viewer.find_button.click()  # nothing to compare: said in the result, not raised
    assert "Every stage is off" in viewer.finder_html.value


def test_gpt_source_draws_at_most_max_bars() -> None:
    viewer = ChainViewer(StubModel(), TOKENIZER, source=GPT_SOURCE, prompt="Once", top_k=5)
    assert len(viewer.bars) == MAX_BARS and viewer.sliders["top_k"].max == len(tinytales.ALPHABET)
    assert f"the {MAX_BARS} highest logits of {len(tinytales.ALPHABET)}" in viewer.note_label.value
    viewer.source_buttons.value = "(3, 2, 1)"
    assert len(viewer.bars) == 3 and viewer.sliders["top_k"].max == 3
    assert viewer.state.settings["top_k"] is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0.73}, r"temperature .*multiple of 0\.05.*got 0\.73"),
        ({"min_p": 0.105}, r"min_p .*multiple of 0\.01.*got 0\.105"),
        ({"eta_cutoff": 0.00035}, r"eta_cutoff .*multiple of 0\.0001.*got 0\.00035"),
    ],
)
def test_settings_the_sliders_cannot_show_are_rejected(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChainViewer(**settings)


def test_model_and_tokenizer_come_together() -> None:
    with pytest.raises(ValueError, match="model and tokenizer"):
        ChainViewer(StubModel(), None)
