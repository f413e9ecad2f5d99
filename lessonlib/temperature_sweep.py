"""Temperature in numbers: the three regimes of one distribution, and samples scored per temperature.

`temperature_regimes` follows one row of logits from tau near 0 (greedy) through tau = 1 (the
model) to large tau (uniform): the top token's probability and the entropy at each temperature.
`temperature_sweep` draws a batch of continuations at each temperature and scores them with the
TinyTales grammar and the repetition measures of `lessonlib.metrics`, so that both failure
modes show as numbers: too cold repeats itself, too hot breaks the grammar.

Pure functions of their inputs (randomness only from the given seed); no plotting here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.distributions import entropy
from lessonlib.generation import LanguageModel, generate
from lessonlib.metrics import distinct_n, find_cycle, repetition_rate
from lessonlib.sampling import check_temperature, sampling_probs
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "Regime",
    "SampleScores",
    "format_scores",
    "score_samples",
    "temperature_regimes",
    "temperature_sweep",
]


@dataclass(frozen=True)
class Regime:
    """One distribution at one temperature, summarised."""

    temperature: float
    p_argmax: float  # probability of the most likely token
    entropy: float  # nats; 0 for one-hot, log(V) for uniform


def _check_temperatures(temperatures: Sequence[float]) -> list[float]:
    """`temperatures` as a list of floats, or TypeError/ValueError naming the bad one."""
    accepted = "temperatures must be a non-empty sequence of numbers >= 0"
    not_a_sequence = TypeError(f"{accepted}, got {temperatures!r} ({type(temperatures).__name__})")
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Iterable):
        raise not_a_sequence
    try:
        values = list(temperatures)
    except TypeError:  # e.g. a 0-d tensor, iterable in type but not in fact
        raise not_a_sequence from None
    if not values:
        raise ValueError(f"{accepted}, got none")
    return [check_temperature(value, name=f"temperatures[{i}]") for i, value in enumerate(values)]


def temperature_regimes(logits: Tensor, temperatures: Sequence[float]) -> list[Regime]:
    """P(argmax) and entropy of softmax(`logits` / tau) for each tau (0 = greedy); logits (V,)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (V,), got {type(logits).__name__}")
    if logits.dim() != 1 or logits.shape[0] == 0:
        raise ValueError(
            f"logits must be one step's logits of shape (V,) with V >= 1, "
            f"got shape {tuple(logits.shape)}"
        )
    rows = []
    for temperature in _check_temperatures(temperatures):
        probs = sampling_probs(logits.double(), temperature=temperature)
        # abs() turns the -0.0 of a one-hot's entropy into 0.0.
        rows.append(Regime(temperature, float(probs.max()), abs(float(entropy(probs)))))
    return rows


@dataclass(frozen=True)
class SampleScores:
    """How a batch of continuations drawn at one temperature fares."""

    temperature: float
    samples: int  # continuations scored
    valid: float  # share whose prompt + continuation is a complete TinyTales story
    finished: float  # share that ended (produced the boundary) within the token budget
    looping: float  # share whose continuation ends in a repeating cycle (metrics.find_cycle)
    repetition: float  # mean share of word 4-grams already seen earlier in the same story
    distinct_2: float  # distinct word bigrams / all word bigrams, pooled over continuations
    mean_length: float  # characters generated per continuation, on average
    texts: tuple[str, ...] = field(default=(), repr=False)  # the continuations themselves


def score_samples(
    prompt: str, texts: Sequence[str], finished: Sequence[bool], *, temperature: float
) -> SampleScores:
    """Score continuations `texts` of `prompt` (drawn at `temperature`) against the grammar."""
    if len(texts) != len(finished) or not texts:
        raise ValueError(
            f"texts and finished must be non-empty and of equal length, got {len(texts)} "
            f"and {len(finished)}"
        )
    stories = [prompt + text for text in texts]
    # An unfinished continuation is not a story yet, so it cannot be a valid one.
    valid = [done and tinytales.is_valid_story(story) for story, done in zip(stories, finished)]
    n = len(texts)
    return SampleScores(
        temperature=float(temperature),
        samples=n,
        valid=sum(valid) / n,
        finished=sum(map(bool, finished)) / n,
        looping=sum(find_cycle(text) is not None for text in texts) / n,
        repetition=sum(repetition_rate(story, n=4) for story in stories) / n,
        distinct_2=distinct_n(list(texts), n=2),
        mean_length=sum(len(text) for text in texts) / n,
        texts=tuple(texts),
    )


def temperature_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    temperatures: Sequence[float],
    samples_per_temperature: int,
    max_new_tokens: int,
    seed: int,
) -> list[SampleScores]:
    """Draw `samples_per_temperature` continuations of `prompt` at each temperature and score them.

    Every temperature gets a generator seeded with the same `seed`: the batches then share
    their random numbers, so the differences between rows come from the temperature rather
    than from luck, and the result is reproducible. Temperature 0 (greedy) is deterministic,
    so it is generated once and that continuation stands for the whole batch.
    """
    if isinstance(samples_per_temperature, bool) or not isinstance(samples_per_temperature, int):
        raise TypeError(f"samples_per_temperature must be an int, got {samples_per_temperature!r}")
    if samples_per_temperature < 1:
        raise ValueError(f"samples_per_temperature must be >= 1, got {samples_per_temperature}")
    rows = []
    for temperature in _check_temperatures(temperatures):
        result = generate(
            model,
            [prompt] * samples_per_temperature,
            tokenizer=tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
        )
        rows.append(score_samples(prompt, result.texts, result.finished, temperature=temperature))
    return rows


def format_scores(rows: Sequence[SampleScores]) -> str:
    """A fixed-width text table of `rows`, one line per temperature."""
    header = (
        f"{'tau':>5} {'valid':>6} {'finished':>8} {'looping':>7} {'repeated 4-grams':>16} "
        f"{'distinct-2':>10} {'length':>6}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.temperature:5.2f} {row.valid:6.2f} {row.finished:8.2f} {row.looping:7.2f} "
            f"{row.repetition:16.3f} {row.distinct_2:10.3f} {row.mean_length:6.0f}"
        )
    return "\n".join(lines)
