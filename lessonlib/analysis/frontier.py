"""Which truncation rule to use: the junk/lost frontier of every rule, measured against P*.

The model reads held-out TinyTales stories with the true prefix (teacher forcing). At every
position a sampler setting turns its next-character logits z into a decoded distribution P, and
the grammar gives the truth P*. Two exact numbers per position:

- junk = sum of P over the characters where P* = 0: what the decoder writes that no story has;
- lost = sum over characters of max(0, P* - P): true probability the decoder under-produces.

Lost is the total variation distance between P and P*, so junk <= lost at every step. For a
truncation of a perfect model (z = log P*) it is exactly the true mass cut away; temperature's
reweighting is charged too, so cooling is never free. Both are averaged per character over all
scored positions of all stories (long stories weigh more), with standard errors over stories,
the independent units. Nothing is sampled: every number is an exact expectation under P.
Not about generating text, and no plotting library is imported: `plot_frontier` draws on an
axes object the caller made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.statistics import (
    Estimate,
    PairedDifference,
    jackknife_se,
    ratio_with_error,
)
from lessonlib.analysis.sweeps import setting_label
from lessonlib.generation import LanguageModel
from lessonlib.progress import progress_bar
from lessonlib.sampling import STAGES, check_sampler, sampling_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.train import TrainSettings
from lessonlib.validation import check_finite_logits, check_int, check_logits, check_real

__all__ = [
    "FAMILIES",
    "HELD_OUT_SEED",
    "JUNK_FRACTIONS",
    "ORACLE",
    "UNTRUNCATED",
    "FrontierPoint",
    "HeldOutSteps",
    "MatchedJunk",
    "format_frontier",
    "format_matched",
    "frontier_curves",
    "frontier_point",
    "held_out_stories",
    "junk_and_lost",
    "lost_at_junk",
    "oracle_probs",
    "plot_frontier",
    "rank_at_junk",
    "reference_points",
    "teacher_forced_steps",
]

# The training stories are drawn with seed 0 and the validation stories (whose loss picked
# nothing but is printed during training) with seed 1; any other seed is a fresh stream the
# model has never read. 909: lesson 09.
TRAINING_SEEDS = (TrainSettings().corpus_seed, TrainSettings().val_seed)
HELD_OUT_SEED = 909
assert HELD_OUT_SEED not in TRAINING_SEEDS

UNTRUNCATED = "tau 1, untruncated"
"""Label of the untruncated model at temperature 1: its junk is its own mass on forbidden text."""

ORACLE = "oracle (keeps P*'s support)"
"""Label of the truncation that keeps exactly the characters the grammar allows."""

# Each family from loose to strict, starting at the shared loose end {} (tau 1, nothing cut).
# The ranges were read off the shipped model on 200 held-out stories: the untruncated model has
# junk 1.8 per 1000 characters, and every family is swept down to about 0.35-0.45, where its
# strictest setting (greedy for top-k; nearly greedy for the others) leaves only the steps whose
# most likely character is itself forbidden. Thresholds are denser where a family's curve bends.
FAMILIES: Mapping[str, tuple[dict[str, Any], ...]] = MappingProxyType({
    "temperature": ({},) + tuple(
        {"temperature": t} for t in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3)
    ),
    "top-k": ({},) + tuple({"top_k": k} for k in (20, 12, 10, 8, 7, 6, 5, 4, 3, 2, 1)),
    "top-p": ({},) + tuple(
        {"top_p": p}
        for p in (0.9999, 0.999, 0.998, 0.995, 0.99, 0.98, 0.97, 0.95, 0.92, 0.9, 0.85, 0.8, 0.7)
    ),
    "min-p": ({},) + tuple(
        {"min_p": m}
        for m in (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5)
    ),
    "typical": ({},) + tuple(
        {"typical_p": m}
        for m in (0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.92, 0.9, 0.85, 0.8, 0.7, 0.5)
    ),
    "eta": ({},) + tuple(
        {"eta_cutoff": e}
        for e in (1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3)
    ),
})  # fmt: skip
"""The sweep of each rule, as `sampling_probs` keyword dicts ordered from loose to strict."""

_CHUNK = 8192  # rows decoded at once by frontier_point

JUNK_FRACTIONS = (0.8, 0.6, 0.45, 0.3)
"""Junk levels for `rank_at_junk`, as fractions of the untruncated model's junk."""


def held_out_stories(n: int, *, seed: int = HELD_OUT_SEED) -> list[str]:
    """`n` TinyTales stories from a seed the course model never trained or validated on."""
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed)
    if seed in TRAINING_SEEDS:
        raise ValueError(
            f"seed must not be a seed of the training or validation stories {TRAINING_SEEDS}, "
            f"got {seed}; use e.g. HELD_OUT_SEED={HELD_OUT_SEED}"
        )
    return tinytales.generate_stories(n, seed=seed)


@dataclass(frozen=True)
class HeldOutSteps:
    """The model's logits and the truth P* at every scored position of some stories, in order."""

    logits: Tensor  # (N, V) the model's next-character logits z, float32 as generate sees them
    truth: Tensor  # (N, V) float64 P*, the grammar's exact next-character distribution
    story: Tensor  # (N,) int64 index of each row's story; rows in story order
    steps_per_story: tuple[int, ...]  # rows per story: length + 1 (the END), fewer if cut
    cut: int  # positions past the model's block_size, left out (see teacher_forced_steps)

    def __post_init__(self) -> None:
        check_logits("logits", self.logits, dims=(2,))
        check_finite_logits("logits", self.logits, self.logits.amax(dim=-1))
        _check_distribution("truth", self.truth)
        if self.truth.dtype != torch.float64 or self.truth.shape != self.logits.shape:
            raise ValueError(
                f"truth must be float64 of the logits' shape {tuple(self.logits.shape)}, got "
                f"{self.truth.dtype} of shape {tuple(self.truth.shape)}"
            )
        sizes = [check_int("steps_per_story[i]", n, low=1) for n in self.steps_per_story]
        expected = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        if not isinstance(self.story, Tensor) or not torch.equal(self.story, expected):
            raise ValueError(
                "story must be each row's story index, rows grouped in story order as "
                f"steps_per_story says ({sum(sizes)} rows in {len(sizes)} stories)"
            )
        check_int("cut", self.cut, low=0)

    @property
    def stories(self) -> int:
        """Number of stories."""
        return len(self.steps_per_story)


def _check_stories(stories: object) -> list[str]:
    """`stories` as a non-empty list of str without END, or TypeError/ValueError naming it."""
    if isinstance(stories, (str, bytes)) or not isinstance(stories, Sequence) or not stories:
        raise TypeError(f"stories must be a non-empty sequence of str, got {stories!r:.80}")
    for index, story in enumerate(stories):
        if not isinstance(story, str):
            raise TypeError(f"stories[{index}] must be a str, got {type(story).__name__}")
        if tinytales.END in story:
            raise ValueError(f"stories[{index}] must not contain END {tinytales.END!r}")
    return list(stories)


def _truth_rows(story: str, rows: int, index: dict[str, int]) -> Tensor:
    """P* at the first `rows` positions of `story` as a (rows, V) float64 tensor."""
    try:
        distributions = tinytales.next_char_distributions(story)[:rows]
    except ValueError as error:
        raise ValueError(f"stories must be TinyTales stories: {error}") from None
    truth = torch.zeros(rows, len(index), dtype=torch.float64)
    for row, distribution in enumerate(distributions):
        for char, prob in distribution.items():
            truth[row, index[char]] = prob
    return truth


def teacher_forced_steps(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    stories: Sequence[str],
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> HeldOutSteps:
    """Read each story after a boundary token and pair the logits at each position with P*.

    Row j of a story holds the logits after boundary + story[:j], for j = 0..len(story) (the
    last row predicts END). The model was trained on windows of block_size tokens that start at
    a story's beginning, so only the first block_size positions of a longer story are read as it
    was trained; the rest are left out and counted in `cut` (about 3 stories in 1000 are that
    long), rather than dropping long stories whole. Stories are read in groups of `batch_size`
    of similar length, one forward pass per group.
    """
    stories = _check_stories(stories)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    if tokenizer.boundary != tinytales.END or model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"tokenizer must be the course tokenizer (boundary {tinytales.END!r}) with the "
            f"model's vocab_size={model.vocab_size}, got {tokenizer!r}"
        )
    missing = sorted(set(tinytales.ALPHABET) - set(tokenizer.chars))
    if missing:
        raise ValueError(f"tokenizer must hold every TinyTales character, missing {missing}")
    index = {char: i for i, char in enumerate(tokenizer.chars)}
    rows = [min(len(story) + 1, model.block_size) for story in stories]
    ids = [[tokenizer.boundary_id, *tokenizer.encode(story)][:n] for story, n in zip(stories, rows)]
    # Similar lengths side by side: less padding. Right padding is never read by earlier positions.
    by_length = sorted(range(len(stories)), key=lambda i: rows[i])
    logits: list[Tensor | None] = [None] * len(stories)
    truth: list[Tensor | None] = [None] * len(stories)
    bar = progress_bar(total=len(stories), show=progress, desc="reading stories", unit="story")
    # One thread, although the batches are large: on a 2-core machine shared with other work,
    # 200 stories took 3-7 s on one thread and 5-20 s on two (measured with other jobs running).
    with bar, torch.inference_mode(), torch_threads(GENERATION_THREADS):
        for first in range(0, len(stories), batch_size):
            group = by_length[first : first + batch_size]
            # The truth first: it rejects a story the grammar cannot produce before any forward.
            for i in group:
                truth[i] = _truth_rows(stories[i], rows[i], index)
            width = max(rows[i] for i in group)
            inputs = torch.full((len(group), width), tokenizer.boundary_id, dtype=torch.long)
            for slot, i in enumerate(group):
                inputs[slot, : rows[i]] = torch.tensor(ids[i])
            out = model(inputs)
            for slot, i in enumerate(group):
                logits[i] = out[slot, : rows[i]].float()
            bar.update(len(group))
    return HeldOutSteps(
        logits=torch.cat(logits),
        truth=torch.cat(truth),
        story=torch.repeat_interleave(torch.arange(len(stories)), torch.tensor(rows)),
        steps_per_story=tuple(rows),
        cut=sum(len(story) + 1 - n for story, n in zip(stories, rows)),
    )


def _check_distribution(name: str, value: object) -> Tensor:
    """`value` as a float64 (V,) or (B, V) tensor of finite, non-negative rows summing to 1."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(
            f"{name} must be a floating torch.Tensor of shape (V,) or (B, V), got {kind}"
        )
    if value.dim() not in (1, 2) or value.numel() == 0:
        raise ValueError(f"{name} must have shape (V,) or (B, V), got {tuple(value.shape)}")
    value = value.double()
    totals = value.sum(dim=-1)
    # Two reductions clear the common case; "not >=" so that NaN fails too.
    if not (float(value.min()) >= 0 and bool(torch.isfinite(totals).all())):
        bad = ~torch.isfinite(value) | (value < 0)
        where = tuple(torch.nonzero(bad)[0].tolist())
        raise ValueError(f"{name} must be finite and >= 0, got {float(value[where])} at {where}")
    # float32 probabilities over 50 characters sum to 1 within about 1e-6.
    off = (totals - 1).abs().reshape(-1)
    if float(off.max()) > 1e-4:
        row = int(torch.argmax(off))
        raise ValueError(
            f"{name} rows must sum to 1, got row {row} summing to {float(totals.reshape(-1)[row]):.6g}"
        )
    return value


def junk_and_lost(probs: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, (junk, lost) of a decoded P against P*, float64; (V,) gives scalars, (B, V) (B,)."""
    probs = _check_distribution("probs", probs)
    truth = _check_distribution("truth", truth)
    if probs.shape != truth.shape:
        raise ValueError(
            f"probs and truth must have the same shape, got {tuple(probs.shape)} and "
            f"{tuple(truth.shape)}"
        )
    return _junk_and_lost(probs, truth)


def _junk_and_lost(probs: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """junk_and_lost without the checks, for rows already known to be distributions."""
    probs = probs.double()
    junk = probs.masked_fill(truth > 0, 0.0).sum(dim=-1)
    lost = (truth - probs).clamp(min=0).sum(dim=-1)
    return junk, lost


def _check_setting(setting: object) -> dict[str, Any]:
    """`setting` as a dict of `sampling_probs` keywords, or TypeError/ValueError naming it."""
    if not isinstance(setting, Mapping):
        raise TypeError(f"setting must be a dict of sampler keywords, got {setting!r}")
    unknown = sorted(set(setting) - set(STAGES))
    if unknown:
        raise ValueError(f"setting has unknown keys {unknown}; accepted: {list(STAGES)}")
    # The sampler's own check, now: before a sweep has spent seconds on the settings before this.
    check_sampler(**setting)
    return dict(setting)


@dataclass(frozen=True)
class FrontierPoint:
    """One decoder's junk and lost per character, with standard errors over stories."""

    label: str
    setting: Mapping[str, Any] | None  # `sampling_probs` keywords; None for the oracle
    junk: Estimate  # mean junk per character (stories weighted by length), se over stories
    lost: Estimate  # mean lost per character, likewise
    junk_by_story: Tensor  # (S,) float64 junk summed over each story's positions
    lost_by_story: Tensor  # (S,) float64 lost summed likewise, for paired comparisons
    steps_by_story: tuple[int, ...]  # positions of each story


def _check_steps(steps: object) -> HeldOutSteps:
    """`steps` as a HeldOutSteps, or TypeError naming it."""
    if not isinstance(steps, HeldOutSteps):
        raise TypeError(
            f"steps must be a HeldOutSteps (from teacher_forced_steps), got {type(steps).__name__}"
        )
    return steps


def _point(
    steps: HeldOutSteps,
    junk: Tensor,
    lost: Tensor,
    *,
    label: str,
    setting: Mapping[str, Any] | None,
) -> FrontierPoint:
    """The frontier point of per-row junk and lost (N,) on `steps`."""
    sums = [
        torch.zeros(steps.stories, dtype=torch.float64).index_add_(0, steps.story, values)
        for values in (junk, lost)
    ]
    sizes = list(steps.steps_per_story)
    return FrontierPoint(
        label=label,
        setting=None if setting is None else MappingProxyType(dict(setting)),
        junk=ratio_with_error(sums[0], sizes),
        lost=ratio_with_error(sums[1], sizes),
        junk_by_story=sums[0],
        lost_by_story=sums[1],
        steps_by_story=steps.steps_per_story,
    )


def frontier_point(
    steps: HeldOutSteps, setting: Mapping[str, Any], *, label: str | None = None
) -> FrontierPoint:
    """Junk and lost of `sampling_probs(logits, **setting)` over every position of `steps`."""
    steps = _check_steps(steps)
    setting = _check_setting(setting)
    # Element-wise work on (N, V): a second thread costs more than it saves (threads.py).
    with torch_threads(GENERATION_THREADS):
        # In chunks of rows: the sampler's temporaries (sorts, float64 weights) for all 60,000
        # rows at once would cost several hundred MB of a notebook kernel's memory.
        parts = [
            _junk_and_lost(sampling_probs(steps.logits[start : start + _CHUNK], **setting),
                           steps.truth[start : start + _CHUNK])
            for start in range(0, len(steps.logits), _CHUNK)
        ]  # fmt: skip
        junk, lost = (torch.cat(values) for values in zip(*parts))
        label = label or setting_label(setting)
        return _point(steps, junk, lost, label=label, setting=setting)


def oracle_probs(steps: HeldOutSteps) -> Tensor:
    """The model at tau 1 truncated to exactly P*'s support (the characters the grammar allows)."""
    steps = _check_steps(steps)
    return torch.softmax(steps.logits.double().masked_fill(steps.truth == 0, -math.inf), dim=-1)


def reference_points(steps: HeldOutSteps) -> dict[str, FrontierPoint]:
    """The untruncated model at tau 1 and the oracle truncation, keyed UNTRUNCATED and ORACLE.

    The oracle removes all junk and cuts nothing true; its lost is the model's error inside the
    support, the reference that no rule which must guess the support can expect to reach. It is
    not a strict floor step by step: cutting a true character the model over-weights can lower
    the lost further (tests/test_frontier.py shows such a step).
    """
    steps = _check_steps(steps)
    untruncated = frontier_point(steps, {}, label=UNTRUNCATED)
    with torch_threads(GENERATION_THREADS):
        junk, lost = _junk_and_lost(oracle_probs(steps), steps.truth)
        oracle = _point(steps, junk, lost, label=ORACLE, setting=None)
    return {UNTRUNCATED: untruncated, ORACLE: oracle}


def frontier_curves(
    steps: HeldOutSteps,
    families: Mapping[str, Sequence[Mapping[str, Any]]] = FAMILIES,
    *,
    progress: bool = False,
) -> dict[str, list[FrontierPoint]]:
    """Every family's frontier points, setting by setting in the family's order."""
    steps = _check_steps(steps)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    if not isinstance(families, Mapping) or not families:
        raise TypeError(f"families must be a non-empty dict of name -> settings, got {families!r}")
    checked = {}
    for name, settings in families.items():
        if isinstance(settings, (str, Mapping)) or not isinstance(settings, Sequence):
            raise TypeError(f"families[{name!r}] must be a sequence of setting dicts")
        if len(settings) < 2:
            raise ValueError(f"families[{name!r}] must hold at least 2 settings for a curve")
        checked[name] = [_check_setting(setting) for setting in settings]
    total = sum(len(settings) for settings in checked.values())
    curves: dict[str, list[FrontierPoint]] = {}
    with progress_bar(total=total, show=progress, desc="settings") as bar:
        for name, settings in checked.items():
            curves[name] = []
            for setting in settings:
                curves[name].append(frontier_point(steps, setting))
                bar.update(1)
    return curves


def _interpolate(junk: Tensor, lost: Tensor, target: Tensor) -> Tensor:
    """Lost at junk `target` (R, 1) along each row's curve (R, K) of K settings; NaN if not reached.

    Between consecutive settings k and k+1 whose junk brackets the target, linearly in junk; if
    a non-monotone curve brackets it more than once, the lowest of those lost values.
    """
    j0, j1, l0, l1 = junk[:, :-1], junk[:, 1:], lost[:, :-1], lost[:, 1:]
    brackets = (torch.minimum(j0, j1) <= target) & (target <= torch.maximum(j0, j1))
    span = j1 - j0
    flat = span == 0
    # Equal junk at both ends (the target then equals it): either end will do; the lower lost.
    weight = (target - j0) / torch.where(flat, 1.0, span)
    value = torch.where(flat, torch.minimum(l0, l1), l0 + weight * (l1 - l0))
    value = torch.where(brackets, value, math.inf).amin(dim=-1)
    return torch.where(torch.isinf(value), math.nan, value)


def _leave_one_out(sums: Tensor, sizes: Tensor) -> Tensor:
    """Row 0: per-character means of per-story sums (S, K); row 1 + s: the same without story s."""
    total = sums.sum(dim=0, keepdim=True)
    without = (total - sums) / (sizes.sum() - sizes)[:, None]
    return torch.cat([total / sizes.sum(), without])


def _lost_replicates(
    points: Sequence[FrontierPoint], untruncated: FrontierPoint, fraction: float
) -> Tensor:
    """Lost at junk = fraction x untruncated junk: on all stories (0), then without story s (1 + s).

    The level is re-measured in each replicate, as the curve is.
    """
    sizes = {point.steps_by_story for point in [untruncated, *points]}
    if len(sizes) != 1:
        raise ValueError("points must all be measured on the same stories (one HeldOutSteps)")
    steps = torch.tensor(untruncated.steps_by_story, dtype=torch.float64)
    junk = _leave_one_out(torch.stack([p.junk_by_story for p in points], dim=1), steps)
    lost = _leave_one_out(torch.stack([p.lost_by_story for p in points], dim=1), steps)
    target = fraction * _leave_one_out(untruncated.junk_by_story[:, None], steps)
    return _interpolate(junk, lost, target)


def _check_points(points: object, name: str = "points") -> list[FrontierPoint]:
    """`points` as a list of at least two FrontierPoints, or TypeError/ValueError naming it."""
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise TypeError(f"{name} must be a sequence of FrontierPoint, got {points!r:.80}")
    if len(points) < 2 or not all(isinstance(p, FrontierPoint) for p in points):
        raise ValueError(
            f"{name} must hold at least 2 FrontierPoints (a curve), got {points!r:.80}"
        )
    return list(points)


def _untruncated(references: object) -> FrontierPoint:
    """The untruncated point of `references` (from reference_points), or an error naming it."""
    if not isinstance(references, Mapping) or not isinstance(
        references.get(UNTRUNCATED), FrontierPoint
    ):
        raise TypeError(f"references must be reference_points(...), with {UNTRUNCATED!r}")
    return references[UNTRUNCATED]


def _estimate(replicates: Tensor) -> Estimate:
    """The full-sample value (entry 0) and the jackknife se of its leave-one-out replicates."""
    return Estimate(
        float(replicates[0]), jackknife_se(replicates[1:].tolist()), len(replicates) - 1
    )


def lost_at_junk(
    points: Sequence[FrontierPoint], references: Mapping[str, FrontierPoint], fraction: float
) -> Estimate | None:
    """A family's lost where its junk is `fraction` of the untruncated model's; None if never.

    Between the two consecutive settings whose junk brackets the level, linearly: a decoder that
    uses the looser setting with probability 1 - w and the stricter with w at each step has
    exactly this junk (junk is linear in P) and at most this lost (lost, a total variation
    distance, is convex in P), so the point is achievable. The level is relative, "remove this
    share of the model's junk", because the model's junk varies from story to story (some stories
    hold a confident mistake) and every curve moves with it. The standard error is a jackknife
    over stories that re-measures the level and re-matches the curve without each story.
    """
    points = _check_points(points)
    untruncated = _untruncated(references)
    fraction = check_real("fraction", fraction, low=0, high=1)
    replicates = _lost_replicates(points, untruncated, fraction)
    return None if math.isnan(float(replicates[0])) else _estimate(replicates)


@dataclass(frozen=True)
class MatchedJunk:
    """Every family's lost at one junk level, ranked, and the best two compared on the same stories."""

    fraction: float  # the level as a share of the untruncated model's junk
    junk: float  # the level per character, on all stories
    lost: Mapping[str, Estimate]  # family -> lost at this junk, for the families that reach it
    ranking: tuple[str, ...]  # those families, lowest lost first
    unreached: tuple[str, ...]  # families whose sweep never gets down to this junk
    best_vs_second: PairedDifference | None  # first: the best's lost; second: the runner-up's
    behind_best: Mapping[str, PairedDifference]  # every other family (first) against the best

    @property
    def verdict(self) -> str:
        """Who wins at this level, in words: by how many standard errors, or within noise."""
        if not self.ranking:
            return "no family reaches this junk"
        if self.best_vs_second is None:
            return f"{self.ranking[0]} alone reaches this junk"
        gap = self.best_vs_second
        if math.isnan(gap.se):
            return f"{self.ranking[0]} lowest; no standard error (a curve ends near this junk)"
        if gap.within_noise:
            return f"{self.ranking[0]} and {self.ranking[1]} within noise"
        return f"{self.ranking[0]} beats {self.ranking[1]} by {-gap.difference / gap.se:.1f} se"


def rank_at_junk(
    curves: Mapping[str, Sequence[FrontierPoint]],
    references: Mapping[str, FrontierPoint],
    fractions: Sequence[float] = JUNK_FRACTIONS,
) -> list[MatchedJunk]:
    """At each junk level (a fraction of the untruncated junk), every family's lost, ranked.

    Each lost is `lost_at_junk`'s. Every other family is compared with the best on the same
    stories (`behind_best`; the runner-up also as `best_vs_second`): the jackknife standard
    error of a difference re-matches both curves without each story, so the difficulty the
    stories share cancels and only the families' difference is left to noise.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty dict of family -> points, got {curves!r:.80}")
    checked = {name: _check_points(points, f"curves[{name!r}]") for name, points in curves.items()}
    untruncated = _untruncated(references)
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or not fractions:
        raise TypeError(f"fractions must be a non-empty sequence of numbers, got {fractions!r}")
    out = []
    for i, fraction in enumerate(fractions):
        fraction = check_real(f"fractions[{i}]", fraction, low=0, high=1)
        replicates = {n: _lost_replicates(p, untruncated, fraction) for n, p in checked.items()}
        reached = {n: r for n, r in replicates.items() if not math.isnan(float(r[0]))}
        ranking = tuple(sorted(reached, key=lambda n: float(reached[n][0])))
        behind = {n: _paired(reached[n], reached[ranking[0]]) for n in ranking[1:]}
        paired = _paired(reached[ranking[0]], reached[ranking[1]]) if len(ranking) > 1 else None
        out.append(
            MatchedJunk(
                fraction=fraction,
                junk=fraction * untruncated.junk.value,
                lost=MappingProxyType({n: _estimate(reached[n]) for n in ranking}),
                ranking=ranking,
                unreached=tuple(n for n in checked if n not in reached),
                best_vs_second=paired,
                behind_best=MappingProxyType(behind),
            )
        )
    return out


def _paired(first: Tensor, second: Tensor) -> PairedDifference:
    """first - second from two families' replicates on the same stories (jackknife se)."""
    return PairedDifference(
        first=float(first[0]),
        second=float(second[0]),
        se=jackknife_se((first[1:] - second[1:]).tolist()),
        samples=len(first) - 1,
    )


def _per_thousand(estimate: Estimate) -> str:
    """An estimate per 1000 characters as 'value +- se', two decimals."""
    return f"{1000 * estimate.value:6.2f} +- {1000 * estimate.standard_error:.2f}"


def format_frontier(
    curves: Mapping[str, Sequence[FrontierPoint]], references: Mapping[str, FrontierPoint]
) -> str:
    """The references and every family's curve as a text table, per 1000 characters."""
    lines = ["junk and lost per 1000 characters (+- standard error over stories)"]
    lines.append(f"{'decoder':32s} {'junk':>14s} {'lost':>14s}")
    for point in references.values():
        lines.append(f"{point.label:32s} {_per_thousand(point.junk)} {_per_thousand(point.lost)}")
    for name, points in curves.items():
        lines.append(f"{name}:")
        for point in points:
            label = "  " + point.label
            lines.append(f"{label:32s} {_per_thousand(point.junk)} {_per_thousand(point.lost)}")
    return "\n".join(lines)


def format_matched(matched: Sequence[MatchedJunk]) -> str:
    """Per junk level: each family's lost, best first, its paired gap to the best, the verdict."""
    lines = [
        "lost per 1000 characters at matched junk (+- jackknife standard error over stories);",
        "behind best: the paired difference to the best family on the same stories",
    ]
    for level in matched:
        lines.append(
            f"junk {1000 * level.junk:.2f} ({level.fraction:.0%} of the untruncated): "
            f"{level.verdict}"
        )
        for name in level.ranking:
            row = f"  {name:12s} {_per_thousand(level.lost[name])}"
            if name in level.behind_best:
                gap = level.behind_best[name]
                row += f"   behind best {1000 * gap.difference:+.3f} +- {1000 * gap.se:.3f}"
            lines.append(row)
        if level.unreached:
            lines.append(f"  not reached by: {', '.join(level.unreached)}")
    return "\n".join(lines)


def plot_frontier(
    ax: Any,
    curves: Mapping[str, Sequence[FrontierPoint]],
    references: Mapping[str, FrontierPoint],
    *,
    log_y: bool = True,
) -> Any:
    """Draw lost against junk, per 1000 characters, on a matplotlib `ax`; one line per family.

    The untruncated model is a black dot where every curve starts; the oracle is a black star
    at junk 0 with a dashed line at its lost, the reference no rule is expected to go under.
    The y-axis is logarithmic by default so that the low-lost region stays readable. Returns `ax`.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty dict of family -> points, got {curves!r:.80}")
    if not isinstance(references, Mapping):
        raise TypeError(f"references must be reference_points(...), got {references!r:.80}")
    for name, points in curves.items():
        points = _check_points(points, f"curves[{name!r}]")
        x = [1000 * p.junk.value for p in points]
        y = [1000 * p.lost.value for p in points]
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=name)
    if UNTRUNCATED in references:
        top = references[UNTRUNCATED]
        ax.plot([1000 * top.junk.value], [1000 * top.lost.value], "ko", label=UNTRUNCATED)
    if ORACLE in references:
        floor = 1000 * references[ORACLE].lost.value
        ax.plot([0.0], [floor], "k*", markersize=10, label=f"oracle: junk 0, lost {floor:.2f}")
        ax.axhline(floor, color="k", linestyle="--", linewidth=0.8)
    if log_y:
        ax.set_yscale("log")
        # Plain numbers (6, 10, 20) instead of powers of ten on a range this short.
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_minor_formatter(lambda value, _: f"{value:g}")
    ax.set_xlim(left=-0.02 * max(1000 * p.junk.value for ps in curves.values() for p in ps))
    ax.set_xlabel("junk per 1000 characters (decoded mass where P* = 0)")
    ax.set_ylabel("lost per 1000 characters (sum of max(0, P* - P))")
    ax.set_title("Truncation rules against the truth: less junk costs lost")
    ax.legend(fontsize="small")
    return ax
