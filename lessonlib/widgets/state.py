"""What every widget state shares: sampler settings as states store them, seeds, labelled
logits, a model's logits and labels after a prompt, and comparing two frozen states that hold
tensors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from lessonlib.generation import LanguageModel, prompt_logits
from lessonlib.tokenizer import CharTokenizer, Tokenizer
from lessonlib.validation import check_int, check_optional_int, check_probability

__all__ = [
    "CHARACTER_GPT",
    "MAX_DRAWS",
    "check_draws",
    "check_one_of",
    "check_seed",
    "labelled_logits",
    "letters",
    "model_title",
    "prompt_source_logits",
    "same_state",
    "seeded_rng_state",
    "shortened",
    "token_labels",
    "top_k_setting",
    "top_p_setting",
    "visible",
]

MAX_DRAWS = 1_000_000  # most draws one call accepts (memory stays a few MB)
CHARACTER_GPT = "TinyTales GPT"  # what titles call the course's character-level GPT

# Characters that would be invisible in a bar or row label, and what to show instead.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5"}


def visible(char: str) -> str:
    """`char` as a label: the space and the newline drawn as visible symbols."""
    return _VISIBLE.get(char, char)


def letters(n: int) -> tuple[str, ...]:
    """Labels a, b, c, ... of a toy vocabulary of `n` tokens."""
    return tuple(chr(ord("a") + i) for i in range(n))


def shortened(text: str, width: int) -> str:
    """`text`, or '...' and its last characters when it is longer than `width`."""
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def check_one_of(name: str, value: object, options: Iterable[str]) -> None:
    """Raise ValueError unless `value` is one of `options`."""
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")


def check_seed(seed: object) -> int:
    """`seed` as an int >= 0 (it seeds the state's torch.Generator)."""
    return check_int("seed", seed, low=0)


def check_draws(n: object) -> int:
    """`n`, the number of draws asked for at once, as an int in 0..MAX_DRAWS."""
    return check_int("n", n, low=0, high=MAX_DRAWS)


def seeded_rng_state(seed: int) -> Tensor:
    """The state tensor of a torch.Generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed).get_state()


def top_k_setting(top_k: object, vocab_size: int) -> int | None:
    """`top_k` as a state stores it: None when off, and any k >= vocab_size is off."""
    top_k = check_optional_int("top_k", top_k, low=1)
    return None if top_k is None or top_k >= vocab_size else top_k


def top_p_setting(top_p: object) -> float | None:
    """`top_p` as a state stores it: None when off, and p = 1 (every token kept) is off."""
    top_p = check_probability("top_p", top_p, allow_none=True)
    return None if top_p == 1 else top_p


def labelled_logits(
    logits: Sequence[float] | Tensor, labels: Sequence[str]
) -> tuple[Tensor, tuple[str, ...]]:
    """A float64 (V,) copy of `logits` (finite or -inf, not all -inf) and one label per token."""
    values = torch.as_tensor(logits, dtype=torch.float64).detach().clone()
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"logits must have shape (V,) with V >= 1, got {tuple(values.shape)}")
    if bool(torch.isnan(values).any() or torch.isposinf(values).any()):
        raise ValueError("logits must be finite or -inf (no NaN, no +inf)")
    if not bool(torch.isfinite(values).any()):
        raise ValueError("logits must have at least one finite value, got all -inf")
    labels = tuple(str(label) for label in labels)
    if len(labels) != values.numel():
        raise ValueError(
            f"labels must have one entry per logit ({values.numel()}), got {len(labels)}"
        )
    return values, labels


def model_title(model: object) -> str:
    """How titles name `model`: a Hugging Face model's `name`, else the character GPT's name."""
    name = getattr(model, "name", None)
    if not isinstance(name, str) or not name:
        return CHARACTER_GPT
    # A model loaded from a folder is named by its full path; the folder's name says which it is.
    return os.path.basename(name.rstrip("/\\")) if os.path.isabs(name) else name


def token_labels(tokenizer: Tokenizer, vocab_size: int) -> tuple[str, ...]:
    """A label per token id below `vocab_size`: visible characters, or the tokenizer's labels."""
    if isinstance(tokenizer, CharTokenizer):
        return tuple(visible(char) for char in tokenizer.chars)
    return tuple(tokenizer.labels(vocab_size))


def prompt_source_logits(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> Tensor:
    """float64 logits (V,) of the token after `prompt` (a token model's must fit its context)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not isinstance(tokenizer, CharTokenizer):
        # How many tokens a text makes is not what the learner sees, so a prompt beyond the
        # context is refused rather than silently read from its end. (The character GPT keeps
        # cropping to its last block_size characters, as before: lessons pass story prefixes.)
        length, room = len(tokenizer.encode(prompt)), model.block_size - 1
        if length > room:
            raise ValueError(
                f"prompt must fit the model's context: it is {length} tokens long, and "
                f"{model_title(model)} reads at most {model.block_size} tokens, the boundary "
                f"token that starts every context included (at most {room} prompt tokens)"
            )
    return prompt_logits(model, prompt, tokenizer=tokenizer).double()


def same_state(first: Any, second: Any, *, by_identity: tuple[str, ...] = ()) -> bool:
    """True when two states of one dataclass hold the same values (tensors compared exactly).

    Fields named in `by_identity` are mappings whose values are compared with `is`, for
    values (such as loaded distributions) that are shared rather than copied.
    """
    if type(first) is not type(second) or not dataclasses.is_dataclass(first):
        return False
    for field in dataclasses.fields(first):
        mine, theirs = getattr(first, field.name), getattr(second, field.name)
        if isinstance(mine, Tensor) or isinstance(theirs, Tensor):
            same = (
                isinstance(mine, Tensor)
                and isinstance(theirs, Tensor)
                and mine.shape == theirs.shape
                and torch.equal(mine, theirs)
            )
        elif field.name in by_identity:
            same = set(mine) == set(theirs) and all(mine[key] is theirs[key] for key in mine)
        else:
            same = mine == theirs
        if not same:
            return False
    return True
