"""Beam search against exact search, greedy decoding and independent rescoring."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lessonlib.beam_search import (
    beam_search,
    beam_search_many,
    exhaustive_search,
    most_probable_continuation,
    normalised_score,
)
from lessonlib.bigram import BigramModel, load_bigram
from lessonlib.generation import generate, prompt_logits
from lessonlib.model import GPT
from lessonlib.scoring import text_log_prob
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import lively_gpt

TOY = CharTokenizer("\nabc", boundary="\n")  # three letters and the end token
WIDE = CharTokenizer("\nabcdefgh .", boundary="\n")


def random_gpt(tokenizer: CharTokenizer, seed: int, *, block_size: int = 32) -> GPT:
    """A small random GPT with spread-out logits, so that hypotheses differ clearly."""
    return lively_gpt(tokenizer.vocab_size, seed=seed, block_size=block_size)


def toy_bigram(
    rows: dict[str, list[int]], symbols: str = "·ab"
) -> tuple[BigramModel, CharTokenizer]:
    """A bigram over `symbols` from hand-written counts (no smoothing: unseen pairs impossible)."""
    counts = torch.tensor([rows[s] for s in symbols])
    return BigramModel(counts, smoothing=0.0, symbols=symbols), CharTokenizer(symbols, boundary="·")


def assert_same_hypotheses(found, expected) -> None:
    """Same texts in the same order, same scores up to float32 rounding of the logits."""
    assert [h.text for h in found] == [h.text for h in expected]
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 0.8])
def test_a_beam_wider_than_every_candidate_finds_every_finished_sequence(seed, length_penalty):
    """Width 4**5 keeps every extension of every step, so the search is exhaustive."""
    model = random_gpt(TOY, seed)
    settings = {"tokenizer": TOY, "max_new_tokens": 5, "length_penalty": length_penalty}
    exact = exhaustive_search(model, "ab", **settings)
    beam = beam_search(model, "ab", beam_width=4**5, record_steps=False, **settings)
    assert len(exact) == 1 + 3 + 9 + 27 + 81  # end after 0..4 letters
    assert beam.best.text == exact[0].text
    assert beam.best.score == pytest.approx(exact[0].score, abs=1e-5)
    assert_same_hypotheses(
        sorted(beam.finished, key=lambda h: h.text), sorted(exact, key=lambda h: h.text)
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_best_first_search_agrees_with_exhaustive_search(seed):
    model = random_gpt(TOY, seed)
    best = most_probable_continuation(model, "c", tokenizer=TOY, max_new_tokens=6)
    exact = exhaustive_search(model, "c", tokenizer=TOY, max_new_tokens=6)
    assert best.text == exact[0].text
    # One row at a time against whole batches: float32 logits may differ in the last bits.
    assert best.log_prob == pytest.approx(exact[0].log_prob, abs=1e-6)


def test_a_narrow_beam_can_miss_the_best_sequence():
    # Lesson 06's toy: '·' -> 'a' is likelier than 'b', but after 'a' probability spreads out;
    # after 'b' it does not. Every greedy step has a strict winner, so no tie rule decides it.
    model, tokenizer = toy_bigram({"·": [0, 6, 4], "a": [2, 1, 1], "b": [9, 0, 1]})
    for current in "·a":
        top_two = model.probs(current).topk(2).values
        assert top_two[0] > top_two[1]
    exact = exhaustive_search(model, "", tokenizer=tokenizer, max_new_tokens=4)
    narrow = beam_search(model, "", tokenizer=tokenizer, beam_width=1, max_new_tokens=4)
    wide = beam_search(model, "", tokenizer=tokenizer, beam_width=2, max_new_tokens=4)
    greedy = generate(model, "", tokenizer=tokenizer, max_new_tokens=4, temperature=0.0)
    assert exact[0].text == "b"  # 0.4 * 0.9 = 0.36 beats 'a·' (0.6 * 0.5 = 0.3)
    assert math.exp(exact[0].log_prob) == pytest.approx(0.36)
    assert narrow.best.text == greedy.text == "a"
    assert math.exp(narrow.best.log_prob) == pytest.approx(0.3)
    assert wide.best.text == "b"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prompt", ["", "ab", "h."])
def test_width_one_is_greedy_decoding(seed, prompt):
    model = random_gpt(WIDE, seed)
    greedy = generate(model, prompt, tokenizer=WIDE, max_new_tokens=60, temperature=0.0)
    beam = beam_search(model, prompt, tokenizer=WIDE, beam_width=1, max_new_tokens=60)
    assert beam.best.text == greedy.text
    assert beam.best.finished == greedy.finished[0]
    assert list(beam.best.token_ids) == greedy.token_ids[0]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_scores_are_the_models_log_probabilities(length_penalty):
    model = random_gpt(WIDE, 5)
    prompt = "abc"
    result = beam_search(
        model,
        prompt,
        tokenizer=WIDE,
        beam_width=4,
        max_new_tokens=25,
        length_penalty=length_penalty,
    )
    before = text_log_prob(model, prompt, tokenizer=WIDE)
    checked = [h for step in result.steps for h in step.kept + step.ended]
    checked += list(result.finished) + list(result.unfinished)
    assert any(h.finished for h in checked) and any(not h.finished for h in checked)
    for h in checked:
        whole = text_log_prob(model, prompt + h.text, tokenizer=WIDE, end=h.finished)
        assert h.log_prob == pytest.approx(whole - before, abs=1e-4)
        assert h.score == pytest.approx(h.log_prob / h.length**length_penalty)
        assert h.length == len(h.text) + h.finished  # the end token counts


def test_length_penalty_changes_the_winner():
    # 'a' then the end is likely (0.5); a run of b's costs little per token but much in total.
    model, tokenizer = toy_bigram({"·": [0, 1, 1], "a": [1, 0, 0], "b": [1, 0, 19]})
    settings = {"tokenizer": tokenizer, "beam_width": 2, "max_new_tokens": 20}
    raw = beam_search(model, "", length_penalty=0.0, **settings)
    per_token = beam_search(model, "", length_penalty=1.0, **settings)
    assert raw.best.text == "a"
    assert per_token.best.text == "b" * 19
    for alpha, result in [(0.0, raw), (1.0, per_token)]:
        exact = exhaustive_search(
            model, "", tokenizer=tokenizer, max_new_tokens=20, length_penalty=alpha
        )
        assert result.best.text == exact[0].text
    # The short winner is still there, ranked by the formula.
    a = next(h for h in per_token.finished if h.text == "a")
    assert a.score == pytest.approx(normalised_score(math.log(0.5), 2, length_penalty=1.0))
    assert per_token.best.score > a.score


def test_cached_and_uncached_search_agree_past_the_block_size():
    model = random_gpt(WIDE, 7, block_size=12)
    settings = {"tokenizer": WIDE, "beam_width": 3, "max_new_tokens": 30, "min_new_tokens": 30}
    cached = beam_search(model, "ab", **settings)
    plain = beam_search(model, "ab", use_cache=False, **settings)
    cached_steps = [[h.text for h in step.kept] for step in cached.steps]
    plain_steps = [[h.text for h in step.kept] for step in plain.steps]
    assert cached_steps == plain_steps
    assert [h.log_prob for h in cached.unfinished] == pytest.approx(
        [h.log_prob for h in plain.unfinished], abs=1e-4
    )
    # The beam really branched, so cache rows were moved.
    assert len({h.text[:3] for h in cached.unfinished}) < len(cached.unfinished)


def test_each_step_keeps_the_best_extensions_of_the_previous_beam():
    model = random_gpt(WIDE, 3)
    result = beam_search(model, "", tokenizer=WIDE, beam_width=3, max_new_tokens=20)
    assert result.steps[0].step == 1
    first = torch.log_softmax(prompt_logits(model, "", tokenizer=WIDE).double(), dim=-1)
    first[WIDE.boundary_id] = -math.inf
    top = first.topk(3)
    assert [h.text for h in result.steps[0].kept] == [WIDE.decode([i]) for i in top.indices]
    assert [h.log_prob for h in result.steps[0].kept] == pytest.approx(top.values.tolist())
    for before, after in itertools.pairwise(result.steps):
        parents = {h.text for h in before.kept}
        assert all(h.text[:-1] in parents for h in after.kept)
        assert all(h.text in parents for h in after.ended)
        assert [h.log_prob for h in after.kept] == sorted(
            [h.log_prob for h in after.kept], reverse=True
        )
        assert len(after.kept) == 3


def test_search_stops_when_the_finished_cannot_be_beaten():
    model = random_gpt(TOY, 1)
    result = beam_search(model, "", tokenizer=TOY, beam_width=2, max_new_tokens=40)
    assert result.stop_reason == "unbeatable"
    assert len(result.steps) < 40
    assert len(result.finished) >= 2
    assert result.finished[1].score >= max(h.log_prob for h in result.unfinished)


def test_the_stop_rule_waits_while_a_longer_hypothesis_could_still_win():
    # After 'a' the name ends (0.6) or takes 'b' (0.4), which is followed by 'cdefgh' for sure.
    symbols = "·abcdefgh"
    chain = {s: [int(t == n) for t in symbols] for s, n in zip("bcdefgh", "cdefgh·", strict=True)}
    rows = {"·": [0, 1, 0, 0, 0, 0, 0, 0, 0], "a": [3, 0, 2, 0, 0, 0, 0, 0, 0], **chain}
    model, tokenizer = toy_bigram(rows, symbols)
    settings = {"tokenizer": tokenizer, "max_new_tokens": 10, "length_penalty": 1.0}
    result = beam_search(model, "", beam_width=1, **settings)
    # After two steps 'a·' (log 0.6 / 2 = -0.26) beats 'ab' as it stands (log 0.4 / 3 = -0.31
    # per token), but 'ab' may still reach log 0.4 / 10; so the search must go on.
    assert result.best.text == "abcdefgh"
    assert result.best.score == pytest.approx(math.log(0.4) / 9)
    assert result.best.text == exhaustive_search(model, "", **settings)[0].text


def test_min_new_tokens_searches_fixed_length_text():
    model = random_gpt(TOY, 2)
    result = beam_search(
        model, "a", tokenizer=TOY, beam_width=27, max_new_tokens=3, min_new_tokens=3
    )
    assert result.finished == () and result.stop_reason == "max_new_tokens"
    # Brute force over the 27 three-letter continuations.
    scored = {
        "".join(letters): text_log_prob(model, "a" + "".join(letters), tokenizer=TOY)
        for letters in itertools.product("abc", repeat=3)
    }
    best = max(scored, key=scored.get)
    assert result.best.text == best
    assert result.best.log_prob == pytest.approx(
        scored[best] - text_log_prob(model, "a", tokenizer=TOY), abs=1e-5
    )


def test_the_census_bigram_works_and_its_mode_is_found():
    model, tokenizer = load_bigram()
    mode = most_probable_continuation(model, "", tokenizer=tokenizer, max_new_tokens=12)
    beam = beam_search(model, "", tokenizer=tokenizer, beam_width=8, max_new_tokens=12)
    assert beam.best.text == mode.text
    assert beam.best.log_prob == pytest.approx(mode.log_prob)
    # Every finished name is at least as unlikely as the mode.
    assert all(h.log_prob <= mode.log_prob + 1e-12 for h in beam.finished)


def test_several_prompts_match_one_at_a_time():
    model = random_gpt(WIDE, 4)
    prompts = ["ab", "h ", "c."]
    together = beam_search_many(model, prompts, tokenizer=WIDE, beam_width=3, max_new_tokens=30)
    for prompt, result in zip(prompts, together, strict=True):
        alone = beam_search(model, prompt, tokenizer=WIDE, beam_width=3, max_new_tokens=30)
        assert result.prompt == prompt
        assert_same_hypotheses(result.finished, alone.finished)
        assert [h.text for h in result.unfinished] == [h.text for h in alone.unfinished]


def test_exact_searches_report_what_they_cannot_do():
    model, tokenizer = toy_bigram({"·": [0, 1, 1], "a": [0, 1, 0], "b": [1, 0, 1]})
    # From 'a' the only continuation is more a's: no finished name exists.
    assert most_probable_continuation(model, "a", tokenizer=tokenizer, max_new_tokens=5) is None
    with pytest.raises(ValueError, match="max_sequences=10"):
        exhaustive_search(random_gpt(TOY, 0), "", tokenizer=TOY, max_new_tokens=4, max_sequences=10)
    with pytest.raises(ValueError, match="max_expansions=2"):
        most_probable_continuation(
            model, "a", tokenizer=tokenizer, max_new_tokens=50, max_expansions=2
        )


def test_bad_arguments_raise_clear_errors():
    model = random_gpt(WIDE, 0)
    search = {"tokenizer": WIDE, "beam_width": 2, "max_new_tokens": 5}
    with pytest.raises(ValueError, match="beam_width must be an int >= 1, got 0"):
        beam_search(model, "a", **{**search, "beam_width": 0})
    with pytest.raises(TypeError, match="beam_width must be an int >= 1, got True"):
        beam_search(model, "a", **{**search, "beam_width": True})
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got 0"):
        beam_search(model, "a", **{**search, "max_new_tokens": 0})
    with pytest.raises(ValueError, match="min_new_tokens must be an int >= 1 or None, got 0"):
        beam_search(model, "a", min_new_tokens=0, **search)
    with pytest.raises(ValueError, match="length_penalty must be a finite number >= 0, got -1.0"):
        beam_search(model, "a", length_penalty=-1, **search)
    with pytest.raises(ValueError, match="got nan"):
        beam_search(model, "a", length_penalty=float("nan"), **search)
    with pytest.raises(TypeError, match="length_penalty must be a real number >= 0"):
        beam_search(model, "a", length_penalty="1", **search)
    with pytest.raises(ValueError, match="must not contain the boundary"):
        beam_search(model, "a\nb", **search)
    with pytest.raises(ValueError, match="same length in tokens"):
        beam_search_many(model, ["a", "abc"], **search)
    with pytest.raises(TypeError, match="prompt must be a str"):
        beam_search(model, ["a"], **search)
    with pytest.raises(ValueError, match="'z' at position 0"):
        beam_search(model, "z", **search)
    with pytest.raises(ValueError, match="tokenizer has 4 tokens but the model's vocab_size is 11"):
        beam_search(model, "a", **{**search, "tokenizer": TOY})
    with pytest.raises(ValueError, match="length must be an int >= 1, got 0"):
        normalised_score(-1.0, 0, length_penalty=1.0)
