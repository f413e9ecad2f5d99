"""Tests for lessonlib.analysis.tail: tail masses, ranks, and the search for a tail-token break."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessonlib import tinytales
from lessonlib.analysis.tail import (
    BreakCounts,
    PairedRuns,
    StoryBreak,
    count_breaks,
    find_tail_break,
    first_impossible_index,
    first_tail_draws,
    format_breaks,
    mark_token,
    pair_divergence,
    paired_top_k,
    story_breaks,
    summarize_tail,
    tail_mass_by_step,
    token_probs,
    token_ranks,
    valid_stories,
)
from lessonlib.generation import Generation
from lessonlib.sampling import filter_top_k
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import StubModel

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
STORIES = tinytales.generate_stories(3, seed=7)


def log_probs(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.log(torch.tensor(rows, dtype=torch.float64))


def test_tail_mass_by_step_on_a_hand_example():
    logits = log_probs((0.5, 0.3, 0.2), (0.9, 0.06, 0.04))
    masses = tail_mass_by_step(logits, ks=[1, 2, 3])
    assert masses.shape == (3, 2)
    expected = torch.tensor([[0.5, 0.1], [0.2, 0.04], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(masses, expected)


def test_tail_mass_keeps_ties_with_the_kth_value():
    # Two tokens tie for second place: k = 2 keeps both, so only the last token is in the tail.
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    probs = torch.softmax(logits.double(), dim=-1)
    assert float(tail_mass_by_step(logits, ks=[2])[0, 0]) == pytest.approx(float(probs[0, 3]))


def test_summarize_tail_counts_steps_strictly_above_the_threshold():
    logits = log_probs((0.5, 0.3, 0.2), (0.99, 0.01, 0.0), (0.995, 0.004, 0.001))
    k1, k2 = summarize_tail(logits, ks=[1, 2], threshold=0.01)
    assert (k1.k, k1.steps, k1.threshold) == (1, 3, 0.01)
    assert k1.mean == pytest.approx((0.5 + 0.01 + 0.005) / 3)
    assert k1.max == pytest.approx(0.5)
    # 0.01 itself is not above 0.01; 0.005 is below it.
    assert k1.steps_above == 1
    assert k2.max == pytest.approx(0.2)
    assert k2.steps_above == 1


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-3, 3), min_size=2, max_size=8),
    k=st.integers(1, 8),
    data=st.data(),
)
def test_rank_at_most_k_is_exactly_what_top_k_keeps(values, k, data):
    # Small integer logits make ties common, which is where a rank definition can go wrong.
    logits = torch.tensor([values], dtype=torch.float32)
    token = data.draw(st.integers(0, len(values) - 1))
    rank = int(token_ranks(logits, [token])[0])
    kept = bool(torch.isfinite(filter_top_k(logits, k))[0, token])
    assert (rank <= k) == kept
    assert 1 <= rank <= len(values)


def test_token_ranks_and_probs_on_a_hand_example():
    logits = log_probs((0.1, 0.6, 0.3), (0.25, 0.25, 0.5))
    assert token_ranks(logits, [0, 1]).tolist() == [3, 2]
    assert token_ranks(logits, torch.tensor([1, 2])).tolist() == [1, 1]
    torch.testing.assert_close(
        token_probs(logits, [0, 1]), torch.tensor([0.1, 0.25], dtype=torch.float64)
    )


def test_ranks_and_probs_reject_mismatched_input():
    logits = torch.zeros(3, 5)
    with pytest.raises(ValueError, match=r"token_ids must have shape \(3,\)"):
        token_ranks(logits, [0, 1])
    with pytest.raises(TypeError, match="token_ids must hold integers"):
        token_probs(logits, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, V\)"):
        token_ranks(torch.zeros(5), [0])
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        token_ranks(torch.zeros(3, 5, dtype=torch.long), [0, 1, 2])
    with pytest.raises(ValueError, match=r"token_ids must be in 0\.\.4, got 5"):
        token_probs(logits, [0, 5, 1])


def test_tail_functions_reject_bad_ks_and_threshold():
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"ks\[1\] must be an int >= 1, got 0"):
        tail_mass_by_step(logits, ks=[1, 0])
    with pytest.raises(TypeError, match="ks must be a non-empty sequence"):
        tail_mass_by_step(logits, ks=[])
    with pytest.raises(
        ValueError, match=r"threshold must be a finite number in \[0, 1\], got 1\.5"
    ):
        summarize_tail(logits, ks=[1], threshold=1.5)
    with pytest.raises(ValueError, match=r"logits must not be empty, got shape \(0, 4\)"):
        summarize_tail(torch.zeros(0, 4), ks=[1])


def impossible_char_after(prefix: str) -> str:
    """A character of the alphabet that no story has after `prefix` (END excluded)."""
    possible = tinytales.next_char_distribution(prefix)
    return next(c for c in tinytales.ALPHABET if c != tinytales.END and c not in possible)


def test_first_impossible_index_of_valid_stories_and_prefixes():
    for story in STORIES:
        assert first_impossible_index(story, ended=True) is None
        assert first_impossible_index(story[:50], ended=False) is None
    assert first_impossible_index("", ended=False) is None


def test_first_impossible_index_finds_an_early_end():
    # Every prefix of the story is possible, but the story cannot end halfway through.
    half = STORIES[0][:60]
    assert first_impossible_index(half, ended=True) == 60


@pytest.mark.parametrize("position", [0, 1, 17, 59, 150])
def test_first_impossible_index_finds_a_wrong_character(position):
    story = STORIES[1]
    broken = story[:position] + impossible_char_after(story[:position]) + story[position + 1 :]
    assert first_impossible_index(broken, ended=True) == position
    assert first_impossible_index(broken, ended=False) == position
    assert not tinytales.is_valid_story(broken)


def test_first_impossible_index_agrees_with_a_linear_scan():
    story = STORIES[2]
    for position in range(0, len(story), 23):
        broken = story[:position] + impossible_char_after(story[:position]) + story[position:]
        linear = next(
            i
            for i in range(len(broken) + 1)
            if broken[i] not in tinytales.next_char_distribution(broken[:i])
        )
        assert first_impossible_index(broken, ended=False) == linear


def ranked_logits(token_ids: list[int], ranks: dict[int, int]) -> torch.Tensor:
    """Logits (steps, V) where step s puts its drawn token at rank ranks.get(s, 1)."""
    vocab = TOKENIZER.vocab_size
    logits = torch.linspace(0.0, -8.0, vocab).repeat(len(token_ids), 1)
    for step, token in enumerate(token_ids):
        rank = ranks.get(step, 1)
        # Shuffle each row so that the drawn token sits at position rank - 1 of the descending order.
        order = [t for t in range(vocab) if t != token]
        order.insert(rank - 1, token)
        row = torch.empty(vocab)
        row[torch.tensor(order)] = torch.linspace(0.0, -8.0, vocab)
        logits[step] = row
    return logits


def make_generation(rows: list[tuple[str, str, bool, dict[int, int]]]) -> Generation:
    """A Generation with recorded logits from (prompt, text, finished, ranks of some steps)."""
    token_ids = [
        TOKENIZER.encode(text) + ([TOKENIZER.boundary_id] if finished else [])
        for _, text, finished, _ in rows
    ]
    steps = max(map(len, token_ids))
    logits = torch.full((len(rows), steps, TOKENIZER.vocab_size), -1.0)
    for row, (ids, (_, _, _, ranks)) in enumerate(zip(token_ids, rows)):
        logits[row, : len(ids)] = ranked_logits(ids, ranks)
    return Generation(
        prompts=[prompt for prompt, _, _, _ in rows],
        texts=[text for _, text, _, _ in rows],
        token_ids=token_ids,
        finished=[finished for _, _, finished, _ in rows],
        logits=logits,
    )


def break_at(story: str, position: int) -> str:
    return story[:position] + impossible_char_after(story[:position]) + story[position + 1 :]


def test_find_tail_break_skips_valid_stories_and_head_tokens():
    story = STORIES[0]
    generation = make_generation(
        [
            ("", story, True, {10: 20}),  # a tail draw, but the story stays valid
            ("", break_at(story, 30), True, {30: 2}),  # broken by a rank-2 token: not the tail
            ("", break_at(story, 40), True, {20: 9, 40: 5}),  # broken by a rank-5 token
        ]
    )
    found = find_tail_break(generation, k=3)
    assert isinstance(found, StoryBreak)
    assert (found.row, found.step, found.rank) == (2, 40, 5)
    assert found.prefix == story[:40]
    assert found.char == generation.texts[2][40]
    assert found.token_id == TOKENIZER.encode(found.char)[0]
    assert 0 < found.prob < 1
    expected = torch.softmax(generation.logits[2, 40].double(), dim=-1)[found.token_id]
    assert found.prob == pytest.approx(float(expected))
    assert tinytales.next_char_distribution(found.prefix).get(found.char, 0.0) == 0.0
    # With k = 5 the rank-5 draw is inside the top k, so nothing qualifies.
    assert find_tail_break(generation, k=5) is None


def test_story_breaks_reports_every_broken_row_whatever_its_rank():
    story = STORIES[0]
    generation = make_generation(
        [
            ("", break_at(story, 30), True, {30: 2}),
            ("", story, True, {10: 20}),
            ("", break_at(story, 40), True, {40: 7}),
            ("", story[:90], False, {}),  # cut off by max_new_tokens: a possible prefix, no break
        ]
    )
    breaks = story_breaks(generation)
    assert breaks[1] is None and breaks[3] is None
    assert [(b.row, b.step, b.rank) for b in (breaks[0], breaks[2])] == [(0, 30, 2), (2, 40, 7)]
    assert find_tail_break(generation, k=1) == breaks[0]
    assert find_tail_break(generation, k=2) == breaks[2]


def test_find_tail_break_counts_steps_after_the_prompt_and_an_early_end():
    story = STORIES[1]
    prompt = story[:25]
    generation = make_generation(
        [("", story[:70], True, {70: 4}), (prompt, story[25:70], True, {45: 4})]
    )
    first = find_tail_break(generation, k=3)
    assert (first.row, first.step, first.char, first.prefix) == (0, 70, tinytales.END, story[:70])
    second = find_tail_break(
        Generation(
            generation.prompts[1:],
            generation.texts[1:],
            generation.token_ids[1:],
            generation.finished[1:],
            generation.logits[1:],
        ),
        k=3,
    )
    assert (second.row, second.step, second.prefix) == (0, 45, story[:70])


def test_find_tail_break_needs_recorded_logits_and_a_valid_k():
    generation = make_generation([("", STORIES[0], True, {})])
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        find_tail_break(generation, k=0)
    bare = Generation(generation.prompts, generation.texts, generation.token_ids, [True])
    with pytest.raises(ValueError, match="record_logits=True"):
        find_tail_break(bare, k=3)


def test_mark_token_brackets_the_character_and_the_end():
    assert mark_token("abcdefgh", 3, width=2) == "...bc[d]ef..."
    assert mark_token("abcdefgh", 0, width=2) == "[a]bc..."
    assert mark_token("abc", 3, width=5) == "abc[END]"
    assert mark_token("abcdefgh", 8, width=2) == "...gh[END]"
    with pytest.raises(ValueError, match=r"index must be an int in 0\.\.3, got 4"):
        mark_token("abc", 4)
    assert math.isclose(len(mark_token("x" * 100, 50)), 3 + 30 + 3 + 30 + 3)


def test_count_breaks_sorts_every_story_into_one_group():
    story = STORIES[0]
    generation = make_generation(
        [
            ("", break_at(story, 30), True, {30: 2}),  # inside the top 3
            ("", story, True, {10: 20}),  # valid despite a tail draw
            ("", break_at(story, 40), True, {40: 7}),  # outside the top 3
            ("", story[:90], False, {}),  # cut off by the budget: unfinished, no break
            ("", break_at(story, 50), True, {}),  # at the model's favourite
            ("", story[:90], True, {}),  # ended too early: a break at END, rank 1
        ]
    )
    assert valid_stories(generation) == [False, True, False, False, False, False]
    assert count_breaks(generation, k=3) == BreakCounts(
        k=3, samples=6, valid=1, unfinished=1, rank_1=2, inside=1, outside=1
    )
    # With k = 1 every break below rank 1 is in the tail.
    one = count_breaks(generation, k=1)
    assert (one.rank_1, one.inside, one.outside) == (2, 0, 2)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        count_breaks(generation, k=0)


def test_first_tail_draws_finds_the_first_step_ranked_outside_k():
    story = STORIES[0]
    generation = make_generation(
        [("", story, True, {10: 20, 5: 3}), ("", story, True, {}), ("", story, True, {7: 2})]
    )
    assert first_tail_draws(generation, k=3) == [10, None, None]
    assert first_tail_draws(generation, k=2) == [5, None, None]
    assert first_tail_draws(generation, k=1) == [5, None, 7]


def test_pair_divergence_finds_the_first_differing_step():
    one = make_generation([("", "abc", True, {}), ("", "abc", True, {}), ("", "ab", False, {})])
    two = make_generation([("", "abc", True, {}), ("", "axc", True, {}), ("", "abd", True, {})])
    runs = PairedRuns(k=3, unfiltered=one, filtered=two)
    assert pair_divergence(runs) == [None, 1, 2]
    with pytest.raises(TypeError, match="runs must be a PairedRuns"):
        pair_divergence(one)


def ending_stub() -> StubModel:
    """A stub whose rows often end (the boundary ranks high) and sometimes draw from the tail."""
    model = StubModel()
    model.table = 2 * model.table
    model.table[:, TOKENIZER.boundary_id] = model.table.amax(dim=1) - 3
    return model


def test_paired_top_k_twins_differ_only_from_the_first_tail_draw():
    model = ending_stub()
    runs = paired_top_k(model, TOKENIZER, k=3, samples=7, max_new_tokens=30, seed=5, chunk_size=3)
    assert runs.k == 3 and len(runs.unfiltered.texts) == len(runs.filtered.texts) == 7
    tails = first_tail_draws(runs.unfiltered, k=3)
    assert pair_divergence(runs) == tails
    # Some twins must differ and some stay identical, some rows end and some run out of budget,
    # or the test says nothing about the pairing and the cut.
    assert any(t is None for t in tails) and any(t is not None for t in tails)
    assert any(runs.unfiltered.finished) and not all(runs.unfiltered.finished)
    # The filtered batch never draws from outside the top k of the raw logits.
    assert first_tail_draws(runs.filtered, k=3) == [None] * 7
    for generation in (runs.unfiltered, runs.filtered):
        for text, ids, ended in zip(generation.texts, generation.token_ids, generation.finished):
            # Each row is cut after its first boundary token, as generate() would stop it.
            assert ids.count(TOKENIZER.boundary_id) == int(ended)
            assert ended == (ids[-1] == TOKENIZER.boundary_id)
            assert TOKENIZER.decode(ids[: len(text)]) == text
            assert len(ids) == (len(text) + 1 if ended else 30)
    again = paired_top_k(model, TOKENIZER, k=3, samples=7, max_new_tokens=30, seed=5, chunk_size=3)
    assert again.filtered.texts == runs.filtered.texts


def test_paired_top_k_rejects_bad_sizes():
    model = StubModel()
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        paired_top_k(model, TOKENIZER, k=3, samples=0, max_new_tokens=5, seed=0)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        paired_top_k(model, TOKENIZER, k=3, samples=2, max_new_tokens=5, seed=0, chunk_size=0)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        paired_top_k(model, TOKENIZER, k=0, samples=2, max_new_tokens=5, seed=0)


def test_format_breaks_is_one_aligned_row_per_twin_batch():
    story = STORIES[0]
    unfiltered = make_generation(
        [
            ("", story, True, {10: 20}),  # valid despite a tail draw
            ("", break_at(story, 40), True, {40: 7}),  # outside the top 3
            ("", break_at(story, 30), True, {30: 2}),  # inside the top 3
        ]
    )
    filtered = make_generation(
        [("", story, True, {}), ("", story, True, {}), ("", break_at(story, 30), True, {30: 2})]
    )
    lines = format_breaks(PairedRuns(k=3, unfiltered=unfiltered, filtered=filtered)).splitlines()
    assert "rank 2-3" in lines[0] and lines[0].endswith("rank > 3")
    assert lines[1].split() == ["no", "filter", "1", "0", "0", "1", "1"]
    assert lines[2].split() == ["top-3", "2", "0", "0", "1", "0"]
    # Every number ends where its column's title ends.
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(TypeError, match="runs must be a PairedRuns"):
        format_breaks(unfiltered)
