"""Training: a short run learns, and the pieces of the loop behave."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, replace

import torch

from lessonlib import tinytales
from lessonlib import train as train_module
from lessonlib.checkpoint import (
    CHECKPOINT_NAME,
    DRAFT_CHECKPOINT_NAME,
    load_metadata,
    load_model,
    save_checkpoint,
)
from lessonlib.model import GPT, GPTConfig
from lessonlib.train import (
    DRAFT_SETTINGS,
    PRESETS,
    TrainSettings,
    corpus_tokenizer,
    learning_rate,
    main,
    sample_batch,
    story_starts,
    train,
)

SMOKE = TrainSettings(
    steps=40,
    batch_size=8,
    n_layer=1,
    n_head=2,
    n_embd=32,
    learning_rate=1e-2,
    min_learning_rate=1e-3,
    warmup_steps=5,
    train_stories=300,
    val_stories=20,
    eval_every=20,
)


def test_a_short_training_run_lowers_the_validation_loss(tmp_path):
    model, tokenizer, record = train(SMOKE, progress=False)
    losses = [entry["val_loss"] for entry in record["history"]]
    assert [entry["step"] for entry in record["history"]] == [0, 20, 40]
    # An untrained model is close to uniform over the alphabet.
    assert abs(losses[0] - math.log(tokenizer.vocab_size)) < 0.2
    assert losses[-1] < losses[0] - 0.8
    assert record["corpus"]["sha256"] == tinytales.corpus_sha256(
        tinytales.generate_stories(300, seed=0)
    )

    save_checkpoint(model, tokenizer, record, tmp_path, "smoke")
    loaded, loaded_tokenizer = load_model(tmp_path, "smoke")
    assert not loaded.training
    assert loaded_tokenizer.chars == tokenizer.chars
    probe = torch.tensor([tokenizer.encode("\nOnce upon")])
    torch.testing.assert_close(loaded(probe), model(probe))
    assert load_metadata(tmp_path, "smoke")["val_loss"] == record["val_loss"]


def test_batches_start_at_a_story_boundary_and_shift_by_one():
    tokens = torch.tensor([0, 5, 6, 0, 7, 8, 9, 0, 4, 0])
    starts = story_starts(tokens, boundary_id=0, window=4)
    assert starts.tolist() == [0, 3]
    inputs, targets = sample_batch(tokens, starts, 6, 3, torch.Generator().manual_seed(0))
    assert (inputs[:, 0] == 0).all()
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_learning_rate_warms_up_then_decays_to_the_minimum():
    settings = TrainSettings(steps=100, warmup_steps=10, learning_rate=1.0, min_learning_rate=0.1)
    rates = [learning_rate(step, settings) for step in range(100)]
    assert rates[0] == 0.1 and rates[9] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert abs(learning_rate(100, settings) - 0.1) < 1e-12


def test_the_presets_keep_the_main_model_and_add_a_much_smaller_draft():
    main_settings = TrainSettings()
    assert PRESETS["main"] == (main_settings, CHECKPOINT_NAME)
    assert PRESETS["draft"] == (DRAFT_SETTINGS, DRAFT_CHECKPOINT_NAME)
    # Same stories, context and seeds: only the shape and the schedule differ.
    shared = ("block_size", "batch_size", "train_stories", "val_stories", "corpus_seed", "seed")
    assert all(getattr(DRAFT_SETTINGS, f) == getattr(main_settings, f) for f in shared)
    # Much smaller: the blocks' weights grow as n_layer * n_embd**2.
    draft_size = DRAFT_SETTINGS.n_layer * DRAFT_SETTINGS.n_embd**2
    assert 10 * draft_size < main_settings.n_layer * main_settings.n_embd**2


def test_the_command_line_trains_the_preset_it_names(monkeypatch, tmp_path):
    """No arguments: the main model's settings and name; --preset draft: the draft's."""
    trained = []

    def quick_train(settings, *, progress=True):
        trained.append(settings)
        tokenizer = corpus_tokenizer()
        shape = GPTConfig(
            vocab_size=tokenizer.vocab_size,
            block_size=8,
            n_layer=settings.n_layer,
            n_head=settings.n_head,
            n_embd=settings.n_embd,
        )
        record = {"settings": asdict(settings), "parameters": 1, "train_seconds": 0.0}
        return GPT(shape).eval(), tokenizer, {**record, "val_loss": 1.0, "entropy_rate": 0.1}

    monkeypatch.setattr(train_module, "train", quick_train)
    main(["--out", str(tmp_path)])
    main(["--preset", "draft", "--steps", "7", "--out", str(tmp_path)])
    assert trained == [TrainSettings(), replace(DRAFT_SETTINGS, steps=7)]
    assert load_metadata(tmp_path, CHECKPOINT_NAME)["preset"] == "main"
    draft_record = load_metadata(tmp_path, DRAFT_CHECKPOINT_NAME)
    assert draft_record["preset"] == "draft"
    assert draft_record["settings"] == asdict(replace(DRAFT_SETTINGS, steps=7))
    assert draft_record["config"]["n_layer"] == DRAFT_SETTINGS.n_layer
