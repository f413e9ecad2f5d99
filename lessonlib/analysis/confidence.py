"""Where a model is sure and where it hesitates, what top-k and top-p keep there, and what they
do to whole stories.

The step functions read the raw logits that `generate(..., record_logits=True)` keeps, shape
(steps, V), at temperature 1; the kept sets are exactly `lessonlib.sampling`'s. For whole
stories, `setting_sweep` draws every setting from the same seeds, so that story i of two
settings shares its random numbers and `compare_rows` can pair them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.batches import batch_sizes
from lessonlib.analysis.statistics import (
    PairedDifference,
    jackknife_se,
    mean_and_se,
    paired_difference,
)
from lessonlib.analysis.sweeps import SampleScores, score_settings
from lessonlib.generation import LanguageModel
from lessonlib.metrics import distinct_n, repetition_rate
from lessonlib.progress import progress_bar
from lessonlib.sampling import filter_top_k, filter_top_p
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_logits, check_probability, check_real

__all__ = [
    "MEASURES",
    "EndingCut",
    "Kept",
    "compare_rows",
    "confident_step",
    "ending_cut",
    "format_paired",
    "format_with_se",
    "kept_by_top_k",
    "kept_by_top_p",
    "measure_with_se",
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


def _probs(logits: Tensor) -> Tensor:
    # float64 so that a top probability of 0.99999 is not rounded to 1.
    return torch.softmax(logits.to(torch.float64), dim=-1)


def step_top_probs(logits: Tensor) -> Tensor:
    """Probability of the most likely token at every step: (steps, V) -> (steps,) float64."""
    return _probs(check_logits("logits", logits, dims=(2,))).amax(dim=-1)


def step_entropies(logits: Tensor) -> Tensor:
    """Entropy in nats of every step's distribution: (steps, V) -> (steps,) float64."""
    probs = _probs(check_logits("logits", logits, dims=(2,)))
    # 0 * log 0 counts as 0: tokens with no probability add no uncertainty.
    return -(probs * torch.log(probs).nan_to_num(neginf=0.0)).sum(dim=-1)


def confident_step(logits: Tensor, *, min_top_prob: float = 0.95, start: int = 0) -> int:
    """The first step at or after `start` whose top token has probability > `min_top_prob`."""
    logits = check_logits("logits", logits, dims=(2,))
    start = check_int("start", start, low=0, high=logits.shape[0] - 1)
    min_top_prob = check_real("min_top_prob", min_top_prob, low=0, high=1)
    above = torch.nonzero(step_top_probs(logits)[start:] > min_top_prob)
    if len(above) == 0:
        raise ValueError(
            f"no step at or after start={start} has a top probability above {min_top_prob}"
        )
    return start + int(above[0])


def uncertain_step(logits: Tensor, *, start: int = 0) -> int:
    """The step at or after `start` with the highest entropy (the first one if several tie)."""
    logits = check_logits("logits", logits, dims=(2,))
    start = check_int("start", start, low=0, high=logits.shape[0] - 1)
    return start + int(step_entropies(logits)[start:].argmax())


def _kept(logits: Tensor, filtered: Tensor, rule: str) -> Kept:
    keep = torch.isfinite(filtered)
    return Kept(rule=rule, count=int(keep.sum()), mass=float(_probs(logits)[keep].sum()))


def kept_by_top_k(logits: Tensor, k: int) -> Kept:
    """Count and mass of the tokens `filter_top_k` keeps of one step's logits (V,)."""
    logits = check_logits("logits", logits, dims=(1,))
    return _kept(logits, filter_top_k(logits, k), f"top-k (k={k})")


def kept_by_top_p(logits: Tensor, p: float) -> Kept:
    """Count and mass of the tokens `filter_top_p` keeps of one step's logits (V,)."""
    logits = check_logits("logits", logits, dims=(1,))
    return _kept(logits, filter_top_p(logits, p), f"top-p (p={p})")


# ----- whole stories ------------------------------------------------------------------------------


def setting_sweep(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    samples: int,
    seed: int,
    batch_size: int = 8,
    **sweep: Any,
) -> list[SampleScores]:
    """`score_settings` (prompt, settings, max_new_tokens, progress) in batches of `batch_size`.

    Batch b of every setting is drawn with the b-th seed drawn from `seed`, so story i of two
    settings shares its random numbers and their difference comes from the setting.
    """
    count = len(batch_sizes(samples, batch_size))
    seeds = torch.randint(0, 2**31 - 1, (count,), generator=torch.Generator().manual_seed(seed))
    return score_settings(
        model,
        tokenizer,
        samples=samples,
        batch_size=batch_size,
        batch_seeds=seeds.tolist(),
        **sweep,
    )


# Per-story measures are averaged; pooled ones are computed over the batch of continuations.
_PER_STORY: dict[str, Callable[[str, str], float]] = {
    "valid": lambda prompt, text: float(tinytales.is_valid_story(prompt + text)),
    "repetition": lambda prompt, text: repetition_rate(prompt + text, n=4),
}
_POOLED: dict[str, Callable[[list[str]], float]] = {
    "distinct_2": lambda texts: distinct_n(texts, n=2),
    "distinct_4": lambda texts: distinct_n(texts, n=4),
}
MEASURES = (*_PER_STORY, *_POOLED)  # what measure_with_se and compare_rows accept


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


def _without_each(texts: list[str]) -> list[list[str]]:
    """`texts` n times, each time without one of them (for the jackknife)."""
    return [texts[:i] + texts[i + 1 :] for i in range(len(texts))]


def measure_with_se(row: SampleScores, *, prompt: str, measure: str) -> tuple[float, float]:
    """A row's `measure` (one of MEASURES) and its standard error over the row's stories.

    Per-story measures ("valid", "repetition") use the standard error of a mean; the pooled
    distinct-n shares use the jackknife (leave one story out at a time).
    """
    measure, row = _check_measure(measure), _check_row(row, "row", prompt)
    texts = list(row.texts)
    if measure in _PER_STORY:
        return mean_and_se([_PER_STORY[measure](prompt, text) for text in texts])
    pooled = _POOLED[measure]
    return pooled(texts), jackknife_se([pooled(kept) for kept in _without_each(texts)])


def compare_rows(
    first: SampleScores, second: SampleScores, *, prompt: str, measure: str
) -> PairedDifference:
    """Compare two rows of one sweep (same prompt, seed and size) on `measure`, story by story.

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
    a, b = list(first.texts), list(second.texts)
    if measure in _PER_STORY:
        score = _PER_STORY[measure]
        return paired_difference([score(prompt, t) for t in a], [score(prompt, t) for t in b])
    pooled = _POOLED[measure]
    changes = [pooled(x) - pooled(y) for x, y in zip(_without_each(a), _without_each(b))]
    return PairedDifference(pooled(a), pooled(b), jackknife_se(changes), len(a))


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
    (beyond noise when that is more than 2 in size); see `compare_rows`.
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
            d = compare_rows(by_label[first], by_label[second], prompt=prompt, measure=measure)
            in_se = f"{d.difference / d.se:+.1f}" if d.se > 0 else "exact"
            line += f"  {f'{d.difference:+.3f} ({d.se:.3f}, {in_se})':>{cell_width}}"
        lines.append(line)
    return "\n".join(lines)


# ----- where a nucleus cuts the ending ------------------------------------------------------------

# How the grammar's three endings begin after a middle sentence; "That" shares "Th" with the
# middle sentence "The {animal} was very ...", so its first own letter is the "a" after "Th".
_ENDING = "In the end"
_COUNTS = ("starts", "several", "kept_i", "kept_a", "that_steps", "kept_that")


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


def _count_endings(text: str, logits: Tensor, p: float, chars: str, counts: dict[str, int]) -> None:
    """Add what the nucleus kept at each place of `text` where the grammar allows the ending."""
    for s in range(2, len(text)):
        prefix = text[:s]
        if not prefix.endswith(". "):
            continue
        if tinytales.longest_possible_prefix(prefix + _ENDING) < s + len(_ENDING):
            if tinytales.longest_possible_prefix(prefix) < s:
                return  # the text has left the grammar: no ending can follow
            continue
        kept = _nucleus_chars(logits[s], p, chars)
        counts["starts"] += 1
        counts["several"] += len(kept) > 1
        counts["kept_i"] += "I" in kept
        counts["kept_a"] += "A" in kept
        if text[s : s + 2] == "Th" and s + 2 < len(text):
            counts["that_steps"] += 1
            counts["kept_that"] += "a" in _nucleus_chars(logits[s + 2], p, chars)


def ending_cut(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    texts: Sequence[str],
    *,
    p: float,
    progress: bool = False,
) -> EndingCut:
    """Read the model over stories drawn from scratch and count what top-p kept of the endings.

    At each sentence start where the grammar allows "In the end" (and so "At last" and "That
    night"), the nucleus of mass `p` at temperature 1 is checked for "I" and "A"; where the text
    went on "Th", the next step is checked for the "a" of "That".
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
    p = check_probability("p", p)
    counts = dict.fromkeys(_COUNTS, 0)
    with torch.inference_mode(), torch_threads(GENERATION_THREADS):
        for text in progress_bar(texts, unit="story", show=progress):
            ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(text)]])
            logits = model(ids[:, :-1])[0].double()  # row s: the model's logits for text[s]
            _count_endings(text, logits, p, tokenizer.chars, counts)
    return EndingCut(p=p, stories=len(texts), **counts)
