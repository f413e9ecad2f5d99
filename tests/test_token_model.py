"""The shipped token-level TinyTales GPT (data/tinytales_tokens): provenance, loss, parity."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lessonlib import bpe, tinytales
from lessonlib.analysis.tokens import greedy_parity, kept_parity, score_stories
from lessonlib.generation import generate
from lessonlib.token_model import (
    TOKEN_MODEL_DIR,
    TokenTrainSettings,
    load_record,
    load_token_model,
    make_model,
    make_tokenizer,
    story_loss,
)

VAL_TARGET = 0.20  # nats per character: the same target as the character GPT's


@pytest.fixture(scope="module")
def shipped():
    return load_token_model()


@pytest.fixture(scope="module")
def record():
    return load_record()


def _prompts(n: int) -> list[str]:
    """Story openings cut after a word: the first 2..9 words of held-out stories."""
    stories = tinytales.generate_stories(n, seed=77)
    return [" ".join(s.split(" ")[: 2 + i % 8]) for i, s in enumerate(stories)]


def test_it_loads_with_the_calls_that_load_a_hub_model(shipped):
    model, tokenizer = shipped
    hf_model = AutoModelForCausalLM.from_pretrained(TOKEN_MODEL_DIR)
    hf_tokenizer = AutoTokenizer.from_pretrained(TOKEN_MODEL_DIR)
    assert hf_tokenizer.encode("Once upon a time") == tokenizer.encode("Once upon a time")
    ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode("Once upon a time")]])
    with torch.inference_mode():
        assert torch.equal(hf_model(ids).logits, model(ids))
    assert (TOKEN_MODEL_DIR / "model.safetensors").exists()
    assert not list(TOKEN_MODEL_DIR.glob("*.bin"))  # safetensors only: loading runs no code


def test_the_record_says_how_it_was_made(shipped, record):
    model, tokenizer = shipped
    assert record["settings"] == asdict(TokenTrainSettings())
    assert record["vocab_size"] == tokenizer.vocab_size == model.vocab_size == bpe.VOCAB_SIZE
    assert record["parameters"] == model.num_parameters()
    assert 500_000 <= model.num_parameters() <= 1_500_000
    corpus = record["corpus"]
    stories = tinytales.generate_stories(corpus["stories"], seed=corpus["seed"])
    assert tinytales.corpus_sha256(stories) == corpus["sha256"]
    assert record["train_seconds"] <= 20 * 60


def test_refitting_the_tokenizer_on_the_corpus_gives_the_shipped_one(shipped, record):
    _, tokenizer = shipped
    corpus = record["corpus"]
    stories = tinytales.generate_stories(corpus["stories"], seed=corpus["seed"])
    refit = make_tokenizer(stories, record["settings"]["vocab_size"])
    assert refit.get_vocab() == tokenizer.hf.get_vocab()
    shipped_json = json.loads((TOKEN_MODEL_DIR / "tokenizer.json").read_text())
    assert bpe.merges(refit.backend_tokenizer) == [
        tuple(m) for m in shipped_json["model"]["merges"]
    ]


def test_the_seeded_start_of_training_is_the_recorded_one(shipped, record):
    """Same seed, same initial weights: the untrained model's loss is the record's step 0."""
    _, tokenizer = shipped
    settings = TokenTrainSettings()
    torch.manual_seed(settings.seed)
    fresh = make_model(settings, tokenizer.hf).eval()
    val = tinytales.generate_stories(settings.val_stories, seed=settings.val_seed)
    assert story_loss(fresh, tokenizer, val) == pytest.approx(
        record["history"][0]["val_loss"], abs=1e-3
    )


def test_validation_loss_meets_the_target_and_stays_above_the_truth(shipped, record):
    model, tokenizer = shipped
    settings = TokenTrainSettings()
    val = tinytales.generate_stories(settings.val_stories, seed=settings.val_seed)
    loss = story_loss(model, tokenizer, val)
    assert loss == pytest.approx(record["val_loss"], abs=2e-3)
    assert tinytales.entropy_rate(val) < loss <= VAL_TARGET
    scores = score_stories(model, tokenizer, val[:40])
    assert scores.truth.value < scores.model.value
    assert scores.tokens < scores.characters / 2  # a token is several characters on average


def test_most_stories_at_temperature_0_7_are_valid(shipped):
    model, tokenizer = shipped
    result = generate(
        model,
        [""] * 16,
        tokenizer=tokenizer,
        max_new_tokens=300,
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
    )
    valid = [done and tinytales.is_valid_story(t) for t, done in zip(result.texts, result.finished)]
    assert sum(valid) >= 12


SETTINGS = [
    {"temperature": 0.7},
    {"top_k": 5},
    {"top_p": 0.9},
    {"min_p": 0.1},
    {"typical_p": 0.5},
    {"eta_cutoff": 0.02},
    {"temperature": 1.5, "top_k": 40, "top_p": 0.95},
    {"temperature": 1.3, "top_k": 30, "top_p": 0.97, "min_p": 0.02, "typical_p": 0.9},
    {"temperature": 2.0, "top_k": 50, "top_p": 0.99, "min_p": 0.01, "eta_cutoff": 0.001},
]


@pytest.mark.parametrize("prompt", _prompts(8))
def test_the_course_keeps_the_tokens_transformers_generate_keeps(shipped, prompt):
    model, tokenizer = shipped
    for row in kept_parity(model, tokenizer, prompt, SETTINGS):
        assert row.same_tokens, (prompt, row)
        assert row.course_kept == row.hf_kept
        assert row.max_prob_gap < 1e-5, (prompt, row)


def test_parity_fails_when_the_two_sides_run_different_settings(shipped, monkeypatch):
    """The check is not vacuous: transformers run with top-p 0.9 where the course runs top-k 3."""
    from lessonlib.analysis import tokens
    from lessonlib.hf import hf_generate_kwargs

    model, tokenizer = shipped
    monkeypatch.setattr(tokens, "hf_generate_kwargs", lambda **_: hf_generate_kwargs(top_p=0.9))
    [row] = kept_parity(model, tokenizer, "Once upon a time,", [{"top_k": 3}])
    assert row.course_kept == 3
    assert not row.same_tokens and row.hf_kept != 3


def test_greedy_text_equals_transformers_greedy_text(shipped):
    model, tokenizer = shipped
    assert all(greedy_parity(model, tokenizer, _prompts(12), max_new_tokens=60))


def test_transformers_samples_with_top_k_50_unless_told_otherwise(shipped):
    """Why hf_generate_kwargs names top_k=0: HF_SAMPLING_DEFAULTS says what transformers does."""
    from lessonlib.hf import HF_SAMPLING_DEFAULTS

    model, tokenizer = shipped
    ids = torch.tensor(
        [[tokenizer.boundary_id, *tokenizer.encode("Once upon a time, there was a")]]
    )
    kept = []
    for extra in ({}, {"top_k": 0}):
        out = model.hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=1,
            do_sample=True,
            temperature=3.0,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.boundary_id,
            **extra,
        )
        kept.append(int(torch.isfinite(out.scores[0]).sum()))
    assert kept == [HF_SAMPLING_DEFAULTS["top_k"], model.vocab_size]
