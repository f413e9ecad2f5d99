"""Tests for lessonlib.scoring: log-probabilities of each character, under a model and TinyTales."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.generation import prompt_logits
from lessonlib.model import GPT
from lessonlib.scoring import (
    model_char_log_probs,
    text_log_prob,
    truth_char_log_probs,
    truth_char_ranks,
)
from lessonlib.tokenizer import CharTokenizer
from lessonlib.train import story_loss
from tests.stub_models import lively_gpt

TOKENIZER = CharTokenizer("\nabcdefgh .", boundary="\n")


def lively_model(block_size: int = 32) -> GPT:
    """A small random GPT over TOKENIZER whose logits are far from uniform."""
    return lively_gpt(TOKENIZER.vocab_size, block_size=block_size)


def test_model_scores_match_one_step_at_a_time() -> None:
    model, text = lively_model(), "bad cafe."
    scores = model_char_log_probs(model, text, tokenizer=TOKENIZER)
    assert scores.shape == (len(text),)
    assert scores.dtype == torch.float64
    for i, char in enumerate(text):
        step = torch.log_softmax(prompt_logits(model, text[:i], tokenizer=TOKENIZER), dim=-1)
        assert float(scores[i]) == pytest.approx(float(step[TOKENIZER.encode(char)[0]]), abs=1e-5)


def test_end_adds_the_boundary_after_the_text() -> None:
    model, text = lively_model(), "hedge"
    with_end = model_char_log_probs(model, text, tokenizer=TOKENIZER, end=True)
    without = model_char_log_probs(model, text, tokenizer=TOKENIZER)
    assert torch.equal(with_end[:-1], without)
    last = torch.log_softmax(prompt_logits(model, text, tokenizer=TOKENIZER), dim=-1)
    assert float(with_end[-1]) == pytest.approx(float(last[TOKENIZER.boundary_id]), abs=1e-5)
    assert text_log_prob(model, text, tokenizer=TOKENIZER, end=True) == pytest.approx(
        float(with_end.sum())
    )


def test_complete_text_agrees_with_the_training_loss() -> None:
    model, stories = lively_model(), ["abc", "head bead."]
    nats = -sum(text_log_prob(model, s, tokenizer=TOKENIZER, end=True) for s in stories)
    per_char = nats / sum(len(s) + 1 for s in stories)
    assert per_char == pytest.approx(story_loss(model, TOKENIZER, stories), rel=1e-5)


def test_empty_text_scores_nothing_or_its_end() -> None:
    model = lively_model()
    assert model_char_log_probs(model, "", tokenizer=TOKENIZER).shape == (0,)
    assert model_char_log_probs(model, "", tokenizer=TOKENIZER, end=True).shape == (1,)
    assert text_log_prob(model, "", tokenizer=TOKENIZER) == 0.0


def test_model_scoring_rejects_bad_text() -> None:
    model = lively_model(block_size=8)
    model_char_log_probs(model, "abcdefgh", tokenizer=TOKENIZER)  # 1 + 8 tokens, 8 inputs: fits
    with pytest.raises(ValueError, match="block_size=8"):
        model_char_log_probs(model, "abcdefgh", tokenizer=TOKENIZER, end=True)
    with pytest.raises(ValueError, match="must not contain the boundary"):
        model_char_log_probs(model, "ab\ncd", tokenizer=TOKENIZER)
    with pytest.raises(TypeError, match="text must be a str"):
        text_log_prob(model, 3, tokenizer=TOKENIZER)  # type: ignore[arg-type]


def test_truth_sums_to_the_story_log_prob() -> None:
    for story in tinytales.generate_stories(5, seed=4):
        scores = truth_char_log_probs(story, end=True)
        assert scores.shape == (len(story) + 1,)
        assert float(scores.sum()) == pytest.approx(tinytales.story_log_prob(story), abs=1e-9)


def test_truth_of_a_prefix_uses_the_next_character_distributions() -> None:
    prefix = "Once upon a time, there was a shy kid named Ben. Ben had a"
    scores = truth_char_log_probs(prefix)
    assert scores.shape == (len(prefix),)
    # "O" starts "Once upon a time" (probability 0.6); everything else is forced until the trait.
    assert float(scores[0]) == pytest.approx(math.log(0.6))
    shy = prefix.index("shy")
    expected = math.log(tinytales.next_char_distribution(prefix[:shy])["s"])
    assert float(scores[shy]) == pytest.approx(expected)
    assert float(scores[1:shy].sum()) == pytest.approx(0.0, abs=1e-12)


def test_truth_scores_minus_inf_from_the_first_impossible_character() -> None:
    scores = truth_char_log_probs("Once upon a tXme", end=True)
    first_bad = "Once upon a tXme".index("X")
    assert bool(torch.isfinite(scores[:first_bad]).all())
    assert bool(torch.isneginf(scores[first_bad:]).all())
    # A prefix is not a complete story: its end scores -inf, the characters do not.
    unfinished = truth_char_log_probs("Once upon", end=True)
    assert bool(torch.isfinite(unfinished[:-1]).all()) and math.isinf(float(unfinished[-1]))


def test_truth_rejects_end_inside_the_text() -> None:
    with pytest.raises(ValueError, match="must not contain END"):
        truth_char_log_probs("Once\nupon")


def test_ranks_are_zero_along_the_grammars_greedy_text() -> None:
    greedy = tinytales.greedy_story(300)
    ranks = truth_char_ranks(greedy)
    assert ranks.shape == (300,) and ranks.dtype == torch.int64
    assert int(ranks.abs().sum()) == 0


def test_rank_counts_the_characters_the_grammar_finds_more_likely() -> None:
    story = tinytales.generate_stories(1, seed=7)[0]
    ranks = truth_char_ranks(story)
    distributions = tinytales.next_char_distributions(story)
    for position in range(len(story)):
        distribution = distributions[position]
        chosen = distribution[story[position]]
        assert int(ranks[position]) == sum(p > chosen for p in distribution.values())
    # The hero's trait: "shy" is not the most likely trait, "little" is.
    prefix = "Once upon a time, there was a "
    assert int(truth_char_ranks(prefix + "s")[-1]) > 0
    assert int(truth_char_ranks(prefix + "l")[-1]) == 0


def test_ranks_are_minus_one_from_the_first_impossible_character() -> None:
    text = "Once upon a tXme"
    ranks = truth_char_ranks(text)
    bad = text.index("X")
    assert bool((ranks[:bad] >= 0).all()) and bool((ranks[bad:] == -1).all())
    assert truth_char_ranks("").shape == (0,)
    with pytest.raises(ValueError, match="must not contain END"):
        truth_char_ranks("Once\nupon")
    with pytest.raises(TypeError, match="text must be a str"):
        truth_char_ranks(7)  # type: ignore[arg-type]
