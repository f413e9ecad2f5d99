"""Degeneration measures: hand-made texts with known answers, and agreement with the scorers."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.degeneration import (
    DegenerationRow,
    bleu,
    continuation_log_probs,
    ends_in_loop,
    format_table,
    loop_share,
    measure_decoding,
    nats_per_token,
    perplexity,
    sampling_entropy,
    self_bleu,
    self_bleu_scores,
    truth_entropy,
    truth_score,
    word_frequencies,
    word_tokens,
    zipf_coefficient,
    zipf_standard_error,
)
from lessonlib.analysis.recorded import token_log_probs
from lessonlib.checkpoint import load_model
from lessonlib.generation import generate
from lessonlib.scoring import model_char_log_probs, truth_char_log_probs

STORY = (
    "Once upon a time, there was a little kid named Mia. Mia had a happy dog and a red ball. "
    "One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like your "
    "dog.' Mia played with the ball. In the end, Mia and Tom were the best of friends."
)
PROMPT, REST = STORY[:100], STORY[100:]
LOOP = " Mia played with the ball." * 6
HEAD = STORY[: STORY.index(" Mia played")]  # the frame up to the first middle sentence


@pytest.fixture(scope="module")
def shipped():
    return load_model()


def test_story_is_valid():
    # The tests below lean on STORY being a real TinyTales story.
    assert tinytales.is_valid_story(STORY)


# --- words ---------------------------------------------------------------------------------


def test_word_tokens_split_punctuation_off():
    assert word_tokens("Tom said, 'Hi, Mia!'") == [
        "Tom", "said", ",", "'", "Hi", ",", "Mia", "!", "'",
    ]  # fmt: skip
    assert word_tokens("") == []
    with pytest.raises(TypeError, match="text must be a str"):
        word_tokens(3)


def test_word_frequencies_lowercase_and_ignore_punctuation():
    counts = word_frequencies(["The dog. the DOG!", "a dog"])
    assert counts == {"the": 2, "dog": 3, "a": 1}
    with pytest.raises(TypeError, match="texts must be a sequence of str"):
        word_frequencies("a dog")


# --- repetition ----------------------------------------------------------------------------


def test_a_strict_loop_ends_in_a_loop():
    assert ends_in_loop(HEAD + LOOP)


def test_an_irregular_alternation_also_counts():
    # Greedy decoding of the course model alternates two stock sentences in no fixed order:
    # no periodic tail, but the text keeps re-saying what it said.
    a, b = " Mia played with the ball.", " The dog was very little."
    text = HEAD + a + a + b + a + b + b + a + a + a + b + a + b + b + a
    assert ends_in_loop(text)


def test_a_complete_story_does_not_end_in_a_loop():
    assert not ends_in_loop(STORY)
    # Even one with the stock sentence said three times: the ending is new.
    assert not ends_in_loop(STORY.replace(" Mia played with the ball.", LOOP[:78]))


def test_loop_window_is_exact():
    text = "x" * 10 + "abcdefghij" + "y" * 5 + "abcdefghij"
    assert ends_in_loop(text, window=10)
    assert not ends_in_loop(text, window=11)  # "jabcdefghij" never occurred before
    assert not ends_in_loop("abcdefghij", window=10)  # too short to have an earlier copy
    assert ends_in_loop("a" * 11, window=10)  # overlapping copies count: a loop of period 1


def test_loop_share_and_bad_window():
    assert loop_share([STORY, HEAD + LOOP, "short", STORY[:90] + LOOP]) == 0.5
    assert loop_share([]) == 0.0
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        ends_in_loop(STORY, window=0)


# --- BLEU ----------------------------------------------------------------------------------


def test_bleu_identical_is_one_and_disjoint_is_zero():
    words = word_tokens(STORY)
    assert bleu(words, [words]) == pytest.approx(1.0)
    assert bleu(word_tokens("red blue green yellow"), [word_tokens("one two three four")]) == 0.0


def test_bleu_hand_computed():
    # p1 = 5/6, p2 = 3/5, p3 = 1/4; equal lengths, so no brevity penalty: (1/8) ** (1/3) = 0.5.
    hyp, ref = word_tokens("the cat sat on the mat"), word_tokens("the cat is on the mat")
    assert bleu(hyp, [ref], max_n=3) == pytest.approx(0.5)
    assert bleu(hyp, [ref], max_n=4) == 0.0  # no 4-gram shared, and no smoothing


def test_bleu_clips_counts_and_takes_the_max_over_references():
    assert bleu(word_tokens("the the the the"), [word_tokens("the cat")], max_n=1) == pytest.approx(
        0.25
    )
    assert bleu(
        word_tokens("a a b"), [word_tokens("a b"), word_tokens("a a")], max_n=1
    ) == pytest.approx(1.0)


def test_bleu_brevity_penalty_uses_the_closest_reference_shorter_on_ties():
    assert bleu(word_tokens("the cat"), [word_tokens("the cat sat on")], max_n=1) == pytest.approx(
        math.exp(1 - 4 / 2)
    )
    # Lengths 2 and 4 are both 1 away from 3: the shorter wins, and 3 > 2 means no penalty.
    assert bleu(word_tokens("a b c"), [word_tokens("a b"), word_tokens("a b c d")], max_n=1) == 1.0
    assert bleu([], [word_tokens("a b")]) == 0.0


def test_bleu_bad_arguments():
    with pytest.raises(TypeError, match="token lists"):
        bleu("a b c d", [word_tokens("a b c d")])
    with pytest.raises(ValueError, match="references must hold at least one"):
        bleu(["a"], [])
    with pytest.raises(ValueError, match="max_n must be an int >= 1, got 0"):
        bleu(["a"], [["a"]], max_n=0)


def test_self_bleu_extremes():
    assert self_bleu([STORY] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d e", "f g h i j", "k l m n o"]) == 0.0


def test_self_bleu_is_the_mean_of_bleu_against_the_others():
    texts = [
        STORY,
        STORY.replace("Mia", "Tom"),
        STORY.replace("dog", "cat").replace("ball", "kite"),
        STORY,  # a duplicate: its twin is a perfect reference
        "Once upon a time, there was a shy kid named Ben. Ben had a cat.",
    ]
    tokens = [word_tokens(t) for t in texts]
    naive = [bleu(tokens[i], tokens[:i] + tokens[i + 1 :]) for i in range(len(texts))]
    assert self_bleu(texts) == pytest.approx(sum(naive) / len(naive))
    assert self_bleu_scores(texts) == pytest.approx(naive)
    assert naive[0] == pytest.approx(1.0) and 0.0 < naive[4] < 1.0


def test_self_bleu_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2 texts"):
        self_bleu([STORY])


# --- Zipf ----------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.7, 1.0, 1.3])
def test_zipf_recovers_the_exponent_of_exact_zipfian_counts(s):
    frequencies = {f"w{r}": 1000.0 / r**s for r in range(1, 200)}
    assert zipf_coefficient(frequencies) == pytest.approx(s, abs=1e-9)


def test_zipf_on_rounded_counts_and_in_any_order():
    counts = [round(1e6 / r**1.1) for r in range(1, 101)]
    assert zipf_coefficient(counts) == pytest.approx(1.1, abs=1e-3)
    assert zipf_coefficient(counts[::-1]) == zipf_coefficient(counts)


def test_zipf_of_flat_counts_is_zero_and_bad_input():
    assert zipf_coefficient([5, 5, 5]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        zipf_coefficient({"a": 3})
    with pytest.raises(ValueError, match=r"frequencies\[1\] must be a finite number > 0, got 0"):
        zipf_coefficient([3, 0])


def test_zipf_standard_error_is_the_jackknife_over_texts():
    texts = ["the cat and the dog", "the dog ran", "a cat sat on the mat", "the end"]
    total = word_frequencies(texts)
    fits = [zipf_coefficient(total - word_frequencies([text])) for text in texts]
    mean = sum(fits) / len(fits)
    expected = math.sqrt(3 / 4 * sum((s - mean) ** 2 for s in fits))
    assert zipf_standard_error(texts) == pytest.approx(expected) and expected > 0
    # Identical texts: leaving any one out changes nothing.
    assert zipf_standard_error([STORY] * 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 texts"):
        zipf_standard_error([STORY])


def test_zipf_standard_error_shrinks_with_more_texts():
    stories = tinytales.generate_stories(200, seed=5)
    assert zipf_standard_error(stories) < zipf_standard_error(stories[:20])


# --- perplexity ----------------------------------------------------------------------------


def test_perplexity_pools_tokens():
    # Three tokens of probability 1/2, then one of probability 1/16: mean NLL = log 2 * 7/4.
    log_probs = [3 * math.log(0.5), math.log(1 / 16)]
    assert perplexity(log_probs, [3, 1]) == pytest.approx(2 ** (7 / 4))
    assert perplexity([0.0], [5]) == 1.0


def test_nats_per_token_is_the_log_of_the_perplexity_with_an_error_over_sequences():
    log_probs, counts = [-1.0, -3.0, -2.0], [2, 2, 4]
    rate, error = nats_per_token(log_probs, counts)
    assert rate == pytest.approx(math.log(perplexity(log_probs, counts))) == pytest.approx(6 / 8)
    # Residuals a_i - r b_i of the negative totals: 1 - 1.5, 3 - 1.5, 2 - 3 -> -0.5, 1.5, -1.
    assert error == pytest.approx(math.sqrt(3 / 2 * (0.25 + 2.25 + 1.0)) / 8)
    # Sequences that all have the same rate leave no doubt about it.
    assert nats_per_token([-1.0, -2.0, -4.0], [1, 2, 4]) == (1.0, 0.0)
    assert math.isnan(nats_per_token([-1.0], [2])[1])


def test_nats_per_token_error_matches_the_spread_of_resampled_rates():
    # The first-order error should match the spread of the pooled rate over many resamplings
    # of the sequences (a bootstrap), within a few percent.
    generator = torch.Generator().manual_seed(0)
    counts = torch.randint(20, 200, (200,), generator=generator)
    rates = 0.05 + 0.1 * torch.rand(200, generator=generator, dtype=torch.float64)
    log_probs = (-rates * counts).tolist()
    _, error = nats_per_token(log_probs, counts.tolist())
    picks = torch.randint(0, 200, (4000, 200), generator=generator)
    totals = torch.tensor(log_probs, dtype=torch.float64)[picks].sum(dim=1)
    boot = -totals / counts[picks].sum(dim=1)
    assert float(boot.std()) == pytest.approx(error, rel=0.05)


def test_perplexity_bad_input():
    with pytest.raises(ValueError, match="equal lengths, got 2 and 1"):
        perplexity([0.0, 0.0], [1])
    with pytest.raises(ValueError, match="positive sum"):
        perplexity([0.0], [0])
    with pytest.raises(ValueError, match="equal lengths, got 1 and 2"):
        nats_per_token([0.0], [1, 1])


# --- model scores --------------------------------------------------------------------------


def test_recorded_and_recomputed_log_probs_agree_with_the_scorer(shipped):
    model, tokenizer = shipped
    prompts = [STORY[:60], STORY[:60].replace("Mia", "Tom")]
    generation = generate(
        model,
        prompts,
        tokenizer=tokenizer,
        max_new_tokens=40,
        generator=torch.Generator().manual_seed(0),
        record_logits=True,
    )
    recorded = token_log_probs(generation)
    batched = continuation_log_probs(
        model, prompts, generation.texts, tokenizer=tokenizer, finished=generation.finished
    )
    for prompt, text, done, a, b in zip(
        prompts, generation.texts, generation.finished, recorded, batched
    ):
        single = model_char_log_probs(model, prompt + text, tokenizer=tokenizer, end=done)
        assert a.shape == b.shape == (len(text) + done,)
        torch.testing.assert_close(b, single[len(prompt) :], atol=1e-5, rtol=0)
        torch.testing.assert_close(a, single[len(prompt) :], atol=1e-4, rtol=0)


def test_continuation_log_probs_batches_and_ends(shipped):
    model, tokenizer = shipped
    prompts, texts = [PROMPT, STORY[:10], ""], [REST, STORY[10:20], ""]
    finished = [True, False, True]
    one_batch = continuation_log_probs(
        model, prompts, texts, tokenizer=tokenizer, finished=finished
    )
    one_by_one = continuation_log_probs(
        model, prompts, texts, tokenizer=tokenizer, finished=finished, batch_size=1
    )
    assert [len(x) for x in one_batch] == [len(REST) + 1, 10, 1]
    for a, b in zip(one_batch, one_by_one):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # The end marker after a complete story is likely; after a cut-off one it is not.
    assert one_batch[0][-1] > math.log(0.5) and one_batch[2][0] < math.log(0.01)


def test_continuation_log_probs_bad_input(shipped):
    model, tokenizer = shipped
    with pytest.raises(ValueError, match="equal lengths"):
        continuation_log_probs(model, ["a"], ["b", "c"], tokenizer=tokenizer, finished=[True])
    with pytest.raises(ValueError, match="must fit in the model's context"):
        continuation_log_probs(model, ["a" * 500], ["b" * 20], tokenizer=tokenizer, finished=[0])
    unrecorded = generate(model, "", tokenizer=tokenizer, max_new_tokens=2, temperature=0)
    with pytest.raises(ValueError, match="record_logits=True"):
        token_log_probs(unrecorded)


# --- truth ---------------------------------------------------------------------------------


def test_truth_score_of_a_complete_story():
    score = truth_score(PROMPT, REST, finished=True)
    assert score.valid and score.in_grammar and score.possible_tokens == len(REST) + 1
    prompt_part = float(truth_char_log_probs(PROMPT).sum())
    assert score.log_prob == pytest.approx(tinytales.story_log_prob(STORY) - prompt_part)
    assert score.log_prob_per_char == pytest.approx(score.log_prob / (len(REST) + 1))


def test_truth_score_of_an_unfinished_loop():
    looping = truth_score(HEAD, LOOP, finished=False)
    assert looping.in_grammar and not looping.valid
    assert looping.possible_tokens == len(LOOP) and looping.log_prob < 0


def test_truth_score_counts_up_to_the_first_mistake():
    # Ending in the middle of the story: every character is possible except the end.
    cut = truth_score(PROMPT, REST[:50], finished=True)
    assert not cut.valid and not cut.in_grammar and cut.possible_tokens == 50
    expected = truth_char_log_probs(PROMPT + REST[:50])[len(PROMPT) :].sum()
    assert cut.log_prob == pytest.approx(float(expected))
    # The friend named as the hero: impossible in TinyTales, from the second 'M' on.
    wrong = REST.replace("Mia and Tom were", "Mia and Mia were")
    score = truth_score(PROMPT, wrong, finished=True)
    assert not score.in_grammar and not score.valid
    assert score.possible_tokens == wrong.index("Mia were")
    with pytest.raises(ValueError, match="must not contain END"):
        truth_score(PROMPT, "x\n", finished=False)


def test_truth_score_of_an_impossible_prompt():
    score = truth_score("Once upon a tiem", "", finished=False)
    assert not score.in_grammar and score.possible_tokens == 0
    assert math.isnan(score.log_prob_per_char)
    assert truth_score("Once upon a ti", "", finished=False).in_grammar


def test_truth_entropy_is_the_mean_entropy_of_the_true_next_character():
    distributions = tinytales.next_char_distributions(STORY)
    steps = distributions[len(PROMPT) :]  # every character of REST, then the end
    expected = sum(-sum(q * math.log(q) for q in d.values()) for d in steps) / len(steps)
    assert truth_entropy([PROMPT], [REST], [True]) == pytest.approx(expected)
    # Inside the opening formula nothing is left to choose.
    assert truth_entropy(["Once up"], ["on a ti"], [False]) == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        truth_entropy([PROMPT], [REST, REST], [True])
    with pytest.raises(ValueError, match="impossible under the TinyTales grammar"):
        truth_entropy([PROMPT], ["zzz"], [False])


def test_sampling_entropy_follows_the_sampling_rule(shipped):
    model, tokenizer = shipped
    generation = generate(
        model,
        [PROMPT, PROMPT],
        tokenizer=tokenizer,
        max_new_tokens=60,
        generator=torch.Generator().manual_seed(3),
        record_logits=True,
    )
    rows = [generation.logits[r, : len(ids)] for r, ids in enumerate(generation.token_ids)]
    probs = torch.softmax(torch.cat(rows).double(), dim=-1)
    expected = float(-(probs * probs.log().nan_to_num(neginf=0.0)).sum(-1).mean())
    assert sampling_entropy(generation) == pytest.approx(expected)
    assert sampling_entropy(generation, temperature=0) == 0.0
    assert sampling_entropy(generation, top_k=1) == 0.0
    assert 0 < sampling_entropy(generation, temperature=0.7) < sampling_entropy(generation)
    assert 0 < sampling_entropy(generation, top_p=0.9) < sampling_entropy(generation)


@pytest.mark.parametrize("split", [0, 1, 57, len(STORY) - 1, len(STORY)])
def test_valid_means_what_is_valid_story_says(split):
    for text in (STORY, STORY.replace("Tom were", "Tim were"), STORY[:-1]):
        score = truth_score(text[:split], text[split:], finished=True)
        assert score.valid == tinytales.is_valid_story(text)


# --- the table -----------------------------------------------------------------------------


def test_measure_decoding_on_hand_made_generations():
    prompts = [PROMPT, HEAD, HEAD]
    texts = [REST, LOOP, STORY[len(HEAD) :].replace("Tom were", "Mia were")]
    finished = [True, False, True]
    token_counts = [len(t) + f for t, f in zip(texts, finished)]
    log_probs = [-0.1 * n for n in token_counts]  # 0.1 nats per token
    row = measure_decoding("mixed", prompts, texts, finished, log_probs=log_probs)
    assert row.method == "mixed" and row.generations == 3
    assert row.perplexity == pytest.approx(math.exp(0.1))
    assert row.repetition == pytest.approx(1 / 3)
    assert row.valid == pytest.approx(1 / 3) and row.in_grammar == pytest.approx(2 / 3)
    truths = [truth_score(p, t, finished=f) for p, t, f in zip(prompts, texts, finished)]
    expected = sum(t.log_prob for t in truths) / sum(t.possible_tokens for t in truths)
    assert row.true_log_prob == pytest.approx(expected)
    assert truths[2].possible_tokens < len(texts[2])  # the mistake's tokens are left out
    assert 0 < row.self_bleu < 1 and 0 < row.distinct < 1 and row.zipf > 0


def test_measure_decoding_bad_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        measure_decoding("x", [PROMPT], [REST, REST], [True], log_probs=[0.0])


def test_format_table_puts_the_paper_beside_ours():
    row = DegenerationRow("greedy", 8, 1.06, 0.7, 1.5, 0.875, 0.3, 0.0, 1.0, -0.07)
    other = DegenerationRow("ours only", 8, 1.1, 0.6, 1.1, 0.0, 0.7, 0.5, 0.6, math.nan)
    values = {"perplexity": 1.5, "self_bleu": 0.5, "zipf": 1.0, "repetition": 73.66}
    table = format_table([row, other], paper={"greedy": ("Greedy", values)})
    lines = table.splitlines()
    assert "paper" in lines[0] and len(lines) == 4
    # The paper's repetition is its own measure: under its own name, never under our "loop %".
    ours, papers = lines[0].split("|")
    assert "loop %" in ours and "Repetition %" in papers and "loop %" not in papers
    assert "87.5" in lines[2].split("|")[0]
    assert lines[2].split("|")[1].split() == ["Greedy", "1.50", "0.50", "1.00", "73.66"]
    assert lines[3].split("|")[1].split() == ["-"] * 5 and "nan" in lines[3]
    assert "paper" not in format_table([row])
