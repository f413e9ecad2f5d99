"""Reading beam search results: the beam step by step, and continuations side by side.

Lesson 06 prints the beam at each step and compares what beam search and sampling write;
the measures (log-probability per character under the model and under TinyTales, repeated
4-grams, a repeating tail) come from `lessonlib.scoring` and `lessonlib.metrics`. This module
only gathers and formats them; it runs no search (see `lessonlib.beam_search`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lessonlib.beam_search import BeamSearchResult
from lessonlib.generation import Generation, LanguageModel
from lessonlib.metrics import Cycle, find_cycle, repetition_rate
from lessonlib.scoring import model_char_log_probs, truth_char_log_probs
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "ContinuationProfile",
    "format_beam_steps",
    "format_profiles",
    "generation_log_probs",
    "profile_continuation",
]


@dataclass(frozen=True)
class ContinuationProfile:
    """Measures of one continuation of a prompt."""

    text: str  # the continuation, without the prompt and without the end token
    finished: bool  # True when the continuation ended the story
    model_per_char: float  # mean model log P per scored character (the end counts if finished)
    truth_per_char: float  # the same under TinyTales; -inf once the text leaves the grammar
    repetition: float  # metrics.repetition_rate(text, n=4): share of repeated word 4-grams
    cycle: Cycle | None  # metrics.find_cycle(text): a repeating tail, or None

    @property
    def valid(self) -> bool:
        """True when TinyTales can produce the text (and its end, if finished)."""
        return self.truth_per_char > -math.inf


def profile_continuation(
    model: LanguageModel, prompt: str, text: str, *, tokenizer: CharTokenizer, finished: bool
) -> ContinuationProfile:
    """Measure `text` as a continuation of `prompt` (scored after the prompt, prompt excluded)."""
    if not isinstance(prompt, str) or not isinstance(text, str):
        raise TypeError(
            f"prompt and text must be str, got {type(prompt).__name__}, {type(text).__name__}"
        )
    if not isinstance(finished, bool):
        raise TypeError(f"finished must be a bool, got {finished!r}")
    if not text and not finished:
        raise ValueError("text must not be empty unless finished=True (nothing would be scored)")
    skip = len(prompt)
    model_scores = model_char_log_probs(model, prompt + text, tokenizer=tokenizer, end=finished)
    truth_scores = truth_char_log_probs(prompt + text, end=finished)
    return ContinuationProfile(
        text=text,
        finished=finished,
        model_per_char=float(model_scores[skip:].mean()),
        truth_per_char=float(truth_scores[skip:].mean()),
        repetition=repetition_rate(text),
        cycle=find_cycle(text),
    )


def generation_log_probs(generation: Generation) -> list[float]:
    """Log-probability of each sampled continuation (its end token included), from its logits.

    Needs `generate(..., record_logits=True)`; works for every course model, the bigram too.
    """
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    if generation.logits is None:
        raise ValueError("generation has no logits; call generate with record_logits=True")
    log_probs = torch.log_softmax(generation.logits.to(torch.float64), dim=-1)
    return [
        float(log_probs[row, torch.arange(len(ids)), ids].sum())
        for row, ids in enumerate(map(torch.tensor, generation.token_ids))
    ]


def format_beam_steps(result: BeamSearchResult, *, steps: int | None = None) -> str:
    """A table of the kept (and newly ended) hypotheses after each step; steps=None: all."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be None or an int >= 1, got {steps!r}")
    if not result.steps:
        raise ValueError("result has no step records; run beam_search with record_steps=True")
    lines = ["step  rank  hypothesis              log P"]
    for record in result.steps[:steps]:
        for rank, hypothesis in enumerate(record.kept, start=1):
            step = str(record.step) if rank == 1 else ""
            lines.append(
                f"{step:>4}  {rank:>4}  {hypothesis.text!r:<22} {hypothesis.log_prob:6.2f}"
            )
        for hypothesis in record.ended:
            lines.append(f"{'':>4}  {'end':>4}  {hypothesis.text!r:<22} {hypothesis.log_prob:6.2f}")
    return "\n".join(lines)


def format_profiles(rows: list[tuple[str, ContinuationProfile]]) -> str:
    """One line per (label, profile): per-character log P, repetition, cycle, and the ending."""
    header = (
        f"{'decoding':<14} {'model/char':>10} {'truth/char':>10} {'repeated':>8}  "
        f"{'loop unit':<28} finished"
    )
    lines = [header]
    for label, profile in rows:
        unit = repr(profile.cycle.unit) if profile.cycle else "-"
        lines.append(
            f"{label:<14} {profile.model_per_char:>10.4f} {profile.truth_per_char:>10.4f} "
            f"{profile.repetition:>8.2f}  {unit:<28} {profile.finished}"
        )
    return "\n".join(lines)
