"""Where a model is sure and where it hesitates, what top-k and top-p keep there, and what they
do to whole stories.

The step functions are pure functions of the raw logits that `generate(..., record_logits=True)`
keeps, shape (steps, V), read at temperature 1. "Confident" means the top token's probability
exceeds a threshold; "uncertain" means high entropy. The kept sets come from `lessonlib.sampling`
(`filter_top_k`, `filter_top_p`), so the counts are exactly what the sampler keeps.

For whole stories, `setting_sweep` draws and scores stories per sampler setting (scored with
`lessonlib.analysis.sweeps.score_samples`), `paired_difference` compares two of its rows
with a standard error (`format_paired` prints several such comparisons), and `ending_cut`
reads the model over drawn stories to see whether a nucleus kept the grammar's endings. Every setting draws from generators seeded alike, so story i of two
settings shares its random numbers: the per-story differences are paired, and their spread, not
the spread of each row, decides whether a difference is noise. This module draws nothing but what `setting_sweep` asks `generate` for.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.sweeps import SampleScores, score_samples, setting_label
from lessonlib.generation import LanguageModel, generate
from lessonlib.metrics import distinct_n, repetition_rate
from lessonlib.progress import progress_bar
from lessonlib.sampling import filter_top_k, filter_top_p
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "MEASURES",
    "EndingCut",
    "Kept",
    "Paired",
    "confident_step",
    "ending_cut",
    "format_paired",
    "format_with_se",
    "kept_by_top_k",
    "kept_by_top_p",
    "measure_with_se",
    "paired_difference",
    "setting_sweep",
    "step_entropies",
    "step_top_probs",
    "uncertain_step",
]


@dataclass(frozen=True)
class Kept:
    """What one truncation rule keeps of one step's distribution."""

    rule: str  # e.g. "top-k (k=5)" or "top-p (p=0.9)"
    count: int  # tokens kept
    mass: float  # their probability at temperature 1, before renormalising


def _check_steps(logits: object) -> Tensor:
    """`logits` as a float tensor of shape (steps, V) with steps >= 1, or TypeError/ValueError."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"logits must be a torch.Tensor of shape (steps, V), got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(
            f"logits must have a floating dtype (e.g. torch.float32), got {logits.dtype}; "
            "convert with logits.float()"
        )
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(
            f"logits must have shape (steps, V) with at least one step, got {tuple(logits.shape)}"
        )
    return logits


def _check_start(start: object, steps: int) -> int:
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise TypeError(f"start must be an int in 0..{steps - 1}, got {start!r}")
    if not 0 <= start < steps:
        raise ValueError(f"start must be an int in 0..{steps - 1}, got {start!r}")
    return int(start)


def _probs(logits: Tensor) -> Tensor:
    # float64 so that a top probability of 0.99999 is not rounded to 1.
    return torch.softmax(logits.to(torch.float64), dim=-1)


def step_top_probs(logits: Tensor) -> Tensor:
    """Probability of the most likely token at every step: (steps, V) -> (steps,) float64."""
    return _probs(_check_steps(logits)).amax(dim=-1)


def step_entropies(logits: Tensor) -> Tensor:
    """Entropy in nats of every step's distribution: (steps, V) -> (steps,) float64."""
    probs = _probs(_check_steps(logits))
    # 0 * log 0 counts as 0: tokens with no probability add no uncertainty.
    return -(probs * torch.log(probs).nan_to_num(neginf=0.0)).sum(dim=-1)


def confident_step(logits: Tensor, *, min_top_prob: float = 0.95, start: int = 0) -> int:
    """The first step at or after `start` whose top token has probability > `min_top_prob`."""
    logits = _check_steps(logits)
    start = _check_start(start, logits.shape[0])
    if isinstance(min_top_prob, bool) or not isinstance(min_top_prob, numbers.Real):
        raise TypeError(f"min_top_prob must be a number in [0, 1), got {min_top_prob!r}")
    if not 0 <= min_top_prob < 1:
        raise ValueError(f"min_top_prob must be in [0, 1), got {min_top_prob!r}")
    above = torch.nonzero(step_top_probs(logits)[start:] > min_top_prob)
    if len(above) == 0:
        raise ValueError(
            f"no step at or after start={start} has a top probability above {min_top_prob}"
        )
    return start + int(above[0])


def uncertain_step(logits: Tensor, *, start: int = 0) -> int:
    """The step at or after `start` with the highest entropy (the first one if several tie)."""
    logits = _check_steps(logits)
    start = _check_start(start, logits.shape[0])
    return start + int(step_entropies(logits)[start:].argmax())


def _check_one_step(logits: object) -> None:
    """TypeError/ValueError unless `logits` is one step's logits, a tensor of shape (V,)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (V,), got {type(logits).__name__}")
    if logits.dim() != 1:
        raise ValueError(
            f"logits must be one step's logits of shape (V,), got shape {tuple(logits.shape)}"
        )


def _kept(logits: Tensor, filtered: Tensor, rule: str) -> Kept:
    keep = torch.isfinite(filtered)
    return Kept(rule=rule, count=int(keep.sum()), mass=float(_probs(logits)[keep].sum()))


def kept_by_top_k(logits: Tensor, k: int) -> Kept:
    """Count and mass of the tokens `filter_top_k` keeps of one step's logits (V,)."""
    _check_one_step(logits)
    return _kept(logits, filter_top_k(logits, k), f"top-k (k={k})")


def kept_by_top_p(logits: Tensor, p: float) -> Kept:
    """Count and mass of the tokens `filter_top_p` keeps of one step's logits (V,)."""
    _check_one_step(logits)
    return _kept(logits, filter_top_p(logits, p), f"top-p (p={p})")


# ----- whole stories ------------------------------------------------------------------------------


def _check_count(value: object, name: str) -> int:
    """`value` as an int >= 1, else TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def setting_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    settings: Sequence[Mapping[str, float | int | None]],
    samples: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
    progress: bool = False,
) -> list[SampleScores]:
    """Draw `samples` continuations of `prompt` per sampler setting, scored like `sampler_sweep`.

    A setting holds keyword arguments of `generate` (`temperature`, `top_k`, `top_p`). The
    stories are drawn in batches of `batch_size`; batch b gets the same seed (drawn from `seed`)
    in every setting, so story i of two settings shares its random numbers and their difference
    comes from the setting. Batches smaller than `generation.PARALLEL_BATCH` decode on one
    thread: fast on a busy machine, and the same text on every machine. `progress` shows a tqdm
    bar counting the stories.
    """
    if isinstance(settings, (str, bytes, Mapping)) or not isinstance(settings, Sequence):
        raise TypeError(
            f"settings must be a sequence of dicts such as [{{'top_p': 0.9}}], got {settings!r}"
        )
    samples, batch_size = _check_count(samples, "samples"), _check_count(batch_size, "batch_size")
    labels = [setting_label(setting) for setting in settings]  # rejects unknown keys up front
    starts = range(0, samples, batch_size)
    seeds = torch.randint(
        0, 2**31 - 1, (len(starts),), generator=torch.Generator().manual_seed(seed)
    )
    bar = progress_bar(total=samples * len(settings), unit="story", show=progress)
    rows = []
    for setting, label in zip(settings, labels):
        texts: list[str] = []
        finished: list[bool] = []
        for start, batch_seed in zip(starts, seeds.tolist()):
            size = min(batch_size, samples - start)
            result = generate(
                model,
                [prompt] * size,
                tokenizer=tokenizer,
                max_new_tokens=max_new_tokens,
                generator=torch.Generator().manual_seed(batch_seed),
                **setting,
            )
            texts += result.texts
            finished += result.finished
            bar.update(size)
        temperature = setting.get("temperature")
        temperature = 1.0 if temperature is None else float(temperature)
        rows.append(score_samples(prompt, texts, finished, temperature=temperature, label=label))
    bar.close()
    return rows


# Per-story measures are averaged; pooled ones are computed over the batch of continuations.
_PER_STORY: dict[str, Callable[[str, str], float]] = {
    "valid": lambda prompt, text: float(tinytales.is_valid_story(prompt + text)),
    "repetition": lambda prompt, text: repetition_rate(prompt + text, n=4),
}
_POOLED: dict[str, Callable[[list[str]], float]] = {
    "distinct_2": lambda texts: distinct_n(texts, n=2),
    "distinct_4": lambda texts: distinct_n(texts, n=4),
}
MEASURES = (*_PER_STORY, *_POOLED)  # what measure_with_se and paired_difference accept


def _check_measure(measure: object) -> str:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    return str(measure)


def _check_row(row: object, name: str, prompt: str) -> SampleScores:
    """`row` as a SampleScores of >= 2 texts whose valid share its texts reproduce."""
    if not isinstance(row, SampleScores):
        raise TypeError(
            f"{name} must be a SampleScores (a row of a sweep), got {type(row).__name__}"
        )
    if len(row.texts) < 2 or len(row.texts) != row.samples:
        raise ValueError(
            f"{name} must hold its texts, at least 2 of them, got {len(row.texts)} texts "
            f"for {row.samples} samples"
        )
    # An unfinished story is never a complete one, so validity can be read from the texts alone;
    # a row scored with another prompt would disagree here.
    share = sum(_PER_STORY["valid"](prompt, text) for text in row.texts) / row.samples
    if not math.isclose(share, row.valid, abs_tol=1e-12):
        raise ValueError(
            f"{name}.valid is {row.valid}, but its texts after prompt={prompt!r} give {share}: "
            "pass the prompt the row was drawn with"
        )
    return row


def _se_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n))."""
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _jackknife_se(statistic: Callable[[list[int]], float], n: int) -> float:
    """Jackknife standard error of `statistic(indices)` over n items, leaving out one at a time."""
    leave_one_out = [statistic([j for j in range(n) if j != i]) for i in range(n)]
    mean = sum(leave_one_out) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in leave_one_out))


def measure_with_se(row: SampleScores, *, prompt: str, measure: str) -> tuple[float, float]:
    """A row's `measure` (one of MEASURES) and its standard error over the row's stories.

    Per-story measures ("valid", "repetition") use the standard error of a mean; the pooled
    distinct-n shares use the jackknife (leave one story out at a time).
    """
    measure, row = _check_measure(measure), _check_row(row, "row", prompt)
    texts = list(row.texts)
    if measure in _PER_STORY:
        values = [_PER_STORY[measure](prompt, text) for text in texts]
        return sum(values) / len(values), _se_of_mean(values)
    pooled = _POOLED[measure]
    return pooled(texts), _jackknife_se(lambda keep: pooled([texts[i] for i in keep]), len(texts))


@dataclass(frozen=True)
class Paired:
    """Two settings compared on one measure, story by story over the same seed."""

    measure: str  # one of MEASURES
    first: float  # the measure for the first setting
    second: float  # the measure for the second setting
    se: float  # standard error of first - second, paired by story
    samples: int  # stories per setting

    @property
    def difference(self) -> float:
        """first - second."""
        return self.first - self.second

    @property
    def within_noise(self) -> bool:
        """True if the difference is at most two standard errors from 0."""
        return abs(self.difference) <= 2 * self.se


def paired_difference(
    first: SampleScores, second: SampleScores, *, prompt: str, measure: str
) -> Paired:
    """Compare two rows of one sweep (same prompt, seed and size) on `measure`, paired by story.

    Story i of both rows was drawn with the same random numbers, so the standard error comes
    from the per-story differences (for distinct-n: the jackknife, leaving story i out of both).
    """
    measure = _check_measure(measure)
    first, second = _check_row(first, "first", prompt), _check_row(second, "second", prompt)
    if first.samples != second.samples:
        raise ValueError(
            "first and second must have as many stories (drawn with the same seed), got "
            f"{first.samples} and {second.samples}"
        )
    a, b, n = list(first.texts), list(second.texts), first.samples
    if measure in _PER_STORY:
        score = _PER_STORY[measure]
        x = [score(prompt, text) for text in a]
        y = [score(prompt, text) for text in b]
        se = _se_of_mean([u - v for u, v in zip(x, y)])
        return Paired(measure, sum(x) / n, sum(y) / n, se, n)
    pooled = _POOLED[measure]
    se = _jackknife_se(lambda keep: pooled([a[i] for i in keep]) - pooled([b[i] for i in keep]), n)
    return Paired(measure, pooled(a), pooled(b), se, n)


def format_with_se(rows: Sequence[SampleScores], *, prompt: str) -> str:
    """A text table of sweep rows: each measure with its standard error in parentheses."""
    width = max([7] + [len(row.label) for row in rows])
    header = (
        f"{'setting':>{width}} {'n':>3} {'valid (se)':>12} {'finished':>8} "
        f"{'repeated 4-grams (se)':>21} {'distinct-2 (se)':>15}"
    )
    lines = [header]
    for row in rows:
        valid, valid_se = measure_with_se(row, prompt=prompt, measure="valid")
        repetition, repetition_se = measure_with_se(row, prompt=prompt, measure="repetition")
        distinct, distinct_se = measure_with_se(row, prompt=prompt, measure="distinct_2")
        lines.append(
            f"{row.label:>{width}} {row.samples:>3} {valid:>5.2f} ({valid_se:.2f}) "
            f"{row.finished:>8.2f} {repetition:>13.3f} ({repetition_se:.3f}) "
            f"{distinct:>7.3f} ({distinct_se:.3f})"
        )
    return "\n".join(lines)


_MEASURE_NAMES = {
    "valid": "valid",
    "repetition": "repeated 4-grams",
    "distinct_2": "distinct-2",
    "distinct_4": "distinct-4",
}


def format_paired(
    rows: Sequence[SampleScores],
    pairs: Sequence[tuple[str, str]],
    *,
    prompt: str,
    measures: Sequence[str] = ("valid", "distinct_2"),
) -> str:
    """A text table of paired differences `first - second` between rows of one sweep, by label.

    Each cell gives the difference, its standard error and the difference in standard errors
    (beyond noise when that is more than 2 in size); see `paired_difference`.
    """
    by_label = {row.label: row for row in rows}
    measures = [_check_measure(measure) for measure in measures]
    names = [f"{first} - {second}" for first, second in pairs]
    for label in (label for pair in pairs for label in pair):
        if label not in by_label:
            raise ValueError(f"pairs name the label {label!r}; the rows have {sorted(by_label)}")
    width = max([len("paired difference")] + [len(name) for name in names])
    columns = [f"{_MEASURE_NAMES[measure]} (se, in se)" for measure in measures]
    cell_width = max([22] + [len(column) for column in columns])
    lines = [f"{'paired difference':<{width}}" + "".join(f"  {c:>{cell_width}}" for c in columns)]
    for name, (first, second) in zip(names, pairs):
        line = f"{name:<{width}}"
        for measure in measures:
            d = paired_difference(by_label[first], by_label[second], prompt=prompt, measure=measure)
            in_se = f"{d.difference / d.se:+.1f}" if d.se > 0 else "exact"
            line += f"  {f'{d.difference:+.3f} ({d.se:.3f}, {in_se})':>{cell_width}}"
        lines.append(line)
    return "\n".join(lines)


# ----- where a nucleus cuts the ending ------------------------------------------------------------

# How the grammar's three endings begin after a middle sentence; "That" shares "Th" with the
# middle sentence "The {animal} was very ...", so its first own letter is the "a" after "Th".
_ENDING = "In the end"


@dataclass(frozen=True)
class EndingCut:
    """Where the grammar allowed a story to end, what a top-p nucleus kept of the endings."""

    p: float  # the top-p threshold
    stories: int  # texts read
    starts: int  # sentence starts where the grammar allowed the ending
    several: int  # of them, starts where the nucleus held more than one character
    kept_i: int  # starts where the nucleus kept "I", the first letter of "In the end"
    kept_a: int  # starts where the nucleus kept "A", the first letter of "At last"
    that_steps: int  # starts where the text went on with "Th", so "That night" was still open
    kept_that: int  # of them, the steps after "Th" where the nucleus kept the "a" of "That"


def _nucleus_chars(logits: Tensor, p: float, chars: str) -> set[str]:
    return {chars[i] for i in torch.isfinite(filter_top_p(logits, p)).nonzero()[:, 0].tolist()}


def ending_cut(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    texts: Sequence[str],
    *,
    p: float,
    progress: bool = False,
) -> EndingCut:
    """Read the model over stories drawn from scratch and count what top-p kept of the endings.

    For each text (its context: the boundary token, then the text), the logits of every step come
    from one forward pass, at temperature 1. At each sentence start (after ". ") where the grammar
    allows "In the end" (and so its other endings, "At last" and "That night"), the nucleus of
    mass `p` is checked for "I" and "A"; where the text went on "Th", the next step is checked for
    the "a" of "That". The walk stops where a text leaves the grammar. `progress` shows a tqdm
    bar counting the texts.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise TypeError(f"texts must be a non-empty sequence of str, got {texts!r}")
    if not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must be a non-empty sequence of str, got a non-str item")
    longest = max(len(text) for text in texts)
    if longest > model.block_size:
        raise ValueError(
            f"texts must fit the model's block_size={model.block_size} (the boundary token "
            f"included), got a text of {longest} characters"
        )
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a number in (0, 1], got {p!r}")
    if not 0 < p <= 1:
        raise ValueError(f"p must be a number in (0, 1], got {p!r}")
    chars = tokenizer.chars
    counts = dict.fromkeys(("starts", "several", "kept_i", "kept_a", "that_steps", "kept_that"), 0)
    bar = progress_bar(total=len(texts), unit="story", show=progress)
    with torch.inference_mode(), torch_threads(GENERATION_THREADS):
        for text in texts:
            ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(text)]])
            logits = model(ids[:, :-1])[0].double()  # row s: the model's logits for text[s]
            for s in range(2, len(text)):
                prefix = text[:s]
                if not prefix.endswith(". "):
                    continue
                if tinytales.longest_possible_prefix(prefix + _ENDING) < s + len(_ENDING):
                    if tinytales.longest_possible_prefix(prefix) < s:
                        break  # the text has left the grammar: no ending can follow
                    continue
                kept = _nucleus_chars(logits[s], p, chars)
                counts["starts"] += 1
                counts["several"] += len(kept) > 1
                counts["kept_i"] += "I" in kept
                counts["kept_a"] += "A" in kept
                if text[s : s + 2] == "Th" and s + 2 < len(text):
                    counts["that_steps"] += 1
                    counts["kept_that"] += "a" in _nucleus_chars(logits[s + 2], p, chars)
            bar.update()
    bar.close()
    return EndingCut(p=float(p), stories=len(texts), **counts)
