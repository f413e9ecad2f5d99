"""The GPT, its config and its KV cache."""

from __future__ import annotations

import pytest
import torch

from lessonlib.generation import next_token_logits
from lessonlib.model import GPT, GPTConfig, KVCache
from tests.stub_models import lively_gpt

VOCAB = 40


def lively_model(block_size: int = 64, seed: int = 0) -> GPT:
    """A small random GPT, 4 heads of width 8, whose logits are far from uniform."""
    return lively_gpt(VOCAB, seed=seed, block_size=block_size, n_head=4, n_embd=32)


def cache_disagreement(model: GPT, token_ids: torch.Tensor, chunk: int = 1) -> float:
    """Largest |cached - uncached| logit over every step of feeding token_ids in chunks."""
    cache = model.new_kv_cache(token_ids.shape[0])
    worst = 0.0
    with torch.inference_mode():
        for end in range(chunk, token_ids.shape[1] + 1, chunk):
            cached = model(token_ids[:, end - chunk : end], kv_cache=cache)
            full = model(token_ids[:, :end])[:, end - chunk :]
            worst = max(worst, float((cached - full).abs().max()))
    return worst


def test_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="n_embd must be divisible by n_head"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        GPTConfig(vocab_size=10, block_size=0)


def test_default_size_is_in_the_course_budget():
    model = GPT(GPTConfig(vocab_size=45))
    assert 500_000 <= model.num_parameters() <= 1_000_000
    assert model.block_size >= 256


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("chunk", [1, 4])
def test_cached_logits_match_uncached_at_every_step(batch_size, chunk):
    model = lively_model(block_size=64)
    token_ids = torch.randint(VOCAB, (batch_size, 64), generator=torch.Generator().manual_seed(1))
    assert cache_disagreement(model, token_ids, chunk) < 1e-5


def test_the_cache_check_catches_a_cache_that_forgets():
    """The comparison above must fail for a broken cache: here every step forgets the past."""
    model = lively_model()
    token_ids = torch.randint(VOCAB, (2, 20), generator=torch.Generator().manual_seed(2))

    class ForgetfulCache(KVCache):
        @property
        def length(self):
            return 0

        @length.setter
        def length(self, value):
            pass

    model.new_kv_cache = lambda b: ForgetfulCache(
        model.config, b, dtype=torch.float32, device="cpu"
    )
    assert cache_disagreement(model, token_ids) > 1e-2


def test_batch_rows_are_independent():
    model = lively_model()
    token_ids = torch.randint(VOCAB, (3, 16), generator=torch.Generator().manual_seed(3))
    together = model(token_ids)
    alone = torch.cat([model(token_ids[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_forward_rejects_bad_input_with_named_parameters():
    model = lively_model(block_size=8)
    with pytest.raises(TypeError, match="token_ids must have dtype torch.long"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(batch, time\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=f"token_ids contains {VOCAB}"):
        model(torch.tensor([[1, VOCAB]]))
    with pytest.raises(ValueError, match="block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, 6, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="after 6 cached positions"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="kv_cache holds 1 sequences"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)


def test_past_the_block_size_the_cache_slides_like_the_uncached_model():
    """Beyond block_size both paths read the last block_size tokens, so they agree."""
    model = lively_model(block_size=12)
    token_ids = torch.randint(VOCAB, (2, 30), generator=torch.Generator().manual_seed(4))
    cache = model.new_kv_cache(2)
    with torch.inference_mode():
        cached = next_token_logits(model, token_ids[:, :5], cache)
        uncached = next_token_logits(model, token_ids[:, :5])
        torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
        for end in range(6, 31):
            cached = next_token_logits(model, token_ids[:, :end], cache, new_tokens=1)
            uncached = next_token_logits(model, token_ids[:, :end])
            torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
            # The uncached model reads exactly the last block_size tokens.
            window = model(token_ids[:, max(0, end - 12) : end])[:, -1]
            torch.testing.assert_close(uncached, window, atol=1e-6, rtol=0)
    assert cache.length == 12


def test_cache_size_per_token():
    model = GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=3, n_head=2, n_embd=8))
    cache = model.new_kv_cache(1)
    # keys and values, 3 layers, 8 numbers each, 4 bytes per float32
    assert cache.nbytes_per_token() == 2 * 3 * 8 * 4
    assert cache.max_length == 16


def test_cache_grows_by_doubling_and_keeps_what_it_held():
    model = lively_model(block_size=300)
    token_ids = torch.randint(VOCAB, (2, 300), generator=torch.Generator().manual_seed(6))
    cache = model.new_kv_cache(2)
    assert cache.capacity == KVCache.INITIAL_CAPACITY
    with torch.inference_mode():
        model(token_ids[:, :100], kv_cache=cache)
        kept = cache.keys[:, :, :, :100].clone()
        model(token_ids[:, 100:140], kv_cache=cache)
        assert cache.capacity == 2 * KVCache.INITIAL_CAPACITY
        assert torch.equal(cache.keys[:, :, :, :100], kept)
        model(token_ids[:, 140:], kv_cache=cache)
    assert cache.capacity == 300  # doubling stops at the block size
    with pytest.raises(ValueError, match="max_length=300"):
        cache.reserve(301)


def test_keys_and_values_are_the_cached_ones_after_growth_and_keep_rows():
    """`keys`/`values` stay views of the current buffer, so they show what attention reads."""
    model = lively_model(block_size=300)
    token_ids = torch.randint(VOCAB, (3, 140), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        cache = model.new_kv_cache(3)
        model(token_ids[:, :100], kv_cache=cache)
        model(token_ids[:, 100:], kv_cache=cache)  # grows the buffer past 128 positions
        cache.keep_rows(torch.tensor([2, 0]))
        # Layer 0's keys and values, recomputed from scratch for the kept rows.
        block = model.blocks[0]
        x = model.token_embedding(token_ids[[2, 0]]) + model.position_embedding.weight[:140]
        qkv = block.attn.qkv(block.ln1(x)).view(2, 140, 3, 4, 8).permute(2, 0, 3, 1, 4)
    for cached, fresh in ((cache.keys[0], qkv[1]), (cache.values[0], qkv[2])):
        torch.testing.assert_close(cached[:, :, :140], fresh, atol=1e-6, rtol=0)
    assert torch.equal(cache.layers()[0][0], cache.keys[0])
    assert torch.equal(cache.layers()[0][1], cache.values[0])


def test_keep_rows_drops_and_reorders_sequences():
    model = lively_model()
    token_ids = torch.randint(VOCAB, (3, 10), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        cache = model.new_kv_cache(3)
        model(token_ids[:, :9], kv_cache=cache)
        cache.keep_rows(torch.tensor([2, 0]))
        step = model(token_ids[[2, 0], 9:], kv_cache=cache)
        full = model(token_ids[[2, 0]])[:, -1:]
    assert cache.batch_size == 2
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


def test_truncate_forgets_positions_and_refuses_to_grow():
    config = GPTConfig(vocab_size=5, block_size=16, n_layer=1, n_head=1, n_embd=8)
    cache = KVCache(config, 1, dtype=torch.float32, device="cpu")
    cache.length = 6
    cache.truncate(4)
    assert cache.length == 4
    with pytest.raises(ValueError, match=r"length must be an int in 0\.\.4, got 5"):
        cache.truncate(5)
