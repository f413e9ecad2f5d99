"""The character n-gram: its counts, its back-off, and its use as a draft."""

from __future__ import annotations

import collections
import random

import pytest
import torch

from lessonlib import tinytales
from lessonlib.generation import LanguageModel, generate
from lessonlib.ngram import NGramModel, count_ngrams, training_ngram
from lessonlib.speculative import speculative_generate
from lessonlib.train import corpus_tokenizer
from tests.stub_models import lively_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = corpus_tokenizer()
STORIES = tinytales.generate_stories(40, seed=5)


def counted_by_hand(stories: list[str], order: int) -> collections.Counter:
    """(context, next character) -> count, read off the corpus text one position at a time."""
    text = TOKENIZER.boundary + tinytales.corpus_text(stories)
    counter = collections.Counter()
    for t in range(len(text) - 1):
        for length in range(min(order, t + 2)):
            counter[text[t - length + 1 : t + 1], text[t + 1]] += 1
    return counter


def as_counter(counts) -> collections.Counter:
    """The same mapping read back from NGramCounts (keys decoded, newest character last)."""
    vocab, counter = counts.vocab_size, collections.Counter()
    for length, (keys, table) in enumerate(zip(counts.keys, counts.counts, strict=True)):
        for key, row in zip(keys.tolist(), table.tolist(), strict=True):
            context = "".join(TOKENIZER.chars[key // vocab**j % vocab] for j in range(length))
            for char, times in zip(TOKENIZER.chars, row, strict=True):
                if times:
                    counter[context[::-1], char] = times
    return counter


@pytest.mark.parametrize("order", [1, 2, 4])
def test_counts_equal_a_count_by_hand(order):
    assert as_counter(count_ngrams(STORIES, TOKENIZER, order=order)) == counted_by_hand(
        STORIES, order
    )


def test_the_hand_count_tells_orders_apart():
    # The comparison above can fail: one order's counts differ from the next one's.
    assert counted_by_hand(STORIES, 3) != counted_by_hand(STORIES, 4)


def reference_probs(
    model: NGramModel, counter: collections.Counter, ids: list[int]
) -> tuple[torch.Tensor, int]:
    """Each position's next-character distribution from the longest seen suffix, by hand, and
    how many positions had to back off."""
    rows, backed_off = [], 0
    for t in range(len(ids)):
        text = TOKENIZER.decode(ids[max(0, t - model.order + 2) : t + 1])
        backed_off += not any(counter[text, c] for c in TOKENIZER.chars)
        while text and not any(counter[text, c] for c in TOKENIZER.chars):
            text = text[1:]  # unseen: back off to a shorter suffix
        counts = torch.tensor([counter[text, c] + model.smoothing for c in TOKENIZER.chars])
        rows.append(counts.double() / counts.sum())
    return torch.stack(rows), backed_off


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_logits_back_off_to_the_longest_seen_context(smoothing):
    model = NGramModel(count_ngrams(STORIES, TOKENIZER, order=4), smoothing=smoothing)
    counter = counted_by_hand(STORIES, 4)
    rng = random.Random(0)
    seen = TOKENIZER.encode(TOKENIZER.boundary + STORIES[0][:30])
    noise = [rng.randrange(TOKENIZER.vocab_size) for _ in range(12)]  # mostly unseen contexts
    ids = seen + noise
    probs = model(torch.tensor([ids, ids[::-1]])).double().exp()
    for row, sequence in enumerate([ids, ids[::-1]]):
        expected, backed_off = reference_probs(model, counter, sequence)
        assert backed_off > 0
        torch.testing.assert_close(probs[row], expected, atol=1e-6, rtol=0)
    assert torch.allclose(probs.sum(-1), torch.ones(2, len(ids), dtype=torch.float64))


def test_a_known_context_predicts_its_only_continuation():
    model = NGramModel(count_ngrams(STORIES, TOKENIZER, order=6))
    ids = TOKENIZER.encode("\nOnce upon a tim")
    probs = model(torch.tensor([ids]))[0, -1].exp()
    assert float(probs[TOKENIZER.encode("e")[0]]) == pytest.approx(1.0)


def test_the_ngram_is_a_course_model_and_drafts_for_speculative_decoding():
    model = NGramModel(count_ngrams(STORIES, TOKENIZER, order=5))
    assert isinstance(model, LanguageModel) and model.block_size == 4
    assert model.new_kv_cache(1) is None
    text = generate(model, "Once", tokenizer=TOKENIZER, max_new_tokens=60, temperature=0).text
    assert text.startswith(" upon a time")
    target = lively_gpt(TOKENIZER.vocab_size, seed=3, block_size=64)
    for prompt in ["", "Once upon", "Long ago"]:
        settings = {"tokenizer": TOKENIZER, "max_new_tokens": 40, "temperature": 0.0}
        spec = speculative_generate(target, model, prompt, k=3, **settings)
        assert spec.token_ids == generate(target, prompt, **settings).token_ids


def test_training_ngram_counts_the_shipped_models_stories():
    model, tokenizer = training_ngram(3, stories=50)
    assert tokenizer.chars == tinytales.ALPHABET and tokenizer.boundary == tinytales.END
    expected = count_ngrams(tinytales.generate_stories(50, seed=0), tokenizer, order=3)
    assert all(torch.equal(a, b) for a, b in zip(model.keys, expected.keys, strict=True))


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="order must be an int >= 1, got 0"):
        count_ngrams(STORIES, TOKENIZER, order=0)
    with pytest.raises(TypeError, match="stories must be a non-empty sequence of str"):
        count_ngrams("a story", TOKENIZER, order=2)
    with pytest.raises(ValueError, match="below 2\\*\\*62"):
        count_ngrams(STORIES, TOKENIZER, order=13)
    counts = count_ngrams(STORIES[:3], TOKENIZER, order=2)
    with pytest.raises(ValueError, match="smoothing must be a finite number >= 0"):
        NGramModel(counts, smoothing=-1)
    with pytest.raises(TypeError, match="counts must be NGramCounts"):
        NGramModel({})
    model = NGramModel(counts)
    with pytest.raises(TypeError, match="dtype torch.long"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="token_ids contains 50"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="shape \\(batch, time\\)"):
        model(torch.tensor([1, 2]))
