"""Temperature in numbers: the three regimes of one distribution, and samples scored per temperature.

`temperature_regimes` follows one row of logits from tau near 0 (greedy) through tau = 1 (the
model) to large tau (uniform): the top token's probability and the entropy at each temperature.
`sampler_sweep` draws a batch of continuations for each sampler setting (temperature, top-k,
top-p) and scores them with the TinyTales grammar and the repetition measures of
`lessonlib.metrics`, so that both failure modes show as numbers: too cold repeats itself, too
hot breaks the grammar. `temperature_sweep` is the sweep over temperatures alone.

Pure functions of their inputs (randomness only from the given seed); no plotting here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    "sampler_sweep",
    "score_samples",
    "setting_label",
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
    label: str = ""  # the sampler setting in words, e.g. "top-p 0.9"; "" means "tau = ..."
    distinct_4: float = 0.0  # distinct word 4-grams / all word 4-grams, pooled

    @property
    def valid_se(self) -> float:
        """Standard error of the valid share (binomial, from `samples` stories)."""
        return (self.valid * (1 - self.valid) / self.samples) ** 0.5


def score_samples(
    prompt: str,
    texts: Sequence[str],
    finished: Sequence[bool],
    *,
    temperature: float,
    label: str = "",
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
        label=label,
        distinct_4=distinct_n(list(texts), n=4),
    )


def setting_label(setting: Mapping[str, float | int | None]) -> str:
    """A sampler setting in words: {"temperature": 0.7, "top_k": 3} -> "tau 0.7, top-k 3"."""
    names = {"temperature": "tau", "top_k": "top-k", "top_p": "top-p"}
    unknown = set(setting) - set(names)
    if unknown:
        raise ValueError(f"setting has unknown keys {sorted(unknown)}; accepted: {sorted(names)}")
    parts = [f"{names[key]} {value:g}" for key, value in setting.items() if value is not None]
    return ", ".join(parts) or "tau 1"


def sampler_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    settings: Sequence[Mapping[str, float | int | None]],
    samples: int,
    max_new_tokens: int,
    seed: int,
) -> list[SampleScores]:
    """Draw `samples` continuations of `prompt` for each sampler setting and score them.

    A setting holds keyword arguments of `generate` (`temperature`, `top_k`, `top_p`). Every
    setting gets a generator seeded with the same `seed`: the batches then share their random
    numbers, so the differences between rows come from the setting rather than from luck, and
    the result is reproducible. A greedy setting (temperature 0) is generated once and that
    continuation stands for the whole batch.
    """
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples must be an int, got {samples!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rows = []
    for setting in settings:
        label = setting_label(setting)
        temperature = setting.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else temperature
        greedy = temperature == 0
        result = generate(
            model,
            [prompt] * (1 if greedy else samples),
            tokenizer=tokenizer,
            max_new_tokens=max_new_tokens,
            generator=torch.Generator().manual_seed(seed),
            **{**setting, "temperature": temperature},
        )
        texts, finished = list(result.texts), list(result.finished)
        if greedy:
            texts, finished = texts * samples, finished * samples
        rows.append(score_samples(prompt, texts, finished, temperature=temperature, label=label))
    return rows


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
    """`sampler_sweep` over temperatures alone (rows labelled by tau in `format_scores`)."""
    if isinstance(samples_per_temperature, bool) or not isinstance(samples_per_temperature, int):
        raise TypeError(f"samples_per_temperature must be an int, got {samples_per_temperature!r}")
    if samples_per_temperature < 1:
        raise ValueError(f"samples_per_temperature must be >= 1, got {samples_per_temperature}")
    rows = sampler_sweep(
        model,
        tokenizer,
        prompt=prompt,
        settings=[{"temperature": t} for t in _check_temperatures(temperatures)],
        samples=samples_per_temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    return [replace(row, label="") for row in rows]


def format_scores(rows: Sequence[SampleScores]) -> str:
    """A fixed-width text table of `rows`, one line per setting (by tau when unlabelled)."""
    width = max([5] + [len(row.label) for row in rows])
    head = "tau" if not any(row.label for row in rows) else "setting"
    header = (
        f"{head:>{width}} {'valid':>6} {'finished':>8} {'looping':>7} {'repeated 4-grams':>16} "
        f"{'distinct-2':>10} {'length':>6}"
    )
    lines = [header]
    for row in rows:
        name = row.label or f"{row.temperature:.2f}"
        lines.append(
            f"{name:>{width}} {row.valid:6.2f} {row.finished:8.2f} {row.looping:7.2f} "
            f"{row.repetition:16.3f} {row.distinct_2:10.3f} {row.mean_length:6.0f}"
        )
    return "\n".join(lines)
