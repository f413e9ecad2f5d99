"""The token-level TinyTales GPT of lesson 11: BPE tokens, Hugging Face format, the course's loop.

A `transformers` GPT-2 (four blocks, width 128, like the character GPT) over the byte-level BPE
tokens of `lessonlib.bpe`, trained with the course's own training loop and saved with
`save_pretrained`, so it loads exactly as a Hub model does:
`AutoModelForCausalLM.from_pretrained(TOKEN_MODEL_DIR)`. `python -m lessonlib.train --preset
tokens` rebuilds it. Not about sampling (the course's sampler runs on it through
`lessonlib.hf`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lessonlib import bpe, tinytales
from lessonlib.hf import HFLanguageModel, HFTokenizer
from lessonlib.paths import DATA_DIR
from lessonlib.train import optimize, story_starts, training_record

TOKEN_MODEL_DIR = DATA_DIR / "tinytales_tokens"
"""The shipped token model: config.json, model.safetensors, tokenizer files, training.json."""

RECORD_NAME = "training.json"  # the training run's settings, losses and time, beside the model


@dataclass(frozen=True)
class TokenTrainSettings:
    """Everything that decides the token model's training run (the names of `TrainSettings`)."""

    steps: int = 1400  # optimizer steps
    batch_size: int = 16  # windows per step
    block_size: int = 256  # window length in tokens (about 1,000 characters)
    context: int = 512  # the model's longest context in tokens (its learned positions)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int = bpe.VOCAB_SIZE  # tokens of the BPE tokenizer fit first
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    train_stories: int = 40_000
    val_stories: int = 300
    corpus_seed: int = 0
    val_seed: int = 1
    seed: int = 0
    eval_every: int = 200


def make_tokenizer(stories: list[str], vocab_size: int):
    """The BPE tokenizer as a Hugging Face fast tokenizer (what AutoTokenizer loads)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=bpe.fit_bpe(stories, vocab_size),
        bos_token=bpe.END_OF_TEXT,
        eos_token=bpe.END_OF_TEXT,
        model_max_length=TokenTrainSettings.context,
    )


def make_model(settings: TokenTrainSettings, tokenizer) -> HFLanguageModel:
    """A freshly initialised GPT-2 of the settings' shape (no dropout, as the course's GPT)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    end = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=settings.context,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=end,
        eos_token_id=end,
    )
    return HFLanguageModel(GPT2LMHeadModel(config))


@torch.inference_mode()
def story_loss(model: HFLanguageModel, tokenizer: HFTokenizer, stories: list[str]) -> float:
    """Mean nats per character over whole stories (start token, tokens, end token), 16 at a time."""
    total, chars = 0.0, 0
    boundary = tokenizer.boundary_id
    for i in range(0, len(stories), 16):
        chunk = [[boundary, *tokenizer.encode(s), boundary] for s in stories[i : i + 16]]
        length = max(len(ids) for ids in chunk) - 1
        inputs = torch.full((len(chunk), length), boundary, dtype=torch.long)
        targets = torch.full((len(chunk), length), -100, dtype=torch.long)
        for row, ids in enumerate(chunk):
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
            targets[row, : len(ids) - 1] = torch.tensor(ids[1:])
        logits = model(inputs)
        total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        chars += sum(len(s) + 1 for s in stories[i : i + 16])  # each story's END counts once
    return total / chars


def train_token_model(
    settings: TokenTrainSettings = TokenTrainSettings(), *, progress: bool = True
) -> tuple[HFLanguageModel, HFTokenizer, dict]:
    """Fit the tokenizer, then train the token GPT; returns model (eval), tokenizer and a record."""
    started = time.perf_counter()
    train_stories = tinytales.generate_stories(settings.train_stories, seed=settings.corpus_seed)
    val_stories = tinytales.generate_stories(settings.val_stories, seed=settings.val_seed)
    tokenizer = HFTokenizer(make_tokenizer(train_stories, settings.vocab_size))
    boundary = tokenizer.boundary_id
    ids = [boundary]
    for story in train_stories:
        ids += [*tokenizer.encode(story), boundary]
    tokens = torch.tensor(ids)
    starts = story_starts(tokens, boundary, settings.block_size + 1)
    fitted = time.perf_counter() - started

    torch.manual_seed(settings.seed)  # only the initial weights; batches use their own generator
    model = make_model(settings, tokenizer.hf)
    history = optimize(
        model,
        tokens,
        starts,
        settings,
        evaluate=lambda: story_loss(model, tokenizer, val_stories),
        progress=progress,
        loss_unit="nats/token",
    )
    record = training_record(settings, model, train_stories, val_stories, history, started)
    record["corpus"].update(tokens=len(ids), characters=sum(len(s) + 1 for s in train_stories))
    record.update(vocab_size=tokenizer.vocab_size, tokenizer_seconds=round(fitted, 1))
    return model, tokenizer, record


def save_token_model(
    model: HFLanguageModel, tokenizer: HFTokenizer, record: dict, directory: Path | str
) -> Path:
    """Write the model and tokenizer with save_pretrained, and the record as training.json."""
    directory = Path(directory)
    model.hf.save_pretrained(directory)
    tokenizer.hf.save_pretrained(directory)
    record = {"torch_version": torch.__version__, **record}
    (directory / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return directory


def load_token_model(
    directory: Path | str = TOKEN_MODEL_DIR,
) -> tuple[HFLanguageModel, HFTokenizer]:
    """The shipped token model and its tokenizer, through the same calls that load a Hub model."""
    from lessonlib.hf import load_pretrained

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"no token model at {directory}; train one with "
            "`python -m lessonlib.train --preset tokens`"
        )
    return load_pretrained(directory)


def load_record(directory: Path | str = TOKEN_MODEL_DIR) -> dict:
    """The training record saved beside the token model."""
    return json.loads((Path(directory) / RECORD_NAME).read_text(encoding="utf-8"))


def pick_model(
    name: str, model: HFLanguageModel, tokenizer: HFTokenizer
) -> tuple[HFLanguageModel, HFTokenizer, str]:
    """The Hub model `name` if it loads (downloading it once), else the given model; and why."""
    from lessonlib.hf import load_pretrained

    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a Hub model id such as 'gpt2'), got {name!r}")
    if not name.strip():
        return model, tokenizer, f"Using {model.name} (no Hub model named)."
    try:
        hub_model, hub_tokenizer = load_pretrained(name.strip(), online=True)
    except OSError as error:
        return model, tokenizer, f"{error}\nKeeping {model.name}."
    return hub_model, hub_tokenizer, f"Using {hub_model.name} from the Hugging Face Hub."
