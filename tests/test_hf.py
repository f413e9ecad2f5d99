"""The Hugging Face adapter: a transformers model behind the course's LanguageModel interface."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lessonlib import tinytales
from lessonlib.generation import LanguageModel, generate, next_token_logits
from lessonlib.hf import (
    HFCache,
    HFLanguageModel,
    HFTokenizer,
    hf_call,
    hf_generate_kwargs,
    load_pretrained,
)
from lessonlib.speculative import speculative_generate
from lessonlib.token_model import TokenTrainSettings, make_model, make_tokenizer

PROMPTS = ["Once upon a time", "Long ago, in a quiet town,", "Max said, 'Hello"]


@pytest.fixture(scope="module")
def tiny():
    """A random one-block GPT-2 over a BPE tokenizer fit to 300 stories (untrained, fast)."""
    hf_tokenizer = make_tokenizer(tinytales.generate_stories(300, seed=0), 300)
    settings = replace(TokenTrainSettings(), n_layer=2, n_head=2, n_embd=32, context=128)
    torch.manual_seed(0)
    model = make_model(settings, hf_tokenizer).eval()
    return model, HFTokenizer(hf_tokenizer)


def test_the_adapter_is_a_course_language_model(tiny):
    model, tokenizer = tiny
    assert isinstance(model, LanguageModel)
    assert model.vocab_size == tokenizer.vocab_size == 300
    assert model.block_size == 128
    logits = model(torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(PROMPTS[0])]]))
    assert logits.shape == (1, 1 + len(tokenizer.encode(PROMPTS[0])), 300)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_writes_what_uncached_generation_writes(tiny, temperature):
    model, tokenizer = tiny
    runs = [
        generate(
            model,
            PROMPTS[0],
            tokenizer=tokenizer,
            max_new_tokens=40,
            temperature=temperature,
            generator=torch.Generator().manual_seed(3),
            use_cache=use_cache,
            stop_at_boundary=False,
        )
        for use_cache in (True, False)
    ]
    assert runs[0].token_ids == runs[1].token_ids
    assert len(runs[0].token_ids[0]) == 40


def test_a_context_longer_than_the_block_is_cropped_like_the_course_gpt(tiny):
    model, _tokenizer = tiny
    ids = torch.randint(1, 300, (1, 150), generator=torch.Generator().manual_seed(0))
    cache = model.new_kv_cache(1)
    cached = next_token_logits(model, ids, cache)
    assert torch.allclose(cached, model(ids[:, -128:])[:, -1], atol=1e-5)


def test_rolling_the_cache_back_gives_the_logits_of_a_fresh_pass(tiny):
    model, _ = tiny
    ids = torch.randint(1, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    cache = model.new_kv_cache(2)
    model(ids[:, :10], kv_cache=cache)
    cache.truncate(6)
    assert cache.length == 6
    rolled = model(ids[:, 6:12], kv_cache=cache)
    assert torch.allclose(rolled, model(ids)[:, 6:12], atol=1e-5)
    cache.truncate(0)
    assert cache.length == 0 and cache.past is None
    with pytest.raises(ValueError, match="length"):
        cache.truncate(3)


def test_keeping_rows_of_the_cache_keeps_those_sequences(tiny):
    model, _ = tiny
    ids = torch.randint(1, 300, (3, 8), generator=torch.Generator().manual_seed(2))
    cache = model.new_kv_cache(3)
    model(ids[:, :7], kv_cache=cache)
    cache.keep_rows(torch.tensor([2, 0]))
    assert cache.batch_size == 2
    kept = model(ids[[2, 0], 7:], kv_cache=cache)[:, -1]
    assert torch.allclose(kept, model(ids[[2, 0]])[:, -1], atol=1e-5)


def test_greedy_speculation_with_an_hf_draft_writes_generates_greedy_text(tiny):
    model, tokenizer = tiny
    torch.manual_seed(1)
    draft = make_model(
        replace(TokenTrainSettings(), n_layer=1, n_head=2, n_embd=16, context=128), tokenizer.hf
    ).eval()
    kwargs = {
        "tokenizer": tokenizer,
        "max_new_tokens": 30,
        "temperature": 0.0,
        "stop_at_boundary": False,
    }
    plain = generate(model, PROMPTS[1], **kwargs)
    fast = speculative_generate(model, draft, PROMPTS[1], k=3, **kwargs)
    assert fast.token_ids == plain.token_ids


def test_the_tokenizer_speaks_the_course_tokenizers_language(tiny):
    _, tokenizer = tiny
    ids = tokenizer.encode(PROMPTS[1])
    assert tokenizer.decode(ids) == PROMPTS[1]
    assert "".join(tokenizer.tokens(PROMPTS[1])) == PROMPTS[1]
    assert tokenizer.boundary == "<|endoftext|>"
    labels = tokenizer.labels()
    assert len(labels) == 300 and labels[tokenizer.boundary_id] == "<|endoftext|>"
    assert any(label.startswith("\u2423") for label in labels)  # a word token with its space
    assert "<0xE2>" in labels  # a byte of a multi-byte character, which has no text alone
    assert "\\x07" in labels and all(label.isprintable() for label in labels)
    assert tokenizer.labels(302)[-1] == "<301>"  # rows of a model beyond the tokenizer's tokens
    with pytest.raises(ValueError, match="token id 300 is out of range"):
        tokenizer.decode([300])
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer.encode(5)


def test_bad_models_and_tokenizers_are_refused_by_name():
    with pytest.raises(TypeError, match="Hugging Face causal language model"):
        HFLanguageModel(torch.nn.Linear(2, 2))

    class NoEnd:
        eos_token_id = None

    with pytest.raises(ValueError, match="end-of-text token"):
        HFTokenizer(NoEnd())
    with pytest.raises(ValueError, match="batch_size"):
        HFCache(0)


def test_offline_loading_of_a_model_not_on_disk_fails_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing downloaded before
    with pytest.raises(OSError, match="no-such-org/no-such-model"):
        load_pretrained("no-such-org/no-such-model")


def test_generate_kwargs_name_every_stage_so_none_switches_on_unseen():
    assert hf_generate_kwargs(temperature=0) == {"do_sample": False}
    kwargs = hf_generate_kwargs(temperature=0.8, top_p=0.9)
    assert kwargs == {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 0.9,
        "typical_p": 1.0,
        "epsilon_cutoff": 0.0,
        "eta_cutoff": 0.0,
    }
    assert hf_generate_kwargs(min_p=0.1, repetition_penalty=1.2)["min_p"] == 0.1
    with pytest.raises(ValueError, match="top_p"):
        hf_generate_kwargs(top_p=1.5)
    with pytest.raises(ValueError, match="repetition_penalty"):
        hf_generate_kwargs(repetition_penalty=0)


def test_a_call_names_only_what_differs_from_transformers_defaults():
    call = hf_call(hf_generate_kwargs(temperature=0.8, min_p=0.05), max_new_tokens=60)
    # top_k=0 must be named: transformers samples with top-k 50 when nothing says otherwise.
    assert call == (
        "model.generate(..., max_new_tokens=60, do_sample=True, temperature=0.8, top_k=0, "
        "min_p=0.05)"
    )
    assert hf_call(hf_generate_kwargs(temperature=0)) == "model.generate(..., do_sample=False)"
