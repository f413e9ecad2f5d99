"""Temperature in numbers: the three regimes of one distribution, and samples scored per temperature.

`temperature_regimes` follows one row of logits from tau near 0 (greedy) through tau = 1 (the
model) to large tau (uniform): the top token's probability and the entropy at each temperature.
`sampler_sweep` draws a batch of continuations for each sampler setting (temperature, top-k,
top-p) and scores them with the TinyTales grammar and the repetition measures of
`lessonlib.metrics`, so that both ends show as numbers: cold text is valid but repetitive, hot
text is diverse but breaks the grammar. `temperature_sweep` is the sweep over temperatures alone.
Each share and mean comes with its standard error over the stories (`valid_se`, `broken_se`,
`repetition_se`, `distinct_4_se`, `mean_length_se`), so a notebook can tell a difference from
noise (`gap_in_se`), and `format_trade_off` prints them.

Pure functions of their inputs (randomness only from the given seed); no plotting here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.distributions import entropy
from lessonlib.generation import LanguageModel, generate
from lessonlib.metrics import distinct_n, find_cycle, repetition_rate
from lessonlib.progress import progress_bar
from lessonlib.sampling import check_temperature, sampling_probs
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "Regime",
    "SampleScores",
    "format_scores",
    "format_trade_off",
    "gap_in_se",
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
    # Share whose text breaks the grammar somewhere (finished or not). Every story is valid,
    # broken, or unfinished without an error so far: valid + broken + cut_off = 1.
    broken: float = 0.0
    repetition_se: float = 0.0  # standard error of `repetition` (mean over stories)
    distinct_4_se: float = 0.0  # standard error of `distinct_4` (jackknife over continuations)
    mean_length_se: float = 0.0  # standard error of `mean_length` (mean over continuations)

    @property
    def valid_se(self) -> float:
        """Standard error of the valid share (binomial, from `samples` stories)."""
        return (self.valid * (1 - self.valid) / self.samples) ** 0.5

    @property
    def broken_se(self) -> float:
        """Standard error of the broken share (binomial, from `samples` stories)."""
        return (self.broken * (1 - self.broken) / self.samples) ** 0.5

    @property
    def cut_off(self) -> float:
        """Share that ran out of budget before ending, with no grammar error so far."""
        return max(0.0, 1.0 - self.valid - self.broken)

    @property
    def cut_off_se(self) -> float:
        """Standard error of the cut-off share (binomial, from `samples` stories)."""
        return (self.cut_off * (1 - self.cut_off) / self.samples) ** 0.5


def _se_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n); 0 if n < 2)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _distinct_4_se(texts: Sequence[str]) -> float:
    """Jackknife standard error of pooled distinct-4: recompute it leaving out one text at a time."""
    n = len(texts)
    if n < 2:
        return 0.0
    leave_one_out = [distinct_n([t for j, t in enumerate(texts) if j != i], n=4) for i in range(n)]
    mean = sum(leave_one_out) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in leave_one_out))


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
    stories = [prompt + text for text in texts]
    # An unfinished continuation is not a story yet, so it cannot be a valid one.
    valid = [done and tinytales.is_valid_story(story) for story, done in zip(stories, finished)]
    broken = [_breaks_grammar(story, bool(done)) for story, done in zip(stories, finished)]
    repetition = [repetition_rate(story, n=4) for story in stories]
    lengths = [float(len(text)) for text in texts]
    n = len(texts)
    return SampleScores(
        temperature=float(temperature),
        samples=n,
        valid=sum(valid) / n,
        finished=sum(map(bool, finished)) / n,
        looping=sum(find_cycle(text) is not None for text in texts) / n,
        repetition=sum(repetition) / n,
        distinct_2=distinct_n(list(texts), n=2),
        mean_length=sum(lengths) / n,
        texts=tuple(texts),
        label=label,
        distinct_4=distinct_n(list(texts), n=4),
        broken=sum(broken) / n,
        repetition_se=_se_of_mean(repetition),
        distinct_4_se=_distinct_4_se(list(texts)),
        mean_length_se=_se_of_mean(lengths),
    )


def setting_label(setting: Mapping[str, float | int | None]) -> str:
    """A sampler setting in words: {"temperature": 0.7, "top_k": 3} -> "tau 0.7, top-k 3"."""
    names = {"temperature": "tau", "top_k": "top-k", "top_p": "top-p"}
    unknown = set(setting) - set(names)
    if unknown:
        raise ValueError(f"setting has unknown keys {sorted(unknown)}; accepted: {sorted(names)}")
    parts = [f"{names[key]} {value:g}" for key, value in setting.items() if value is not None]
    return ", ".join(parts) or "tau 1"


def _check_count(value: object, name: str, *, allow_none: bool = False) -> int | None:
    """`value` as an int >= 1 (or None if allowed), else TypeError/ValueError naming `name`."""
    if value is None and allow_none:
        return None
    accepted = f"{name} must be an int >= 1" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{accepted}, got {value!r}")
    if value < 1:
        raise ValueError(f"{accepted}, got {value}")
    return value


def _batch_seeds(seed: int, count: int) -> list[int]:
    """Seeds of `count` batches: `seed` itself, then seeds drawn from a generator seeded `seed`.

    Drawn rather than `seed + b`, so that the batches of two nearby seeds never coincide.
    """
    more = torch.randint(0, 2**62, (count - 1,), generator=torch.Generator().manual_seed(seed))
    return [seed, *more.tolist()]


def sampler_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    settings: Sequence[Mapping[str, float | int | None]],
    samples: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[SampleScores]:
    """Draw `samples` continuations of `prompt` for each sampler setting and score them.

    A setting holds keyword arguments of `generate` (`temperature`, `top_k`, `top_p`). Every
    setting gets a generator seeded with the same `seed`: the batches then share their random
    numbers, so the differences between rows come from the setting rather than from luck, and
    the result is reproducible. A greedy setting (temperature 0) is generated once and that
    continuation stands for the whole batch.

    `batch_size` None draws each setting's samples in one batch. An int draws them in batches
    of at most that many: batch 0 with a generator seeded `seed` (so it is what `batch_size=None`
    draws for `samples=batch_size`), each later batch with its own seed drawn from `seed`, the
    same for every setting. Small batches decode on one thread (see
    `lessonlib.generation.decoding_threads`), which keeps a busy machine fast.
    `progress` shows a tqdm bar counting the stories drawn.
    """
    samples = _check_count(samples, "samples")
    batch_size = _check_count(batch_size, "batch_size", allow_none=True) or samples
    settings = list(settings)
    labels = [setting_label(setting) for setting in settings]  # rejects unknown keys up front
    bar = progress_bar(
        total=samples * len(settings), unit="story", show=progress, desc="stories drawn"
    )
    rows = []
    for setting, label in zip(settings, labels):
        bar.set_postfix_str(label)
        temperature = setting.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else temperature
        greedy = temperature == 0
        texts: list[str] = []
        finished: list[bool] = []
        starts = range(0, 1 if greedy else samples, batch_size)
        for start, batch_seed in zip(starts, _batch_seeds(seed, len(starts))):
            size = 1 if greedy else min(batch_size, samples - start)
            result = generate(
                model,
                [prompt] * size,
                tokenizer=tokenizer,
                max_new_tokens=max_new_tokens,
                generator=torch.Generator().manual_seed(batch_seed),
                **{**setting, "temperature": temperature},
            )
            texts += result.texts
            finished += result.finished
            bar.update(samples if greedy else size)
        if greedy:
            texts, finished = texts * samples, finished * samples
        rows.append(score_samples(prompt, texts, finished, temperature=temperature, label=label))
    bar.close()
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
    batch_size: int | None = None,
    progress: bool = False,
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
        batch_size=batch_size,
        progress=progress,
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

    The rows are treated as independent: se = sqrt(se_1^2 + se_2^2). Rows drawn with shared
    seeds are alike more often than not, which only makes this rule cautious. A difference with
    a standard error of 0 is +-inf (0 if there is no difference either).
    """
    if measure not in _WITH_SE:
        raise ValueError(f"measure must be one of {sorted(_WITH_SE)}, got {measure!r}")
    for name, row in (("first", first), ("second", second)):
        if not isinstance(row, SampleScores):
            raise TypeError(f"{name} must be a SampleScores, got {type(row).__name__}")
    value, error = _WITH_SE[measure]
    difference = getattr(first, value) - getattr(second, value)
    se = math.hypot(getattr(first, error), getattr(second, error))
    if se == 0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / se
