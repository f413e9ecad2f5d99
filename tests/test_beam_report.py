"""Profiles of continuations, log-probabilities of samples, and the beam tables of lesson 06."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.beam_report import (
    format_beam_steps,
    format_profiles,
    generation_log_probs,
    profile_continuation,
)
from lessonlib.beam_search import beam_search
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


def test_generation_log_probs_match_rescoring_on_the_gpt(model):
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
        samples.texts, samples.finished, generation_log_probs(samples), strict=True
    ):
        whole = text_log_prob(model, "Once" + text, tokenizer=TOKENIZER, end=finished)
        assert log_p == pytest.approx(whole - prefix, abs=1e-4)


def test_generation_log_probs_on_the_bigram_are_sums_of_its_table():
    bigram, tokenizer = load_bigram()
    names = generate(
        bigram,
        [""] * 20,
        tokenizer=tokenizer,
        max_new_tokens=20,
        generator=torch.Generator().manual_seed(0),
        record_logits=True,
    )
    for ids, log_p in zip(names.token_ids, generation_log_probs(names), strict=True):
        path = [tokenizer.boundary_id, *ids]
        by_hand = sum(float(bigram.log_probs[a, b]) for a, b in itertools.pairwise(path))
        assert log_p == pytest.approx(by_hand, abs=1e-4)
    with pytest.raises(ValueError, match="record_logits=True"):
        generation_log_probs(generate(bigram, "", tokenizer=tokenizer, max_new_tokens=3))
    with pytest.raises(TypeError, match="generation must be a Generation"):
        generation_log_probs("ab")


def test_format_beam_steps_lists_every_kept_and_ended_hypothesis():
    toy = BigramModel(torch.tensor([[0, 6, 4], [1, 1, 1], [9, 0, 1]]), smoothing=0.0, symbols="·ab")
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
    with pytest.raises(ValueError, match="steps must be None or an int >= 1, got 0"):
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
    assert lines[2].startswith("sample 0") and " - " in lines[2]
    assert f"{looping.model_per_char:.4f}" in lines[1]
