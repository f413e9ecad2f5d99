"""Train the course GPT on TinyTales: `python -m lessonlib.train` rebuilds the shipped checkpoint.

A fixed seed, a fixed number of steps and a fixed learning-rate schedule, so a retrain
reproduces the run (up to floating-point differences between machines). The validation
loss is printed beside the grammar's entropy rate on the same stories: the lowest loss
any model can reach. `--preset draft` trains the much smaller draft model of speculative
decoding instead, on the same stories with the same tokenizer. This module is not about
sampling or the lessons.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from lessonlib import tinytales
from lessonlib.checkpoint import CHECKPOINT_NAME, DRAFT_CHECKPOINT_NAME, save_checkpoint
from lessonlib.model import GPT, GPTConfig
from lessonlib.paths import DATA_DIR
from lessonlib.progress import progress_bar
from lessonlib.tokenizer import CharTokenizer


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a training run."""

    steps: int = 1400  # optimizer steps (the schedule is by step count, not by time)
    batch_size: int = 16  # windows per step
    block_size: int = 512  # window length in tokens, also the model's context
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # residual stream width
    learning_rate: float = 3e-3  # peak AdamW learning rate
    min_learning_rate: float = 3e-4  # the cosine schedule ends here
    warmup_steps: int = 50  # linear warm-up from 0 to the peak
    weight_decay: float = 0.01  # AdamW decoupled weight decay on matrices
    train_stories: int = 40_000  # stories generated for training
    val_stories: int = 300  # held-out stories for the validation loss
    corpus_seed: int = 0  # seed of the training stories
    val_seed: int = 1  # seed of the held-out stories (a different stream)
    seed: int = 0  # seed of initialisation and batch order
    eval_every: int = 200  # steps between validation evaluations (0: only at the end)


DRAFT_SETTINGS = TrainSettings(
    steps=1000,  # a small model learns what it can sooner
    n_layer=1,
    n_head=4,
    n_embd=48,  # about 1/15 of the main model's parameters
    learning_rate=6e-3,  # a narrow, shallow model tolerates a larger step
    min_learning_rate=6e-4,
)
"""The draft model of speculative decoding: one narrow block, same corpus, context and seeds."""

PRESETS: Mapping[str, tuple[TrainSettings, str]] = MappingProxyType(
    {
        "main": (TrainSettings(), CHECKPOINT_NAME),
        "draft": (DRAFT_SETTINGS, DRAFT_CHECKPOINT_NAME),
    }
)
"""Each shipped model: the settings that train it and the name of its checkpoint in data/."""


def corpus_tokenizer() -> CharTokenizer:
    """The GPT's tokenizer: every TinyTales character, with the end-of-story newline as boundary."""
    return CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)


def story_starts(tokens: Tensor, boundary_id: int, window: int) -> Tensor:
    """Offsets of the boundary tokens where a window of `window` tokens still fits."""
    starts = (tokens == boundary_id).nonzero().flatten()
    return starts[starts + window <= len(tokens)]


def sample_batch(
    tokens: Tensor, starts: Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Inputs and targets (B, block_size), each window starting at the beginning of a story."""
    picks = starts[torch.randint(len(starts), (batch_size,), generator=generator)]
    offsets = picks[:, None] + torch.arange(block_size + 1)
    windows = tokens[offsets]
    return windows[:, :-1], windows[:, 1:]


def language_model_loss(model: GPT, inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of next-token prediction, in nats per token (-100 targets ignored)."""
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.inference_mode()
def story_loss(
    model: GPT, tokenizer: CharTokenizer, stories: list[str], batch_size: int = 16
) -> float:
    """Mean nats per character over whole stories, each read from its start marker to its end."""
    total, count = 0.0, 0
    for i in range(0, len(stories), batch_size):
        chunk = [
            tokenizer.encode(tokenizer.boundary + s + tokenizer.boundary)
            for s in stories[i : i + batch_size]
        ]
        length = max(len(ids) for ids in chunk) - 1
        inputs = torch.zeros(len(chunk), length, dtype=torch.long)
        targets = torch.full((len(chunk), length), -100, dtype=torch.long)
        for row, ids in enumerate(chunk):
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
            targets[row, : len(ids) - 1] = torch.tensor(ids[1:])
        logits = model(inputs)
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            )
        )
        count += int((targets != -100).sum())
    return total / count


def fitting_stories(stories: list[str], block_size: int) -> list[str]:
    """The stories that fit in one window with both markers (start + story must fit the context)."""
    return [s for s in stories if len(s) + 1 <= block_size]


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay from the peak to the minimum."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return settings.min_learning_rate + cosine * (
        settings.learning_rate - settings.min_learning_rate
    )


def train(settings: TrainSettings, *, progress: bool = True) -> tuple[GPT, CharTokenizer, dict]:
    """Train a GPT from scratch; returns the model (eval mode), its tokenizer and a record."""
    started = time.perf_counter()
    tokenizer = corpus_tokenizer()
    train_stories = tinytales.generate_stories(settings.train_stories, seed=settings.corpus_seed)
    val_stories = fitting_stories(
        tinytales.generate_stories(settings.val_stories, seed=settings.val_seed),
        settings.block_size,
    )
    tokens = torch.tensor(
        tokenizer.encode(tokenizer.boundary + tinytales.corpus_text(train_stories))
    )
    starts = story_starts(tokens, tokenizer.boundary_id, settings.block_size + 1)

    torch.manual_seed(settings.seed)  # only the initial weights; batches use their own generator
    model = GPT(_model_config(settings, tokenizer))
    history = optimize(
        model,
        tokens,
        starts,
        settings,
        evaluate=lambda: story_loss(model, tokenizer, val_stories),
        progress=progress,
    )
    model.eval()
    record = training_record(settings, model, train_stories, val_stories, history, started)
    return model, tokenizer, record


def optimize(
    model: torch.nn.Module,
    tokens: Tensor,
    starts: Tensor,
    settings: TrainSettings,
    *,
    evaluate: Callable[[], float],
    progress: bool = True,
    loss_unit: str = "nats/char",
) -> list[dict]:
    """The course's training loop, for any model that maps token ids to logits; the history.

    Seeded batches of windows from story starts, AdamW with a linear warm-up and cosine decay,
    gradients clipped at 1; `evaluate()` (the validation loss, model in eval mode) runs before
    the first step, every `eval_every` steps and after the last. `settings` is a TrainSettings or
    anything with its fields. `loss_unit` names the training loss's unit in the progress lines.
    """
    optimizer = make_optimizer(model, settings)
    batch_generator = torch.Generator().manual_seed(settings.seed)
    model.eval()
    history = [{"step": 0, "train_loss": None, "val_loss": round(evaluate(), 4)}]
    bar = progress_bar(range(settings.steps), desc="training", show=progress)
    for step in bar:
        inputs, targets = sample_batch(
            tokens, starts, settings.batch_size, settings.block_size, batch_generator
        )
        loss = train_step(model, optimizer, inputs, targets, learning_rate(step, settings))
        bar.set_postfix(loss=f"{loss:.3f}")
        last = step == settings.steps - 1
        if last or (settings.eval_every and (step + 1) % settings.eval_every == 0):
            model.eval()
            val = evaluate()
            history.append(
                {"step": step + 1, "train_loss": round(loss, 4), "val_loss": round(val, 4)}
            )
            bar.write(
                f"step {step + 1}: train loss {loss:.4f} {loss_unit}, val {val:.4f} nats/char"
            )
    model.eval()
    return history


def _model_config(settings: TrainSettings, tokenizer: CharTokenizer) -> GPTConfig:
    """The shape of the GPT that `settings` train."""
    return GPTConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=settings.block_size,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        n_embd=settings.n_embd,
    )


def make_optimizer(model: GPT, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases and norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.learning_rate,
    )


def train_step(
    model: GPT, optimizer: torch.optim.Optimizer, inputs: Tensor, targets: Tensor, lr: float
) -> float:
    """One optimizer step at learning rate `lr`; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    loss = language_model_loss(model, inputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def training_record(
    settings: TrainSettings,
    model: torch.nn.Module,
    train_stories: list[str],
    val_stories: list[str],
    history: list[dict],
    started: float,
) -> dict:
    """What a shipped model's JSON record says about its run (settings, corpus, losses, time)."""
    return {
        "settings": asdict(settings),
        "corpus": {
            "generator": "lessonlib.tinytales.generate_stories",
            "seed": settings.corpus_seed,
            "stories": settings.train_stories,
            "sha256": tinytales.corpus_sha256(train_stories),
            "val_seed": settings.val_seed,
            "val_stories": len(val_stories),
        },
        "steps": settings.steps,
        "parameters": model.num_parameters(),
        "train_loss": history[-1]["train_loss"],
        "val_loss": history[-1]["val_loss"],
        "entropy_rate": round(tinytales.entropy_rate(val_stories), 4),
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: train a preset's model (or a shorter run of it) and write the checkpoint."""
    parser = argparse.ArgumentParser(description="Train the course GPT on TinyTales.")
    parser.add_argument(
        "--preset",
        choices=[*PRESETS, "tokens"],
        default="main",
        help="which shipped model to train: main (the course GPT), draft (speculative decoding) "
        "or tokens (lesson 11's BPE-token GPT in Hugging Face format)",
    )
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder for the checkpoint")
    parser.add_argument("--name", help="checkpoint file name stem (default: the preset's)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's; the count moves the last bits)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.preset == "tokens":
        _train_tokens(args)
        return
    preset, name = PRESETS[args.preset]
    settings = preset if args.steps is None else replace(preset, steps=args.steps)
    print(f"training {args.preset}: {settings}")
    model, tokenizer, record = train(settings)
    record = {"preset": args.preset, "threads": torch.get_num_threads(), **record}
    weights, meta = save_checkpoint(model, tokenizer, record, args.out, args.name or name)
    print(
        f"{record['parameters']:,} parameters, {record['train_seconds']:.0f} s; validation loss "
        f"{record['val_loss']:.4f} nats/char vs the grammar's entropy rate {record['entropy_rate']:.4f}"
    )
    print(f"wrote {weights} and {meta}")


def _train_tokens(args: argparse.Namespace) -> None:
    """`--preset tokens`: fit the BPE tokenizer, train the token GPT, save it Hugging Face's way."""
    # Imported here: the character presets do not need transformers.
    from lessonlib.token_model import (
        TOKEN_MODEL_DIR,
        TokenTrainSettings,
        save_token_model,
        train_token_model,
    )

    settings = TokenTrainSettings()
    if args.steps is not None:
        settings = replace(settings, steps=args.steps)
    print(f"training tokens: {settings}")
    model, tokenizer, record = train_token_model(settings)
    record = {"preset": "tokens", "threads": torch.get_num_threads(), **record}
    out = args.out / args.name if args.name else TOKEN_MODEL_DIR
    if args.out != DATA_DIR and not args.name:
        out = args.out / TOKEN_MODEL_DIR.name
    save_token_model(model, tokenizer, record, out)
    print(
        f"{record['parameters']:,} parameters, {record['vocab_size']} tokens, "
        f"{record['train_seconds']:.0f} s; validation loss {record['val_loss']:.4f} nats/char vs "
        f"the grammar's entropy rate {record['entropy_rate']:.4f}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
