"""The generation loop: stopping, batching, caching and reproducibility."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lessonlib.generation import LanguageModel, generate, prompt_logits
from lessonlib.model import GPT, KVCache
from lessonlib.paths import REPO_ROOT
from lessonlib.threads import (
    GENERATION_THREADS,
    PARALLEL_BATCH,
    PARALLEL_THREADS,
    decoding_threads,
    torch_threads,
)
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import lively_gpt

TOKENIZER = CharTokenizer("\nabcdefgh .", boundary="\n")


def lively_model(seed: int = 0, block_size: int = 32) -> GPT:
    """A small random GPT over TOKENIZER whose logits are far from uniform."""
    return lively_gpt(TOKENIZER.vocab_size, seed=seed, block_size=block_size)


def sample(model, prompt, seed, **settings):
    settings.setdefault("max_new_tokens", 40)
    generator = torch.Generator().manual_seed(seed)
    return generate(model, prompt, tokenizer=TOKENIZER, generator=generator, **settings)


def test_gpt_follows_the_model_interface():
    assert isinstance(lively_model(), LanguageModel)


def test_same_seed_same_text_and_other_seed_other_text():
    model = lively_model()
    first = sample(model, "abc", seed=7, stop_at_boundary=False)
    again = sample(model, "abc", seed=7, stop_at_boundary=False)
    other = sample(model, "abc", seed=8, stop_at_boundary=False)
    assert first.text == again.text
    assert first.token_ids == again.token_ids
    assert len(first.text) == 40
    assert other.text != first.text


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_k": 4}, {"top_p": 0.8}])
def test_cache_does_not_change_the_text(settings):
    """Cached and uncached loops draw the same tokens, also well past the block size."""
    model = lively_model(block_size=16)
    cached = sample(
        model, ["ab", "cd"], seed=3, max_new_tokens=50, stop_at_boundary=False, **settings
    )
    plain = sample(
        model,
        ["ab", "cd"],
        seed=3,
        max_new_tokens=50,
        stop_at_boundary=False,
        use_cache=False,
        **settings,
    )
    assert cached.texts == plain.texts


def test_greedy_is_the_argmax_of_every_step():
    model = lively_model()
    result = sample(model, "a", seed=0, temperature=0.0, stop_at_boundary=False, record_logits=True)
    assert result.logits.shape == (1, 40, TOKENIZER.vocab_size)
    assert result.token_ids[0] == result.logits[0].argmax(-1).tolist()


def test_rows_stop_independently_at_the_boundary():
    model = lively_model(seed=1)
    result = sample(model, ["a", "b", "c", "d"], seed=5, max_new_tokens=200)
    assert any(result.finished), "the test model should end at least one row"
    for text, ids, finished in zip(result.texts, result.token_ids, result.finished):
        assert "\n" not in text
        assert TOKENIZER.decode(ids) == text + ("\n" if finished else "")
        assert finished == (ids[-1] == TOKENIZER.boundary_id)


def test_a_batch_row_matches_the_same_prompt_alone_under_greedy():
    model = lively_model()
    batch = sample(model, ["ab", "cd"], seed=0, temperature=0.0)
    alone = sample(model, "cd", seed=0, temperature=0.0)
    assert batch.texts[1] == alone.text


def test_bad_arguments_raise_clear_errors():
    model = lively_model()
    with pytest.raises(ValueError, match="'z' at position 1"):
        sample(model, "az", seed=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        sample(model, "a", seed=0, max_new_tokens=-1)
    with pytest.raises(ValueError, match="same length"):
        sample(model, ["a", "abc"], seed=0)
    with pytest.raises(TypeError, match="prompt must be a str"):
        sample(model, 42, seed=0)
    with pytest.raises(ValueError, match="top_k"):
        sample(model, "a", seed=0, top_k=0)
    with pytest.raises(ValueError, match="text is for a single prompt"):
        _ = sample(model, ["a", "b"], seed=0).text


SCRIPT = """
import json, torch
from tests.test_generation import lively_model, sample
result = sample(lively_model(), ["ab", "ba"], seed=11, max_new_tokens=60, temperature=0.9, top_p=0.9)
print(json.dumps(result.texts))
"""


def test_byte_identical_across_two_processes():
    runs = [
        subprocess.run(
            [sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    here = sample(
        lively_model(), ["ab", "ba"], seed=11, max_new_tokens=60, temperature=0.9, top_p=0.9
    )
    assert runs[0] == runs[1]
    assert json.loads(runs[0]) == here.texts


def test_prompt_logits_is_the_last_step_of_the_model():
    model = lively_model()
    logits = prompt_logits(model, "abc", tokenizer=TOKENIZER)
    full = model(torch.tensor([[TOKENIZER.boundary_id, *TOKENIZER.encode("abc")]]))[0, -1]
    torch.testing.assert_close(logits, full)


def test_generation_restores_the_thread_count():
    before = torch.get_num_threads()
    sample(lively_model(), "a", seed=0, max_new_tokens=3)
    assert torch.get_num_threads() == before


def test_small_batches_decode_on_one_thread_and_large_ones_on_two():
    for allowed, large in ((1, 1), (2, 2), (4, 2)):
        with torch_threads(allowed):
            assert decoding_threads(1) == decoding_threads(PARALLEL_BATCH - 1) == 1
            assert decoding_threads(PARALLEL_BATCH) == decoding_threads(256) == large


def test_a_large_batch_decodes_on_two_threads(monkeypatch):
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    with torch_threads(4):
        seen.clear()
        sample(lively_model(), ["a"] * PARALLEL_BATCH, seed=0, max_new_tokens=2)
        assert seen == [PARALLEL_THREADS, 4]  # set for the loop, then restored
        seen.clear()
        sample(lively_model(), ["a"] * 3, seed=0, max_new_tokens=2)
        assert seen == [GENERATION_THREADS, 4]


def test_the_cache_grows_once_before_the_first_step(monkeypatch):
    # (capacity, positions already filled) each time a cache gets a buffer: growing before the
    # first forward pass copies nothing, and there is no later growth during the generation.
    buffers = []
    real_set = KVCache._set_buffer

    def record(cache, buffer):
        buffers.append((buffer.shape[4], getattr(cache, "length", 0)))
        real_set(cache, buffer)

    monkeypatch.setattr(KVCache, "_set_buffer", record)
    model = lively_model(block_size=300)
    sample(model, ["ab", "cd"], seed=0, max_new_tokens=200, stop_at_boundary=False)
    assert buffers == [(KVCache.INITIAL_CAPACITY, 0), (256, 0)]  # 3 + 200 positions needed
    buffers.clear()
    sample(model, "ab", seed=0, max_new_tokens=400, stop_at_boundary=False)
    assert buffers == [(KVCache.INITIAL_CAPACITY, 0), (300, 0)]  # never beyond the block size


def test_rows_that_stop_early_are_dropped_without_changing_the_others():
    """Finished rows leave the batch; cached and uncached runs still draw the same tokens."""
    model = lively_model(seed=1)
    prompts = list("abcdefgh")
    cached = sample(model, prompts, seed=9, max_new_tokens=120)
    plain = sample(model, prompts, seed=9, max_new_tokens=120, use_cache=False)
    assert cached.texts == plain.texts
    assert len({len(text) for text in cached.texts}) > 1  # rows really stop at different steps
    greedy = sample(model, prompts, seed=0, max_new_tokens=120, temperature=0.0)
    alone = [sample(model, p, seed=0, max_new_tokens=120, temperature=0.0).text for p in prompts]
    assert greedy.texts == alone


def test_recorded_logits_stop_with_their_row():
    model = lively_model(seed=1)
    result = sample(model, list("abcd"), seed=9, max_new_tokens=120, record_logits=True)
    for row, ids in enumerate(result.token_ids):
        assert result.logits[row, : len(ids)].abs().sum(-1).min() > 0
        assert result.logits[row, len(ids) :].abs().sum() == 0
