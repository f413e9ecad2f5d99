"""Confident and uncertain steps, what top-k and top-p keep at one step, and paired comparisons
of sampler settings over whole stories."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.confidence import (
    MEASURES,
    EndingCut,
    Kept,
    compare_rows,
    confident_step,
    ending_cut,
    format_paired,
    format_with_se,
    kept_by_top_k,
    kept_by_top_p,
    measure_with_se,
    setting_sweep,
    step_entropies,
    step_top_probs,
    uncertain_step,
)
from lessonlib.analysis.distributions import CONFIDENT, LONG_TAILED, QUIZ_NUCLEUS, as_probs
from lessonlib.analysis.sweeps import SampleScores, score_samples
from lessonlib.bigram import load_bigram
from lessonlib.generation import generate
from lessonlib.tokenizer import CharTokenizer


def logits_of(values) -> torch.Tensor:
    return torch.log(as_probs(values))


def steps() -> torch.Tensor:
    """Four steps over 8 tokens: uniform, sharp, medium, sharp."""
    rows = [
        [0.125] * 8,
        [0.97] + [0.03 / 7] * 7,
        [0.5, 0.3, 0.2] + [0.0] * 5,
        [0.99] + [0.01 / 7] * 7,
    ]
    return torch.stack([logits_of(row) for row in rows])


def test_top_probs_and_entropies_per_step():
    assert step_top_probs(steps()).tolist() == pytest.approx([0.125, 0.97, 0.5, 0.99])
    entropies = step_entropies(steps())
    assert float(entropies[0]) == pytest.approx(math.log(8))
    # Zero-probability tokens (-inf logits) add nothing: the third step has 3 live tokens.
    expected = -sum(q * math.log(q) for q in (0.5, 0.3, 0.2))
    assert float(entropies[2]) == pytest.approx(expected)
    assert entropies.dtype == torch.float64


def test_confident_step_is_the_first_above_the_threshold_from_start():
    assert confident_step(steps(), min_top_prob=0.95) == 1
    assert confident_step(steps(), min_top_prob=0.95, start=2) == 3
    assert confident_step(steps(), min_top_prob=0.98) == 3
    with pytest.raises(ValueError, match="no step at or after start=0"):
        confident_step(steps(), min_top_prob=0.995)


def test_uncertain_step_has_the_highest_entropy():
    assert uncertain_step(steps()) == 0
    assert uncertain_step(steps(), start=1) == 2


def test_top_k_keeps_k_tokens_whatever_the_shape_and_top_p_tracks_it():
    for values, top_p_count in ((CONFIDENT, 1), (QUIZ_NUCLEUS, 4), (LONG_TAILED, 17)):
        logits = logits_of(values)
        assert kept_by_top_k(logits, 5).count == 5
        assert kept_by_top_p(logits, 0.9).count == top_p_count
    quiz = logits_of(QUIZ_NUCLEUS)
    assert kept_by_top_k(quiz, 5) == Kept(rule="top-k (k=5)", count=5, mass=pytest.approx(0.98))
    assert kept_by_top_p(quiz, 0.9) == Kept(rule="top-p (p=0.9)", count=4, mass=pytest.approx(0.93))


def test_bad_input_names_the_parameter():
    with pytest.raises(
        TypeError, match=r"logits must be a torch\.Tensor of shape \(B, V\), got list"
    ):
        step_top_probs([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"logits must have shape \(B, V\), got shape \(5,\)"):
        step_entropies(torch.zeros(5))
    with pytest.raises(ValueError, match="start must be an int in 0..3"):
        uncertain_step(steps(), start=4)
    with pytest.raises(ValueError, match=r"min_top_prob must be a finite number in \[0, 1\]"):
        confident_step(steps(), min_top_prob=1.5)
    with pytest.raises(ValueError, match=r"shape \(V,\)"):
        kept_by_top_p(steps(), 0.9)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        kept_by_top_k([0.0, 1.0], 1)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        kept_by_top_k(logits_of(QUIZ_NUCLEUS), 0)


def test_integer_logits_are_rejected_naming_their_dtype():
    # The dtype, not the type name "Tensor", and not the values.
    with pytest.raises(
        TypeError,
        match=r"logits must have a floating dtype \(e\.g\. torch\.float32\), got torch\.int64",
    ):
        step_top_probs(torch.tensor([[0, 1, 2]]))


# ----- whole stories ------------------------------------------------------------------------------


def row_of(texts: list[str], label: str = "x") -> SampleScores:
    """A sweep row scored from whole stories (prompt ""); a text ending in "!" is unfinished."""
    finished = [not text.endswith("!") for text in texts]
    return score_samples("", texts, finished, temperature=1.0, label=label)


STORIES = tinytales.generate_stories(6, seed=0)
BROKEN = [story.replace(".", " zz.", 1) for story in STORIES]  # off the grammar


def test_setting_sweep_pairs_the_stories_of_every_setting():
    model, tokenizer = load_bigram()
    kwargs = {"prompt": "", "samples": 10, "max_new_tokens": 8, "seed": 4, "batch_size": 4}
    settings = [{"temperature": 1.0}, {"top_p": 0.5}, {}, {"top_k": 2, "temperature": 0.7}]
    rows = setting_sweep(model, tokenizer, settings=settings, **kwargs)
    assert [row.label for row in rows] == ["tau 1", "top-p 0.5", "tau 1", "top-k 2, tau 0.7"]
    assert [row.samples for row in rows] == [10] * 4 and len(rows[0].texts) == 10
    assert [row.temperature for row in rows] == [1.0, 1.0, 1.0, 0.7]
    # The same setting twice: the same seeds, so the same stories, batch by batch.
    assert rows[0].texts == rows[2].texts
    # Batch 0 is generate() with the first seed drawn from `seed`.
    first_seed = int(
        torch.randint(0, 2**31 - 1, (3,), generator=torch.Generator().manual_seed(4))[0]
    )
    batch = generate(
        model,
        [""] * 4,
        tokenizer=tokenizer,
        max_new_tokens=8,
        generator=torch.Generator().manual_seed(first_seed),
    )
    assert rows[0].texts[:4] == tuple(batch.texts)
    # Reproducible, with or without a progress bar; another seed draws other stories.
    again = setting_sweep(model, tokenizer, settings=settings[:1], progress=True, **kwargs)
    assert again[0].texts == rows[0].texts
    other = setting_sweep(model, tokenizer, settings=settings[:1], **{**kwargs, "seed": 5})
    assert other[0].texts != rows[0].texts


def test_setting_sweep_rejects_bad_arguments():
    model, tokenizer = load_bigram()
    kwargs = {"prompt": "", "samples": 2, "max_new_tokens": 4, "seed": 0}
    with pytest.raises(TypeError, match="settings must be a sequence of dicts"):
        setting_sweep(model, tokenizer, settings={"top_p": 0.5}, **kwargs)
    with pytest.raises(ValueError, match="unknown keys"):
        setting_sweep(model, tokenizer, settings=[{"top_q": 0.5}], **kwargs)
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        setting_sweep(model, tokenizer, settings=[{}], **{**kwargs, "samples": 0})
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got True"):
        setting_sweep(model, tokenizer, settings=[{}], batch_size=True, **kwargs)


def test_measures_and_their_standard_errors():
    assert all(tinytales.is_valid_story(s) for s in STORIES)
    assert not any(tinytales.is_valid_story(s) for s in BROKEN)
    row = row_of(STORIES[:2] + BROKEN[2:4])
    valid, se = measure_with_se(row, prompt="", measure="valid")
    # Values 1, 1, 0, 0: mean 1/2, sample variance 1/3, standard error sqrt(1/3 / 4).
    assert valid == 0.5 == row.valid and se == pytest.approx(math.sqrt(1 / 12))
    repetition, repetition_se = measure_with_se(row, prompt="", measure="repetition")
    assert repetition == pytest.approx(row.repetition) and repetition_se >= 0
    distinct, distinct_se = measure_with_se(row, prompt="", measure="distinct_2")
    assert distinct == pytest.approx(row.distinct_2) and distinct_se > 0
    # The same story n times: nothing varies, so no standard error.
    assert measure_with_se(row_of(STORIES[:1] * 4), prompt="", measure="distinct_4")[1] == 0


def test_compare_rows_uses_the_per_story_differences():
    first = row_of(STORIES)
    second = row_of(STORIES[:4] + BROKEN[4:])  # the same stories, the last two broken
    paired = compare_rows(first, second, prompt="", measure="valid")
    assert (paired.first, paired.second, paired.samples) == (1.0, pytest.approx(4 / 6), 6)
    assert paired.difference == pytest.approx(1 / 3)
    # Differences 0, 0, 0, 0, 1, 1: mean 1/3, sample variance 4/15, over 6 stories.
    assert paired.se == pytest.approx(math.sqrt(4 / 15 / 6))
    assert paired.within_noise  # 1/3 is less than two standard errors (0.42)
    everything = compare_rows(first, row_of(BROKEN), prompt="", measure="valid")
    assert everything.difference == 1 and everything.se == 0 and not everything.within_noise
    same = compare_rows(first, first, prompt="", measure="distinct_2")
    assert same.difference == 0 and same.se == 0 and same.within_noise


def test_paired_distinct_n_is_paired_by_story():
    # Story i of the second row is story i of the first plus the same sentence: the stories
    # that make a row varied do so in both rows, and the paired jackknife sees only the change.
    first = row_of(STORIES)
    second = row_of([story + " Then the sun came out." for story in STORIES])
    paired = compare_rows(first, second, prompt="", measure="distinct_2")
    assert paired.first == pytest.approx(first.distinct_2)
    assert paired.second == pytest.approx(second.distinct_2)
    assert paired.difference > 0  # the repeated sentence lowers distinct-2
    own = [measure_with_se(row, prompt="", measure="distinct_2")[1] for row in (first, second)]
    assert 0 < paired.se < math.hypot(*own) / 2


def test_compare_rows_rejects_what_cannot_be_paired():
    first = row_of(STORIES)
    with pytest.raises(ValueError, match=r"measure must be one of \('valid'"):
        compare_rows(first, first, prompt="", measure="validity")
    with pytest.raises(ValueError, match="as many stories"):
        compare_rows(first, row_of(STORIES[:4]), prompt="", measure="valid")
    with pytest.raises(ValueError, match="pass the prompt the row was drawn with"):
        compare_rows(first, first, prompt="Once", measure="valid")
    with pytest.raises(TypeError, match="second must be a SampleScores"):
        compare_rows(first, STORIES, prompt="", measure="valid")
    with pytest.raises(ValueError, match="at least 2"):
        measure_with_se(row_of(STORIES[:1]), prompt="", measure="valid")
    assert MEASURES == ("valid", "repetition", "distinct_2", "distinct_4")


def test_an_unfinished_story_is_never_valid_so_texts_give_the_valid_share():
    # Cut before its end marker, a story is not complete: the texts alone give `valid`.
    cut = STORIES[0][:-1] + "!"
    row = row_of([cut, STORIES[1]])
    assert row.valid == 0.5 == measure_with_se(row, prompt="", measure="valid")[0]


def test_format_with_se_is_one_line_per_row_with_errors():
    rows = [row_of(STORIES, "top-p 0.9"), row_of(STORIES[:3] + BROKEN[3:], "top-k 3")]
    lines = format_with_se(rows, prompt="").splitlines()
    assert len(lines) == 3 and "valid (se)" in lines[0] and "distinct-2 (se)" in lines[0]
    assert lines[1].split()[:4] == ["top-p", "0.9", "6", "1.00"]
    assert lines[2].split()[3:5] == ["0.50", "(0.22)"]  # sqrt(0.3 / 6) = 0.2236


def test_format_paired_prints_each_pair_with_its_paired_error():
    rows = [row_of(STORIES, "top-p 0.9"), row_of(STORIES[:3] + BROKEN[3:], "top-k 3")]
    lines = format_paired(
        rows, [("top-p 0.9", "top-k 3"), ("top-k 3", "top-k 3")], prompt=""
    ).splitlines()
    assert lines[0].startswith("paired difference")
    assert "valid (se, in se)" in lines[0] and "distinct-2 (se, in se)" in lines[0]
    assert lines[1].startswith("top-p 0.9 - top-k 3")
    # Validity differs by (0, 0, 0, 1, 1, 1): mean 0.5, se sqrt(0.3 / 6) = 0.2236.
    assert "+0.500 (0.224, +2.2)" in lines[1]
    d = compare_rows(rows[0], rows[1], prompt="", measure="distinct_2")
    assert lines[1].endswith(f"{d.difference:+.3f} ({d.se:.3f}, {d.difference / d.se:+.1f})")
    # A row against itself: no spread, so the difference is exact.
    assert lines[2].count("+0.000 (0.000, exact)") == 2
    one = format_paired(rows, [("top-p 0.9", "top-k 3")], prompt="", measures=["repetition"])
    assert "repeated 4-grams (se, in se)" in one and "valid" not in one
    with pytest.raises(ValueError, match="pairs name the label 'top-p 1'"):
        format_paired(rows, [("top-p 0.9", "top-p 1")], prompt="")
    with pytest.raises(ValueError, match="measure must be one of"):
        format_paired(rows, [("top-p 0.9", "top-k 3")], prompt="", measures=["validity"])


TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)


class LastCharModel:
    """Logits that depend only on the last token: row `table[last token]`."""

    vocab_size = len(tinytales.ALPHABET)
    block_size = 600

    def __init__(self, boosts: dict[str, dict[str, float]]) -> None:
        self.table = torch.zeros(self.vocab_size, self.vocab_size)
        for last, row in boosts.items():
            for char, logit in row.items():
                self.table[TOKENIZER.encode(last)[0], TOKENIZER.encode(char)[0]] = logit

    def __call__(self, token_ids: torch.Tensor, kv_cache=None) -> torch.Tensor:
        return self.table[token_ids]


def ending_starts(story: str) -> list[int]:
    """Where a complete story could have ended instead: after each of its middle sentences."""
    greeting_end = story.rindex("'") + 1  # the friend's greeting closes the fixed frame
    ending = max(story.rfind(" " + e) for e in ("In the end", "That night", "At last"))
    middle = story[greeting_end : ending + 1]
    return [greeting_end + i + 2 for i, char in enumerate(middle) if char == "."]


def test_ending_cut_counts_what_the_nucleus_kept_where_a_story_could_end():
    stories = tinytales.generate_stories(8, seed=3)
    starts = [s for story in stories for s in ending_starts(story)]
    that = sum(story[s : s + 2] == "Th" for story in stories for s in ending_starts(story))
    assert len(starts) > len(stories) and that > 0  # or the test would say little
    # After a space, I and A share most of the mass; after "h", "e" dwarfs the "a" of "That".
    model = LastCharModel({" ": {"I": 5.0, "A": 4.9}, "h": {"e": 5.0}})
    wide = ending_cut(model, TOKENIZER, stories, p=0.5)
    n = len(starts)
    assert wide == EndingCut(
        p=0.5, stories=8, starts=n, several=n, kept_i=n, kept_a=n, that_steps=that, kept_that=0
    )
    # A smaller nucleus holds I alone.
    narrow = ending_cut(model, TOKENIZER, stories, p=0.3, progress=True)
    assert (narrow.starts, narrow.several, narrow.kept_i, narrow.kept_a) == (n, 0, n, 0)
    # Off the grammar, the walk stops: a story whose frame is broken has no place to end.
    broken = stories[0].replace("named", "nomed", 1)
    assert ending_cut(model, TOKENIZER, [broken], p=0.5).starts == 0


def test_ending_cut_rejects_bad_arguments():
    model = LastCharModel({})
    story = tinytales.generate_stories(1, seed=0)[0]
    with pytest.raises(TypeError, match="texts must be a non-empty sequence of str"):
        ending_cut(model, TOKENIZER, story, p=0.5)
    with pytest.raises(TypeError, match="texts must be a non-empty sequence of str"):
        ending_cut(model, TOKENIZER, [story, 3], p=0.5)
    with pytest.raises(ValueError, match="block_size=600"):
        ending_cut(model, TOKENIZER, [story * 4], p=0.5)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\], got 0"):
        ending_cut(model, TOKENIZER, [story], p=0)
    with pytest.raises(TypeError, match=r"p must be a number in \(0, 1\], got None"):
        ending_cut(model, TOKENIZER, [story], p=None)
