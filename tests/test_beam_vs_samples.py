"""Profiles of continuations, log-probabilities of samples, and the beam tables of lesson 06."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.beam_vs_samples import (
    format_beam_steps,
    format_profiles,
    profile_continuation,
    profile_hypothesis,
    sample_fixed_length,
)
from lessonlib.analysis.recorded import text_log_probs
from lessonlib.beam_search import Hypothesis, beam_search
from lessonlib.bigram import BigramModel, load_bigram
from lessonlib.generation import generate
from lessonlib.metrics import repetition_rate
from lessonlib.model import GPT, GPTConfig
from lessonlib.scoring import model_char_log_probs, text_log_prob, truth_char_log_probs
from lessonlib.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
PROMPT = (
    "Once upon a time, there was a little kid named Mia. Mia had a happy dog and a red ball. "
    "One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like your dog.'"
)
LOOP = " Mia played with the ball." * 3


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=TOKENIZER.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=16
    )
    return GPT(config).eval()


def test_profile_scores_the_continuation_only(model):
    profile = profile_continuation(model, PROMPT, LOOP, tokenizer=TOKENIZER, finished=False)
    whole = model_char_log_probs(model, PROMPT + LOOP, tokenizer=TOKENIZER)
    assert profile.model_per_char == pytest.approx(float(whole[len(PROMPT) :].mean()))
    truth = truth_char_log_probs(PROMPT + LOOP)[len(PROMPT) :]
    assert profile.truth_per_char == pytest.approx(float(truth.mean()))
    assert profile.valid and profile.truth_per_char < 0
    assert profile.repetition == repetition_rate(LOOP) > 0
    assert profile.cycle is not None and profile.cycle.period == len(" Mia played with the ball.")


def test_a_finished_profile_counts_the_end_token(model):
    ending = " Mia played with the ball. In the end, Mia and Tom were the best of friends."
    assert tinytales.is_valid_story(PROMPT + ending)
    profile = profile_continuation(model, PROMPT, ending, tokenizer=TOKENIZER, finished=True)
    total = text_log_prob(model, PROMPT + ending, tokenizer=TOKENIZER, end=True) - text_log_prob(
        model, PROMPT, tokenizer=TOKENIZER
    )
    assert profile.model_per_char == pytest.approx(total / (len(ending) + 1))
    assert profile.finished and profile.valid


def test_text_that_leaves_the_grammar_is_invalid(model):
    profile = profile_continuation(
        model, PROMPT, " Mia ate the moon.", tokenizer=TOKENIZER, finished=False
    )
    assert profile.truth_per_char == -math.inf
    assert not profile.valid
    assert math.isfinite(profile.model_per_char)


def test_profile_rejects_bad_input(model):
    with pytest.raises(ValueError, match="text must not be empty"):
        profile_continuation(model, PROMPT, "", tokenizer=TOKENIZER, finished=False)
    with pytest.raises(TypeError, match="finished must be a bool"):
        profile_continuation(model, PROMPT, "a", tokenizer=TOKENIZER, finished=1)
    with pytest.raises(TypeError, match="prompt and text must be str"):
        profile_continuation(model, PROMPT, None, tokenizer=TOKENIZER, finished=False)


def test_text_log_probs_match_rescoring_on_the_gpt(model):
    samples = generate(
        model,
        ["Once"] * 4,
        tokenizer=TOKENIZER,
        max_new_tokens=30,
        generator=torch.Generator().manual_seed(3),
        record_logits=True,
    )
    prefix = text_log_prob(model, "Once", tokenizer=TOKENIZER)
    for text, finished, log_p in zip(
        samples.texts, samples.finished, text_log_probs(samples), strict=True
    ):
        whole = text_log_prob(model, "Once" + text, tokenizer=TOKENIZER, end=finished)
        assert log_p == pytest.approx(whole - prefix, abs=1e-4)


def test_text_log_probs_on_the_bigram_are_sums_of_its_table():
    bigram, tokenizer = load_bigram()
    names = generate(
        bigram,
        [""] * 20,
        tokenizer=tokenizer,
        max_new_tokens=20,
        generator=torch.Generator().manual_seed(0),
        record_logits=True,
    )
    for ids, log_p in zip(names.token_ids, text_log_probs(names), strict=True):
        path = [tokenizer.boundary_id, *ids]
        by_hand = sum(float(bigram.log_probs[a, b]) for a, b in itertools.pairwise(path))
        assert log_p == pytest.approx(by_hand, abs=1e-4)
    with pytest.raises(ValueError, match="record_logits=True"):
        text_log_probs(generate(bigram, "", tokenizer=tokenizer, max_new_tokens=3))
    with pytest.raises(TypeError, match="generation must be a Generation"):
        text_log_probs("ab")


def test_format_beam_steps_lists_every_kept_and_ended_hypothesis():
    toy = BigramModel(torch.tensor([[0, 6, 4], [2, 1, 1], [9, 0, 1]]), smoothing=0.0, symbols="·ab")
    result = beam_search(
        toy, "", tokenizer=CharTokenizer("·ab", boundary="·"), beam_width=2, max_new_tokens=6
    )
    table = format_beam_steps(result)
    kept_rows = sum(len(step.kept) for step in result.steps)
    ended_rows = sum(len(step.ended) for step in result.steps)
    assert table.splitlines()[0].split() == ["step", "rank", "hypothesis", "log", "P"]
    assert len(table.splitlines()) == 1 + kept_rows + ended_rows
    assert ended_rows > 0 and table.count(" end ") == ended_rows
    first = result.steps[0].kept[0]
    assert table.splitlines()[1].split() == ["1", "1", repr(first.text), f"{first.log_prob:.2f}"]
    assert len(format_beam_steps(result, steps=2).splitlines()) == 1 + sum(
        len(step.kept) + len(step.ended) for step in result.steps[:2]
    )


def test_format_beam_steps_rejects_bad_input(model):
    result = beam_search(model, "Once", tokenizer=TOKENIZER, beam_width=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="steps must be an int >= 1 or None, got 0"):
        format_beam_steps(result, steps=0)
    silent = beam_search(
        model, "Once", tokenizer=TOKENIZER, beam_width=2, max_new_tokens=3, record_steps=False
    )
    with pytest.raises(ValueError, match="record_steps=True"):
        format_beam_steps(silent)


def test_format_profiles_has_one_line_per_row(model):
    looping = profile_continuation(model, PROMPT, LOOP, tokenizer=TOKENIZER, finished=False)
    plain = profile_continuation(model, PROMPT, " Mia", tokenizer=TOKENIZER, finished=False)
    lines = format_profiles([("beam 2", looping), ("sample 0", plain)]).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("beam 2") and "' Mia played with the ball.'" in lines[1]
    assert lines[2].startswith("sample 0") and lines[2].endswith("  -")
    assert f"{looping.model_per_char:.4f}" in lines[1]
    assert lines[0].split() == ["decoding", "model/char", "truth/char", "repeated", "loop", "unit"]


# ----- profiles read from hypotheses, and samples under the beams' length rule -----------------

TOY_SYMBOLS = CharTokenizer("·ab", boundary="·")


def toy_bigram(rows: list[list[int]]) -> BigramModel:
    return BigramModel(torch.tensor(rows), smoothing=0.0, symbols="·ab")


def test_profile_of_a_beam_hypothesis_matches_rescoring_its_text(model):
    hypothesis = beam_search(
        model, PROMPT, tokenizer=TOKENIZER, beam_width=3, max_new_tokens=12, min_new_tokens=12
    ).best
    from_search = profile_hypothesis(PROMPT, hypothesis)
    rescored = profile_continuation(
        model, PROMPT, hypothesis.text, tokenizer=TOKENIZER, finished=False
    )
    assert from_search.model_per_char == pytest.approx(rescored.model_per_char, abs=1e-5)
    assert from_search == replace(rescored, model_per_char=from_search.model_per_char)


def test_profile_of_a_finished_hypothesis_counts_the_end_token(model):
    ending = " Mia played with the ball. In the end, Mia and Tom were the best of friends."
    log_prob = text_log_prob(model, PROMPT + ending, tokenizer=TOKENIZER, end=True)
    log_prob -= text_log_prob(model, PROMPT, tokenizer=TOKENIZER)
    ids = (*TOKENIZER.encode(ending), TOKENIZER.boundary_id)
    profile = profile_hypothesis(PROMPT, Hypothesis(ending, ids, log_prob, log_prob, True))
    rescored = profile_continuation(model, PROMPT, ending, tokenizer=TOKENIZER, finished=True)
    assert profile.model_per_char == pytest.approx(log_prob / (len(ending) + 1))
    assert profile.model_per_char == pytest.approx(rescored.model_per_char, abs=1e-9)
    assert profile.truth_per_char == rescored.truth_per_char > -math.inf


def test_profile_of_a_hypothesis_rejects_bad_input():
    with pytest.raises(TypeError, match="hypothesis must be a Hypothesis"):
        profile_hypothesis(PROMPT, "Mia")
    with pytest.raises(TypeError, match="prompt must be a str"):
        profile_hypothesis(None, Hypothesis("a", (1,), -1.0, -1.0, False))
    with pytest.raises(ValueError, match="at least one token"):
        profile_hypothesis(PROMPT, Hypothesis("", (), 0.0, 0.0, False))


def test_fixed_length_samples_never_end_and_score_the_models_own_log_probability():
    # After 'a' the name ends with probability 0.5 and after 'b' with 0.9: forbidden here.
    toy = toy_bigram([[0, 6, 4], [2, 1, 1], [9, 0, 1]])
    samples = sample_fixed_length(
        toy,
        "",
        tokenizer=TOY_SYMBOLS,
        num_samples=200,
        length=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(samples) == 200
    for sample in samples:
        assert len(sample.text) == sample.length == 5 and "·" not in sample.text
        assert not sample.finished and sample.score == sample.log_prob
        path = [TOY_SYMBOLS.boundary_id, *sample.token_ids]
        # The model's own probabilities, not renormalised after the end was forbidden.
        by_hand = sum(float(toy.log_probs[a, b]) for a, b in itertools.pairwise(path))
        assert sample.log_prob == pytest.approx(by_hand, abs=1e-6)
    # 'b' is never followed by 'a', so five letters allow a...ab...b: six names, all drawn.
    assert {s.text for s in samples} == {"a" * i + "b" * (5 - i) for i in range(6)}


def test_fixed_length_samples_draw_from_the_renormalised_distribution():
    # After 'a': end 0.5, 'a' 0.25, 'b' 0.25; with the end forbidden, 'a' and 'b' get 0.5 each.
    toy = toy_bigram([[0, 6, 4], [2, 1, 1], [9, 0, 1]])
    samples = sample_fixed_length(
        toy,
        "a",
        tokenizer=TOY_SYMBOLS,
        num_samples=4000,
        length=1,
        generator=torch.Generator().manual_seed(1),
    )
    share_a = sum(s.text == "a" for s in samples) / len(samples)
    assert abs(share_a - 0.5) < 4 * math.sqrt(0.25 / len(samples))


def test_fixed_length_samples_equal_generate_when_the_end_is_impossible():
    # No symbol is ever followed by the end: forbidding it changes nothing, so the draws match.
    toy = toy_bigram([[0, 6, 4], [0, 1, 3], [0, 2, 1]])
    settings = {"tokenizer": TOY_SYMBOLS, "generator": torch.Generator().manual_seed(2)}
    samples = sample_fixed_length(toy, "b", num_samples=16, length=9, **settings)
    settings["generator"] = torch.Generator().manual_seed(2)
    drawn = generate(toy, ["b"] * 16, max_new_tokens=9, stop_at_boundary=False, **settings)
    assert [s.text for s in samples] == drawn.texts


def test_fixed_length_samples_on_the_gpt_are_seeded_and_rescore_exactly(model):
    def draw(seed: int) -> list[Hypothesis]:
        return sample_fixed_length(
            model,
            "Once",
            tokenizer=TOKENIZER,
            num_samples=6,
            length=20,
            generator=torch.Generator().manual_seed(seed),
            progress=True,
        )

    first, again, other = draw(0), draw(0), draw(1)
    assert [s.text for s in first] == [s.text for s in again]
    assert [s.text for s in first] != [s.text for s in other]
    prefix = text_log_prob(model, "Once", tokenizer=TOKENIZER)
    for sample in first:
        assert len(sample.text) == 20 and TOKENIZER.boundary not in sample.text
        whole = text_log_prob(model, "Once" + sample.text, tokenizer=TOKENIZER)
        assert sample.log_prob == pytest.approx(whole - prefix, abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompt": 3}, TypeError, "prompt must be a str"),
        ({"prompt": "a·"}, ValueError, "must not contain the boundary"),
        ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1, got 0"),
        ({"length": True}, TypeError, "length must be an int >= 1, got True"),
        ({"generator": 7}, TypeError, "generator must be a torch.Generator"),
        ({"tokenizer": TOKENIZER}, ValueError, "pass the tokenizer that came with the model"),
    ],
)
def test_fixed_length_samples_reject_bad_arguments(kwargs, error, message):
    settings = {
        "prompt": "",
        "tokenizer": TOY_SYMBOLS,
        "num_samples": 2,
        "length": 3,
        "generator": torch.Generator().manual_seed(0),
    } | kwargs
    prompt = settings.pop("prompt")
    with pytest.raises(error, match=message):
        sample_fixed_length(toy_bigram([[0, 6, 4], [2, 1, 1], [9, 0, 1]]), prompt, **settings)
