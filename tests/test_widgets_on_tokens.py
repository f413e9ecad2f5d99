"""The temperature explorer, the nucleus explorer and the pipeline viewer on a BPE token model.

A tiny random GPT-2 over a 300-token BPE vocabulary (fit in a second, never trained) stands in
for lesson 11's model; the views are driven headless, as in the widgets' own test files.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.distributions import nucleus_mask
from lessonlib.generation import prompt_logits
from lessonlib.hf import HFTokenizer
from lessonlib.sampling import sampling_probs
from lessonlib.token_model import TokenTrainSettings, make_model, make_tokenizer
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.nucleus import MAX_BARS as NUCLEUS_BARS
from lessonlib.widgets.nucleus import NucleusExplorer
from lessonlib.widgets.nucleus_state import GPT_SOURCE, from_model
from lessonlib.widgets.pipeline import MAX_BARS as PIPELINE_BARS
from lessonlib.widgets.pipeline import PipelineViewer
from lessonlib.widgets.pipeline_state import source_from_model
from lessonlib.widgets.state import (
    CHARACTER_GPT,
    model_title,
    prompt_source_logits,
    shortened,
    token_labels,
    visible,
)
from lessonlib.widgets.temperature import MAX_BARS, TemperatureExplorer
from lessonlib.widgets.temperature_state import TemperatureExplorerState
from tests.stub_models import lively_gpt

VOCAB_SIZE = 300  # 256 bytes, the end-of-text token and 43 merges: more tokens than bars
CONTEXT = 64  # the model's context in tokens: a prompt of 63 tokens fits, one more does not
PROMPT = "Once upon a time, there was a little"
NOTE_MASS = re.compile(r"the other (\d+) hold (\S+) at these settings")


@pytest.fixture(scope="module")
def token_model():
    """A random 1-layer GPT-2 and its BPE tokenizer (wrapped as the course's tokenizer)."""
    tokenizer = make_tokenizer(tinytales.generate_stories(300, seed=0), VOCAB_SIZE)
    settings = dataclasses.replace(
        TokenTrainSettings(), n_layer=1, n_embd=32, n_head=2, context=CONTEXT
    )
    torch.manual_seed(0)
    model = make_model(settings, tokenizer).eval()
    return model, HFTokenizer(tokenizer)


def space_token(tokenizer: HFTokenizer) -> int:
    """Id of the token " the" (the corpus's commonest word), whose label starts with '␣'."""
    (token_id,) = tokenizer.encode(" the")
    return token_id


def tick_texts(axes) -> list[str]:
    return [tick.get_text() for tick in axes.get_xticklabels()]


def note_numbers(note: str) -> tuple[int, float]:
    """How many tokens a temperature note says are not drawn, and the mass it gives them."""
    match = NOTE_MASS.search(note)
    assert match is not None, note
    return int(match.group(1)), float(match.group(2))


# ----- the shared helpers ----------------------------------------------------------------------


def test_token_labels_are_the_tokenizers(token_model) -> None:
    model, tokenizer = token_model
    labels = token_labels(tokenizer, model.vocab_size)
    assert len(labels) == model.vocab_size == VOCAB_SIZE
    assert labels[space_token(tokenizer)] == "\u2423the"
    # Output rows beyond the tokenizer's tokens (padding rows) still get a label each.
    assert len(token_labels(tokenizer, VOCAB_SIZE + 4)) == VOCAB_SIZE + 4
    # A character tokenizer's labels stay its visible characters.
    chars = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
    assert token_labels(chars, 50) == tuple(visible(char) for char in tinytales.ALPHABET)
    assert "\u2423" in token_labels(chars, 50) and " " not in token_labels(chars, 50)


def test_model_title_names_a_hugging_face_model(token_model) -> None:
    model, _ = token_model
    assert model_title(model) == model.name == "GPT2LMHeadModel"
    assert model_title(lively_gpt(50)) == CHARACTER_GPT  # the character GPT has no name

    class Named:
        name = "/somewhere/data/tinytales_tokens/"

    assert model_title(Named()) == "tinytales_tokens"  # a folder's path: its last part
    Named.name = "openai-community/gpt2"
    assert model_title(Named()) == "openai-community/gpt2"  # a Hub name stays whole


def test_any_text_is_a_prompt_but_not_one_longer_than_the_context(token_model) -> None:
    model, tokenizer = token_model
    odd = "Q# ü 漢字 {}"  # outside TinyTales' alphabet: bytes still encode it
    expected = prompt_logits(model, odd, tokenizer=tokenizer).double()
    assert torch.equal(prompt_source_logits(model, tokenizer, odd), expected)
    longest = " a" * (CONTEXT - 1)
    assert len(tokenizer.encode(longest)) == CONTEXT - 1
    prompt_source_logits(model, tokenizer, longest)  # fits with the boundary token
    with pytest.raises(ValueError, match=f"prompt .* {CONTEXT} tokens long.*at most {CONTEXT - 1}"):
        prompt_source_logits(model, tokenizer, longest + " a")
    with pytest.raises(TypeError, match="prompt"):
        prompt_source_logits(model, tokenizer, 3)


# ----- temperature explorer --------------------------------------------------------------------


@pytest.fixture
def explorer(token_model) -> TemperatureExplorer:
    model, tokenizer = token_model
    return TemperatureExplorer(model, tokenizer, source="gpt", prompt=PROMPT)


def test_temperature_state_on_tokens(token_model) -> None:
    model, tokenizer = token_model
    state = TemperatureExplorerState.from_model(model, tokenizer, PROMPT)
    assert state.vocab_size == VOCAB_SIZE and state.truth is None
    assert state.labels == tuple(tokenizer.labels(VOCAB_SIZE))
    assert state.title.startswith("GPT2LMHeadModel, after ")
    logits = prompt_logits(model, PROMPT, tokenizer=tokenizer).double()
    assert torch.allclose(state.probs, sampling_probs(logits))
    shown = state.shown_tokens(MAX_BARS)
    assert torch.equal(shown, logits.topk(MAX_BARS).indices)  # highest first
    assert state.hidden_mass(MAX_BARS) == pytest.approx(1 - float(state.probs[shown].sum()))
    # A vocabulary that fits is drawn whole, in vocabulary order.
    assert torch.equal(state.shown_tokens(VOCAB_SIZE), torch.arange(VOCAB_SIZE))


def test_temperature_explorer_draws_the_top_tokens_with_their_labels(
    explorer: TemperatureExplorer, token_model
) -> None:
    _, tokenizer = token_model
    state = explorer.state
    assert len(explorer.bars) == len(explorer.shown) == MAX_BARS < state.vocab_size
    assert explorer.shown == tuple(state.shown_tokens(MAX_BARS).tolist())
    assert tick_texts(explorer.axes) == [state.labels[i] for i in explorer.shown]
    assert [bar.get_height() for bar in explorer.bars] == pytest.approx(
        state.probs[list(explorer.shown)].tolist()
    )
    # The token model's name on the source button and in the title; no per-character truth.
    assert ("GPT2LMHeadModel", "gpt") in explorer.source.options
    assert explorer.axes.get_title(loc="left").startswith("GPT2LMHeadModel, after ")
    assert explorer.axes.get_ylabel().startswith("P(next token)")
    assert not any(bar.get_visible() for bar in explorer.truth_bars)
    assert "truth" not in explorer.status.value
    # Every token stays in the state: the full distribution, with '␣' labels among them.
    assert state.probs.shape == (VOCAB_SIZE,) and float(state.probs.sum()) == pytest.approx(1)
    assert state.labels[space_token(tokenizer)] == "\u2423the"
    assert [value for _, value in explorer.bar_dropdown.options] == list(explorer.shown)
    assert explorer.bar_dropdown.value == state.argmax
    assert explorer.output.outputs == ()


def test_the_note_gives_the_mass_of_the_tokens_not_drawn(explorer: TemperatureExplorer) -> None:
    def check_note() -> None:
        state = explorer.state
        hidden, mass = note_numbers(explorer.status.value)
        assert hidden == VOCAB_SIZE - MAX_BARS
        expected = 1 - float(state.probs[list(explorer.shown)].sum())
        assert mass == pytest.approx(expected, rel=5e-3, abs=1e-12)

    check_note()
    assert note_numbers(explorer.status.value)[1] > 0.3  # an untrained model's tail is heavy
    explorer.temperature_slider.value = 3.0
    check_note()
    explorer.temperature_slider.value = 0.1
    check_note()
    explorer.top_k_slider.value = 120  # top-k keeps tokens beyond the bars drawn
    assert int(explorer.state.kept.sum()) == 120
    check_note()
    explorer.top_k_slider.value = 10  # every kept token is drawn: the others hold nothing
    assert note_numbers(explorer.status.value)[1] == 0
    explorer.draw_button.click()
    assert "0 of the 100 draws" in explorer.status.value
    explorer.top_k_slider.value = VOCAB_SIZE
    explorer.draws_box.value = 2000
    explorer.draw_button.click()
    state = explorer.state
    in_tail = int(state.counts[state.hidden(MAX_BARS)].sum())
    assert in_tail > 0 and f"{in_tail} of the 2000 draws" in explorer.status.value


def test_the_bars_drawn_stay_put(explorer: TemperatureExplorer) -> None:
    shown = explorer.shown
    bars = explorer.bars
    for action in (
        lambda: setattr(explorer.temperature_slider, "value", 0.2),
        lambda: setattr(explorer.temperature_slider, "value", 4.0),
        lambda: setattr(explorer.greedy_toggle, "value", True),
        lambda: setattr(explorer.top_k_slider, "value", 3),
        lambda: explorer.drag_bar(shown[-1], 0.9),
        lambda: explorer.draw_button.click(),
        lambda: explorer.reset_button.click(),
    ):
        action()
        assert explorer.shown == shown and explorer.bars is bars  # same tokens, same artists
        heights = [bar.get_height() for bar in explorer.bars]
        assert heights == pytest.approx(explorer.state.probs[list(shown)].tolist())
    # A new prompt chooses the bars again.
    explorer.prompt_box.value = "The dog"
    assert explorer.shown == tuple(explorer.state.shown_tokens(MAX_BARS).tolist()) != shown
    assert explorer.output.outputs == ()


def test_dragging_and_the_dropdown_act_on_the_drawn_tokens(explorer: TemperatureExplorer) -> None:
    explorer.canvas.draw()  # lay the figure out, so that data coordinates map to pixels
    height = explorer.figure.bbox.height

    def mouse(kind: str, x: float, q: float, buttons: int) -> None:
        px, py = explorer.axes.transData.transform((x, q))
        explorer.canvas.manager.handle_json(
            {"type": kind, "x": px, "y": height - py, "button": 0, "buttons": buttons}
            | {"modifiers": [], "guiEvent": None}
        )

    position = 7  # the eighth bar from the left is the token with the eighth highest logit
    token = explorer.shown[position]
    mouse("button_press", position + 0.2, 0.15, 1)  # inside the axes (they reach 0.2)
    mouse("button_release", position + 0.2, 0.15, 0)
    assert float(explorer.state.probs[token]) == pytest.approx(0.15, abs=0.01)
    assert explorer.state.argmax == token
    assert explorer.bars[position].get_height() == pytest.approx(float(explorer.state.probs[token]))

    other = explorer.shown[MAX_BARS - 1]
    explorer.bar_dropdown.value = other
    assert explorer.probability_slider.value == pytest.approx(
        float(explorer.state.probs[other]), abs=1e-3
    )
    explorer.probability_slider.value = 0.25
    assert float(explorer.state.probs[other]) == pytest.approx(0.25)
    assert explorer.output.outputs == ()


def test_temperature_prompt_box_on_tokens(explorer: TemperatureExplorer) -> None:
    explorer.prompt_box.value = "Zorg ate 3 #pizzas"  # no TinyTales text, still a prompt
    assert explorer.state.title == "GPT2LMHeadModel, after 'Zorg ate 3 #pizzas'"
    assert "Prompt not used" not in explorer.status.value
    before = explorer.state
    explorer.prompt_box.value = " a" * CONTEXT
    assert "Prompt not used" in explorer.status.value
    assert f"at most {CONTEXT - 1} prompt tokens" in explorer.status.value
    assert explorer.state is before  # the previous distribution stays
    explorer.source.value = "bigram"  # the bigram is drawn whole, as before
    assert len(explorer.bars) == 27 and explorer.status.value == ""
    assert explorer.axes.get_ylabel().startswith("P(next char)")


def test_a_character_model_is_drawn_as_before() -> None:
    tokenizer = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
    model = lively_gpt(len(tinytales.ALPHABET))
    explorer = TemperatureExplorer(model, tokenizer, source="gpt", prompt="Once upon a time")
    assert explorer.shown == tuple(range(50)) and len(explorer.bars) == 50
    assert tick_texts(explorer.axes)[tokenizer.chars.index(" ")] == "\u2423"
    assert explorer.state.labels == tuple(tokenizer.labels())
    assert explorer.state.title.startswith(f"{CHARACTER_GPT}, after ")
    assert (CHARACTER_GPT, "gpt") in explorer.source.options
    assert explorer.status.value == ""  # a story prefix: the truth, and no note
    assert explorer.state.truth is not None


# ----- nucleus explorer ------------------------------------------------------------------------


def test_nucleus_explorer_on_tokens(token_model) -> None:
    model, tokenizer = token_model
    explorer = NucleusExplorer(model, tokenizer, prompt=PROMPT, source=GPT_SOURCE, p=0.5)
    state = explorer.state
    assert state.total == VOCAB_SIZE
    assert state.distribution.labels == tuple(tokenizer.labels(VOCAB_SIZE))
    assert "\u2423the" in state.distribution.labels
    assert state.distribution.description == f"next token of GPT2LMHeadModel after {PROMPT!r}"
    assert tick_texts(explorer.ax) == list(state.sorted_labels[:NUCLEUS_BARS])
    logits = prompt_logits(model, PROMPT, tokenizer=tokenizer).double()
    assert torch.equal(state.kept, nucleus_mask(torch.softmax(logits, -1), 0.5))
    assert state.nucleus_size > NUCLEUS_BARS  # an untrained model: the nucleus is wide
    assert f"the top {NUCLEUS_BARS} of {VOCAB_SIZE} tokens" in explorer.note_label.value

    explorer.prompt_box.value = "Zorg ate 3 #pizzas"  # any text is a prompt
    assert "Zorg" in explorer.note_label.value
    before = explorer.state
    explorer.prompt_box.value = " a" * CONTEXT
    assert explorer.note_label.value.startswith("prompt not used")
    assert f"at most {CONTEXT - 1} prompt tokens" in explorer.note_label.value
    assert explorer.state is before
    assert explorer.output.outputs == ()


def test_nucleus_from_model_on_a_character_model_is_unchanged() -> None:
    tokenizer = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
    distribution = from_model(lively_gpt(50), tokenizer, "Once")
    assert distribution.labels == tuple(visible(char) for char in tinytales.ALPHABET)
    assert distribution.description == "GPT's next character after 'Once'"


# ----- pipeline viewer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, None, 0.9), (0.7, 100, 0.8), (2.0, 40, None)]
)
def test_pipeline_viewer_keeps_what_the_sampler_keeps(
    token_model, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    model, tokenizer = token_model
    viewer = PipelineViewer(
        model,
        tokenizer,
        source=GPT_SOURCE,
        prompt=PROMPT,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    state = viewer.state
    logits = prompt_logits(model, PROMPT, tokenizer=tokenizer).double()
    final = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    kept = final > 0
    assert torch.equal(state.stages.top_p > 0, kept)
    assert state.kept_counts()[2] == int(kept.sum()) > PIPELINE_BARS
    viewer.draw_button.click()
    assert not bool(state.counts[~kept].any()) and not bool(viewer.state.counts[~kept].any())


def test_pipeline_viewer_labels_and_prompt_on_tokens(token_model) -> None:
    model, tokenizer = token_model
    viewer = PipelineViewer(model, tokenizer, source=GPT_SOURCE, prompt=PROMPT)
    state = viewer.state
    assert state.labels == tuple(tokenizer.labels(VOCAB_SIZE)) and "\u2423the" in state.labels
    order = state.order[:PIPELINE_BARS].tolist()
    assert tick_texts(viewer.axes[3]) == [state.labels[i] for i in order]
    assert viewer.top_k_slider.max == VOCAB_SIZE
    note = viewer.note_label.value
    assert note.startswith(f"next token of GPT2LMHeadModel after {shortened(PROMPT, 30)!r}")
    assert f"the {PIPELINE_BARS} highest logits of {VOCAB_SIZE}" in note

    viewer.prompt_box.value = "Zorg ate 3 #pizzas"
    assert viewer.state.distribution.description.endswith("'Zorg ate 3 #pizzas'")
    before = viewer.state
    viewer.prompt_box.value = " a" * CONTEXT
    assert viewer.note_label.value.startswith("prompt not used")
    assert f"at most {CONTEXT - 1} prompt tokens" in viewer.note_label.value
    assert viewer.state is before
    assert viewer.output.outputs == ()


def test_pipeline_source_on_a_character_model_is_unchanged() -> None:
    tokenizer = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
    source = source_from_model(lively_gpt(50), tokenizer, "Once")
    assert source.labels == tuple(visible(char) for char in tinytales.ALPHABET)
    assert source.description == "GPT's next character after 'Once'"
