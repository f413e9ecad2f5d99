"""What `generate(..., record_logits=True)` kept: the raw logits at every drawn token.

Row r of `generation.logits` holds steps until the longest row stopped; only its first
len(token_ids[r]) steps belong to row r. The log-probabilities here are the raw model's
(temperature 1, nothing filtered), whatever rule drew the tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lessonlib.generation import Generation
from lessonlib.threads import GENERATION_THREADS, torch_threads

__all__ = [
    "check_recorded",
    "drawn_step_logits",
    "row_logits",
    "text_log_probs",
    "token_log_probs",
]


def check_recorded(generation: object) -> Generation:
    """`generation` if it is a Generation with recorded logits, else TypeError/ValueError."""
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    if generation.logits is None:
        raise ValueError("generation has no logits; generate it with record_logits=True")
    return generation


def row_logits(generation: Generation, row: int) -> Tensor:
    """The recorded logits of row `row`'s drawn tokens: (steps of that row, V)."""
    return check_recorded(generation).logits[row, : len(generation.token_ids[row])]


def drawn_step_logits(generation: Generation) -> Tensor:
    """The recorded logits of every drawn token, all rows one after another: (steps, V)."""
    check_recorded(generation)
    return torch.cat([row_logits(generation, row) for row in range(len(generation.token_ids))])


def token_log_probs(generation: Generation) -> list[Tensor]:
    """Per row, float64 log P of each drawn token (the end marker included) under the raw model."""
    steps = drawn_step_logits(generation)
    ids = torch.tensor([token for row in generation.token_ids for token in row], dtype=torch.long)
    with torch_threads(GENERATION_THREADS):
        scores = torch.log_softmax(steps.to(torch.float64), dim=-1).gather(-1, ids[:, None])[:, 0]
    return list(scores.split([len(row) for row in generation.token_ids]))


def text_log_probs(generation: Generation) -> list[float]:
    """Per row, the log-probability of the whole drawn text (its end token included)."""
    return [float(scores.sum()) for scores in token_log_probs(generation)]
