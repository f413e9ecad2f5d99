"""Scoring given texts: the log-probability of each character, under a model or under TinyTales.

A text is read as a story is, from the start marker one character at a time; with `end=True` the
end marker after it is scored too, so that the sum scores a complete story. Nothing here
generates or trains.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.generation import LanguageModel
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer

__all__ = ["model_char_log_probs", "text_log_prob", "truth_char_log_probs", "truth_char_ranks"]


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


@torch.inference_mode()
def model_char_log_probs(
    model: LanguageModel, text: str, *, tokenizer: CharTokenizer, end: bool = False
) -> Tensor:
    """float64 (len(text) + end,): log P(char | start marker + text before it) under `model`.

    The whole text must fit in one context window (start marker + text <= block_size tokens),
    so that every character is scored with all of its past, as in generation.
    """
    _check_text(text)
    if tokenizer.boundary in text:
        raise ValueError(
            f"text must not contain the boundary {tokenizer.boundary!r}; score one story at a "
            "time and pass end=True to score its end"
        )
    ids = [tokenizer.boundary_id, *tokenizer.encode(text)]
    if end:
        ids.append(tokenizer.boundary_id)
    if len(ids) - 1 > model.block_size:
        raise ValueError(
            f"text must fit in the model's context: start marker + {len(text)} characters is "
            f"{len(ids) - 1} tokens, more than block_size={model.block_size}"
        )
    if len(ids) == 1:
        return torch.zeros(0, dtype=torch.float64)
    tokens = torch.tensor([ids])
    # Position t's logits predict token t + 1: inputs are all but the last token. One thread,
    # as in generation: at this model size thread hand-offs cost more than they save.
    with torch_threads(GENERATION_THREADS):
        logits = model(tokens[:, :-1])[0].to(torch.float64)
    log_probs = torch.log_softmax(logits, dim=-1)
    return log_probs.gather(-1, tokens[0, 1:, None]).squeeze(-1)


def text_log_prob(
    model: LanguageModel, text: str, *, tokenizer: CharTokenizer, end: bool = False
) -> float:
    """Natural-log probability of `text` under `model`, read from the start marker (see above)."""
    return float(model_char_log_probs(model, text, tokenizer=tokenizer, end=end).sum())


def truth_char_log_probs(text: str, *, end: bool = False) -> Tensor:
    """float64 (len(text) + end,): the exact TinyTales log P(char | text before it).

    A character the grammar cannot produce there scores -inf, and so does everything after it
    (the text has left the grammar). With `end=True` the sum equals
    `tinytales.story_log_prob(text)`.
    """
    _check_text(text)
    if tinytales.END in text:
        raise ValueError(
            f"text must not contain END {tinytales.END!r}; pass end=True to score the end"
        )
    target = text + tinytales.END if end else text
    possible = tinytales.longest_possible_prefix(text)
    distributions = tinytales.next_char_distributions(text[:possible])
    scores = [-math.inf] * len(target)
    for position, distribution in enumerate(distributions[: len(target)]):
        probability = distribution.get(target[position], 0.0)
        if probability == 0.0:
            break  # this character leaves the grammar; it and all after it score -inf
        scores[position] = math.log(probability)
    return torch.tensor(scores, dtype=torch.float64)


def truth_char_ranks(text: str) -> Tensor:
    """int64 (len(text),): how many characters TinyTales finds strictly more likely than each one.

    Rank 0 means the character is (one of) the grammar's most likely next characters: a text
    whose ranks are all 0 is what greedy decoding of the grammar writes (up to ties). A
    character the grammar cannot produce there ranks -1, and so does everything after it.
    """
    _check_text(text)
    if tinytales.END in text:
        raise ValueError(f"text must not contain END {tinytales.END!r}; rank one story prefix")
    possible = tinytales.longest_possible_prefix(text)
    distributions = tinytales.next_char_distributions(text[:possible])
    ranks = [-1] * len(text)
    for position in range(possible):
        distribution = distributions[position]
        probability = distribution[text[position]]
        ranks[position] = sum(other > probability for other in distribution.values())
    return torch.tensor(ranks, dtype=torch.int64)
