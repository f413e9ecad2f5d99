"""Temperature and sampler settings in numbers: one distribution's regimes, and samples scored.

`temperature_regimes` follows one row of logits from tau near 0 (greedy) to large tau (uniform).
`sampler_sweep` draws stories per sampler setting and scores them against the TinyTales grammar,
each measure with its standard error, so that a notebook can tell a difference from noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.batches import batch_sizes, generate_batches, seeded
from lessonlib.analysis.distributions import entropy
from lessonlib.analysis.statistics import in_standard_errors, jackknife_se, mean_and_se, share_se
from lessonlib.generation import LanguageModel
from lessonlib.metrics import distinct_n, find_cycle, repetition_rate
from lessonlib.progress import progress_bar
from lessonlib.sampling import LIBRARY_ORDERS, sampling_probs
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_logits, check_optional_int, check_temperature

__all__ = [
    "Regime",
    "SampleScores",
    "format_trade_off",
    "gap_in_se",
    "sampler_sweep",
    "score_samples",
    "score_settings",
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
    logits = check_logits("logits", logits, dims=(1,))
    rows = []
    for temperature in _check_temperatures(temperatures):
        probs = sampling_probs(logits.double(), temperature=temperature)
        # abs() turns the -0.0 of a one-hot's entropy into 0.0.
        rows.append(Regime(temperature, float(probs.max()), abs(float(entropy(probs)))))
    return rows


@dataclass(frozen=True)
class SampleScores:
    """How a batch of continuations drawn with one sampler setting fares."""

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
    # Share whose text breaks the grammar somewhere (finished or not). Every story is valid,
    # broken, or unfinished without an error so far: valid + broken + cut_off = 1.
    broken: float = 0.0
    repetition_se: float = 0.0  # standard error of `repetition` (mean over stories)
    distinct_4_se: float = 0.0  # standard error of `distinct_4` (jackknife over continuations)
    mean_length_se: float = 0.0  # standard error of `mean_length` (mean over continuations)

    @property
    def valid_se(self) -> float:
        """Standard error of the valid share."""
        return share_se(self.valid, self.samples)

    @property
    def broken_se(self) -> float:
        """Standard error of the broken share."""
        return share_se(self.broken, self.samples)

    @property
    def cut_off(self) -> float:
        """Share that ran out of budget before ending, with no grammar error so far."""
        return max(0.0, 1.0 - self.valid - self.broken)

    @property
    def cut_off_se(self) -> float:
        """Standard error of the cut-off share."""
        return share_se(self.cut_off, self.samples)


def _breaks_grammar(story: str, finished: bool) -> bool:
    """True if `story` has an error: a complete story it is not, or (unfinished) no prefix of one."""
    if finished:
        return not tinytales.is_valid_story(story)
    return tinytales.longest_possible_prefix(story) < len(story)


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
    texts, n = list(texts), len(texts)
    stories = [prompt + text for text in texts]
    # An unfinished continuation is not a story yet, so it cannot be a valid one.
    valid = [done and tinytales.is_valid_story(story) for story, done in zip(stories, finished)]
    broken = [_breaks_grammar(story, bool(done)) for story, done in zip(stories, finished)]
    repetition, repetition_se = mean_and_se([repetition_rate(story, n=4) for story in stories])
    mean_length, mean_length_se = mean_and_se([len(text) for text in texts])
    # distinct-4 is pooled over the texts, not a mean: its error is the jackknife's.
    without_one = [distinct_n(texts[:i] + texts[i + 1 :], n=4) for i in range(n)]
    return SampleScores(
        temperature=float(temperature),
        samples=n,
        valid=sum(valid) / n,
        finished=sum(map(bool, finished)) / n,
        looping=sum(find_cycle(text) is not None for text in texts) / n,
        repetition=repetition,
        distinct_2=distinct_n(texts, n=2),
        mean_length=mean_length,
        texts=tuple(texts),
        label=label,
        distinct_4=distinct_n(texts, n=4),
        broken=sum(broken) / n,
        repetition_se=repetition_se,
        distinct_4_se=jackknife_se(without_one),
        mean_length_se=mean_length_se,
    )


_SETTING_NAMES = {
    "temperature": "tau",
    "top_k": "top-k",
    "top_p": "top-p",
    "min_p": "min-p",
    "typical_p": "typical",
    "eta_cutoff": "eta",
    "repetition_penalty": "repetition",
    "frequency_penalty": "frequency",
    "presence_penalty": "presence",
}


def _order_label(order: Sequence[str]) -> str:
    """A library's name for its order, else the stages joined by '>'."""
    for library, library_order in LIBRARY_ORDERS.items():
        if tuple(order) == library_order:
            return f"{library} order"
    return "order " + ">".join(order)


def setting_label(setting: Mapping[str, object]) -> str:
    """A sampler setting in words: {"temperature": 0.7, "top_k": 3} -> "tau 0.7, top-k 3"."""
    unknown = set(setting) - set(_SETTING_NAMES) - {"order"}
    if unknown:
        accepted = sorted([*_SETTING_NAMES, "order"])
        raise ValueError(f"setting has unknown keys {sorted(unknown)}; accepted: {accepted}")
    parts = [
        f"{_SETTING_NAMES[key]} {value:g}"
        for key, value in setting.items()
        if key != "order" and value is not None
    ]
    if setting.get("order") is not None:
        parts.append(_order_label(setting["order"]))
    return ", ".join(parts) or "tau 1"


def _labels(settings: object) -> list[str]:
    """The label of each setting, checked up front: TypeError/ValueError for a bad one."""
    if isinstance(settings, (str, bytes, Mapping)) or not isinstance(settings, Sequence):
        raise TypeError(
            f"settings must be a sequence of dicts such as [{{'top_p': 0.9}}], got {settings!r}"
        )
    return [setting_label(setting) for setting in settings]


def score_settings(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    settings: Sequence[Mapping[str, float | int | None]],
    samples: int,
    max_new_tokens: int,
    batch_size: int,
    batch_seeds: Sequence[int],
    progress: bool = False,
) -> list[SampleScores]:
    """Score `samples` continuations of `prompt` per setting; batch b of each uses batch_seeds[b].

    A setting holds keyword arguments of `generate` (sampler settings, `order`, penalties). A greedy
    setting (temperature 0) is generated once, and that text stands for every sample.
    """
    sizes = batch_sizes(samples, batch_size)
    labels = _labels(settings)
    bar = progress_bar(
        total=samples * len(settings), unit="story", show=progress, desc="stories drawn"
    )
    rows = []
    for setting, label in zip(settings, labels):
        bar.set_postfix_str(label)
        temperature = 1.0 if setting.get("temperature") is None else setting["temperature"]
        greedy = temperature == 0
        batches = generate_batches(
            model, prompt, tokenizer=tokenizer, sizes=[1] if greedy else sizes,
            generators=seeded(batch_seeds[: 1 if greedy else len(sizes)]), bar=bar,
            max_new_tokens=max_new_tokens, **{**setting, "temperature": temperature},
        )  # fmt: skip
        texts = [text for batch in batches for text in batch.texts]
        finished = [done for batch in batches for done in batch.finished]
        if greedy:
            texts, finished = texts * samples, finished * samples
            bar.update(samples - 1)
        rows.append(score_samples(prompt, texts, finished, temperature=temperature, label=label))
    bar.close()
    return rows


def sampler_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    samples: int,
    seed: int,
    batch_size: int | None = None,
    **sweep: Any,
) -> list[SampleScores]:
    """`score_settings` (prompt, settings, max_new_tokens, progress) with seeds drawn from `seed`.

    `batch_size` None draws each setting's samples in one batch seeded `seed`; an int draws
    batches of at most that many, batch 0 seeded `seed` (so it is what `batch_size=None` draws
    for `samples=batch_size`) and later batches with seeds drawn from `seed` (not `seed + b`,
    so that the batches of two nearby seeds never coincide).
    """
    samples = check_int("samples", samples, low=1)
    batch_size = check_optional_int("batch_size", batch_size, low=1) or samples
    later = len(batch_sizes(samples, batch_size)) - 1
    more = torch.randint(0, 2**62, (later,), generator=torch.Generator().manual_seed(seed))
    seeds = [seed, *more.tolist()]
    return score_settings(
        model, tokenizer, samples=samples, batch_size=batch_size, batch_seeds=seeds, **sweep
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
    batch_size: int | None = None,
    progress: bool = False,
) -> list[SampleScores]:
    """`sampler_sweep` over temperatures alone (rows labelled by tau in `format_trade_off`)."""
    check_int("samples_per_temperature", samples_per_temperature, low=1)
    rows = sampler_sweep(
        model,
        tokenizer,
        prompt=prompt,
        settings=[{"temperature": t} for t in _check_temperatures(temperatures)],
        samples=samples_per_temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    return [replace(row, label="") for row in rows]


def format_trade_off(rows: Sequence[SampleScores]) -> str:
    """A text table of `rows` with standard errors: valid, broken, cut off, diversity, length."""
    width = max([5] + [len(row.label) for row in rows])
    head = "tau" if not any(row.label for row in rows) else "setting"
    header = (
        f"{head:>{width}} {'n':>4} {'valid (se)':>11} {'broken (se)':>11} {'cut off (se)':>12} "
        f"{'repeated 4-grams (se)':>21} {'distinct-4 (se)':>15} {'length (se)':>11}"
    )
    lines = [header]
    for row in rows:
        name = row.label or f"{row.temperature:.2f}"
        lines.append(
            f"{name:>{width}} {row.samples:4d} {row.valid:5.2f} ({row.valid_se:.2f}) "
            f"{row.broken:5.2f} ({row.broken_se:.2f}) {row.cut_off:6.2f} ({row.cut_off_se:.2f}) "
            f"{row.repetition:13.3f} ({row.repetition_se:.3f}) "
            f"{row.distinct_4:7.3f} ({row.distinct_4_se:.3f}) "
            f"{f'{row.mean_length:.0f} ({row.mean_length_se:.0f})':>11}"
        )
    return "\n".join(lines)


# Measures with a standard error: attribute of the value, attribute of its standard error.
_WITH_SE = {
    "valid": ("valid", "valid_se"),
    "broken": ("broken", "broken_se"),
    "cut_off": ("cut_off", "cut_off_se"),
    "repetition": ("repetition", "repetition_se"),
    "distinct_4": ("distinct_4", "distinct_4_se"),
    "length": ("mean_length", "mean_length_se"),
}


def gap_in_se(first: SampleScores, second: SampleScores, measure: str) -> float:
    """`first` minus `second` on `measure`, in standard errors of that difference.

    The rows count as independent, se = sqrt(se_1^2 + se_2^2): rows drawn with shared seeds are
    alike more often than not, which only makes this rule cautious.
    """
    if measure not in _WITH_SE:
        raise ValueError(f"measure must be one of {sorted(_WITH_SE)}, got {measure!r}")
    for name, row in (("first", first), ("second", second)):
        if not isinstance(row, SampleScores):
            raise TypeError(f"{name} must be a SampleScores, got {type(row).__name__}")
    value, error = _WITH_SE[measure]
    difference = getattr(first, value) - getattr(second, value)
    return in_standard_errors(difference, math.hypot(getattr(first, error), getattr(second, error)))


def format_valid_variety(rows: Sequence[SampleScores]) -> str:
    """A short table of `rows`: the share of valid stories and distinct-4, with standard errors."""
    width = max([7] + [len(row.label) for row in rows])
    lines = [f"{'setting':>{width}} {'n':>3} {'valid (se)':>11} {'distinct-4 (se)':>15}"]
    for row in rows:
        lines.append(
            f"{row.label:>{width}} {row.samples:>3} {row.valid:>5.2f} ({row.valid_se:.2f}) "
            f"{row.distinct_4:>8.3f} ({row.distinct_4_se:.3f})"
        )
    return "\n".join(lines)
