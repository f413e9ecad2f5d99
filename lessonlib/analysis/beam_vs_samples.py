"""Reading beam search results: the beam step by step, and continuations side by side.

Lesson 06 prints the beam at each step and compares what beam search and sampling write, scored
with `lessonlib.scoring` and `lessonlib.metrics`; `sample_fixed_length` draws the samples under
the beams' length rule. The search itself is `lessonlib.beam_search`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.beam_search import BeamSearchResult, Hypothesis
from lessonlib.generation import LanguageModel, next_token_logits, reserve_cache
from lessonlib.metrics import Cycle, find_cycle, repetition_rate
from lessonlib.progress import progress_bar
from lessonlib.sampling import sample_next
from lessonlib.scoring import model_char_log_probs, truth_char_log_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_optional_int

__all__ = [
    "ContinuationProfile",
    "format_beam_steps",
    "format_profiles",
    "profile_continuation",
    "profile_hypothesis",
    "sample_fixed_length",
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


def profile_hypothesis(prompt: str, hypothesis: Hypothesis) -> ContinuationProfile:
    """Measure a beam or sampled hypothesis from its own log-probability (no model call)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not isinstance(hypothesis, Hypothesis):
        raise TypeError(f"hypothesis must be a Hypothesis, got {type(hypothesis).__name__}")
    if hypothesis.length == 0:
        raise ValueError("hypothesis must have at least one token (nothing would be scored)")
    truth_scores = truth_char_log_probs(prompt + hypothesis.text, end=hypothesis.finished)
    return ContinuationProfile(
        text=hypothesis.text,
        finished=hypothesis.finished,
        # length counts the end token of a finished hypothesis, as profile_continuation does.
        model_per_char=hypothesis.log_prob / hypothesis.length,
        truth_per_char=float(truth_scores[len(prompt) :].mean()),
        repetition=repetition_rate(hypothesis.text),
        cycle=find_cycle(hypothesis.text),
    )


def _fixed_length_start(
    model: LanguageModel,
    prompt: str,
    tokenizer: CharTokenizer,
    num_samples: int,
    generator: torch.Generator,
) -> Tensor:
    """The context (num_samples, 1 + len(prompt)) every fixed-length sample starts from."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if tokenizer.boundary in prompt:
        raise ValueError(f"prompt must not contain the boundary {tokenizer.boundary!r}")
    if model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model.vocab_size}; pass the tokenizer that came with the model"
        )
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    device = first.device if first is not None else torch.device("cpu")
    context = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(prompt)]], device=device)
    return context.repeat(num_samples, 1)


@torch.inference_mode()
def sample_fixed_length(
    model: LanguageModel,
    prompt: str,
    *,
    tokenizer: CharTokenizer,
    num_samples: int,
    length: int,
    generator: torch.Generator,
    progress: bool = False,
) -> list[Hypothesis]:
    """`num_samples` continuations of exactly `length` tokens drawn at temperature 1, end forbidden.

    The end token's logit is -inf at every draw (as Hugging Face's `min_new_tokens` does); each
    `log_prob` is the model's own, not renormalised, log-probability of the drawn tokens, which
    `beam_search(..., min_new_tokens=length)` sums too: samples and beams are scored alike.
    """
    num_samples = check_int("num_samples", num_samples, low=1)
    length = check_int("length", length, low=1)
    context = _fixed_length_start(model, prompt, tokenizer, num_samples, generator)
    start = fresh = context.shape[1]
    kv_cache = model.new_kv_cache(num_samples)
    reserve_cache(kv_cache, start + length, block_size=model.block_size)
    log_probs = torch.zeros(num_samples, dtype=torch.float64)
    # One thread, whatever the batch: on two busy cores, lesson 06's 128 samples took 16 s on
    # one thread and 104 s on two.
    with torch_threads(GENERATION_THREADS):
        for _ in progress_bar(range(length), desc="sampling", show=progress):
            logits = next_token_logits(model, context, kv_cache, new_tokens=fresh)
            own = torch.log_softmax(logits.to(device="cpu", dtype=torch.float64), dim=-1)
            forbidden = logits.clone()
            forbidden[:, tokenizer.boundary_id] = -math.inf  # after `own`: the model's own score
            drawn = sample_next(forbidden, generator=generator)
            log_probs += own.gather(1, drawn[:, None].cpu()).squeeze(1)
            context = torch.cat([context, drawn[:, None]], dim=1)
            fresh = 1
    return [
        Hypothesis(tokenizer.decode(ids), tuple(ids), float(log_p), float(log_p), False)
        for ids, log_p in zip(context[:, start:].tolist(), log_probs.tolist(), strict=True)
    ]


def format_beam_steps(result: BeamSearchResult, *, steps: int | None = None) -> str:
    """A table of the kept (and newly ended) hypotheses after each step; steps=None: all."""
    steps = check_optional_int("steps", steps, low=1)
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
    """One line per (label, profile): per-character log P, repetition and the repeating unit."""
    lines = [f"{'decoding':<14} {'model/char':>10} {'truth/char':>10} {'repeated':>8}  loop unit"]
    for label, profile in rows:
        unit = repr(profile.cycle.unit) if profile.cycle else "-"
        lines.append(
            f"{label:<14} {profile.model_per_char:>10.4f} {profile.truth_per_char:>10.4f} "
            f"{profile.repetition:>8.2f}  {unit}"
        )
    return "\n".join(lines)
