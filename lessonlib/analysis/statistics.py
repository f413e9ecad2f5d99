"""Standard errors: how far a number measured on a few stories could move by luck alone.

The unit is always the independent draw (a story, a generation), never a token of one: a mean,
a share, a paired difference, a ratio pooled over groups, and the jackknife of any statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.validation import check_int, check_real

__all__ = [
    "Estimate",
    "PairedDifference",
    "chi_square_p_value",
    "in_standard_errors",
    "jackknife_se",
    "mean_and_se",
    "mean_with_error",
    "paired_difference",
    "ratio_with_error",
    "share_se",
]


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean of `values` and its standard error, sample standard deviation / sqrt(n).

    The standard error of a single value is NaN: one draw says nothing about the spread.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("values must hold at least one number, got none")
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def share_se(share: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of a share p measured on n draws."""
    share = check_real("share", share, low=0, high=1)
    n = check_int("n", n, low=1)
    return math.sqrt(share * (1 - share) / n)


def jackknife_se(leave_one_out: Sequence[float]) -> float:
    """Jackknife standard error of a statistic from its n values each without one draw (NaN if n < 2).

    sqrt((n - 1) / n * sum((s_i - mean(s)) ** 2)), where s_i is the statistic without draw i.
    """
    n = len(leave_one_out)
    if n < 2:
        return math.nan
    mean = sum(leave_one_out) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in leave_one_out))


def in_standard_errors(difference: float, se: float) -> float:
    """`difference / se`; with a standard error of 0, +-inf (0 if there is no difference either)."""
    if se == 0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / se


@dataclass(frozen=True)
class PairedDifference:
    """Two measurements of the same draws: their means, and the standard error of first - second."""

    first: float  # mean of the first measurement
    second: float  # mean of the second: the baseline the first is compared with
    se: float  # standard error of first - second, from the spread of the per-draw differences
    samples: int  # pairs

    @property
    def difference(self) -> float:
        """first - second."""
        return self.first - self.second

    @property
    def within_noise(self) -> bool:
        """True if the difference is at most two standard errors from 0."""
        return abs(self.difference) <= 2 * self.se

    def describe(self, *, digits: int = 2) -> str:
        """One line: the baseline -> the first, their difference, its se and that in se."""
        digits = check_int("digits", digits, low=0, high=6)
        # With no spread at all the difference is exact: there is no count of errors to give.
        in_se = f", {self.difference / self.se:+.1f} standard errors" if self.se > 0 else ""
        return (
            f"{self.second:.{digits}f} -> {self.first:.{digits}f}, paired difference "
            f"{self.difference:+.{digits}f}, standard error {self.se:.{digits}f} "
            f"({self.samples} pairs{in_se})"
        )


def paired_difference(
    first: Sequence[float | bool], second: Sequence[float | bool]
) -> PairedDifference:
    """Compare measurements of the same draws, `first[i]` against the baseline `second[i]`.

    Pairing removes what both share (the same story, the same random numbers): the standard
    error comes from the per-draw differences, not from the spread of either measurement.
    """
    if len(first) != len(second) or len(first) < 2:
        raise ValueError(
            f"first and second must have the same length >= 2, got {len(first)} and {len(second)}"
        )
    x, y = [float(v) for v in first], [float(v) for v in second]
    _, se = mean_and_se([u - v for u, v in zip(x, y)])
    return PairedDifference(sum(x) / len(x), sum(y) / len(y), se, len(x))


@dataclass(frozen=True)
class Estimate:
    """A mean or a ratio, its standard error, and the number of independent units behind it."""

    value: float
    standard_error: float
    units: int  # independent units (stories) the standard error counts


def ratio_with_error(sums: Tensor | Sequence[float], sizes: Sequence[int]) -> Estimate:
    """sum(sums) / sum(sizes), each (S_g, n_g) one independent unit, with its standard error.

    The ratio estimator's error, sqrt(G / (G - 1) * sum_g (S_g - value * n_g)^2) / N over G units
    of N = sum(sizes) in all; NaN for a single unit.
    """
    sums = torch.as_tensor(sums, dtype=torch.float64)
    n = torch.tensor(sizes, dtype=torch.float64)
    value = float(sums.sum() / n.sum())
    units = len(sizes)
    if units < 2:
        return Estimate(value, math.nan, units)
    spread = float(((sums - value * n) ** 2).sum()) * units / (units - 1)
    return Estimate(value, math.sqrt(spread) / float(n.sum()), units)


def mean_with_error(values: Tensor, *, group_sizes: Sequence[int]) -> Estimate:
    """Mean of per-step `values` (steps,), its standard error counting each group as one unit.

    `group_sizes` splits the steps, in order, into the stories they come from: steps of one story
    are not independent draws, stories are (`ratio_with_error`). A share is the mean of 0/1.
    """
    if not isinstance(values, Tensor) or values.dim() != 1:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a tensor of shape (steps,), got {shape}")
    if isinstance(group_sizes, str) or not isinstance(group_sizes, Sequence):
        raise TypeError(f"group_sizes must be a sequence of ints, got {group_sizes!r}")
    if len(group_sizes) < 2:
        raise ValueError(f"group_sizes must be at least two ints >= 1, got {group_sizes!r}")
    sizes = [check_int(f"group_sizes[{i}]", n, low=1) for i, n in enumerate(group_sizes)]
    if sum(sizes) != values.shape[0]:
        raise ValueError(
            f"group_sizes must add up to the {values.shape[0]} values, got sum {sum(sizes)}"
        )
    sums = torch.stack([group.sum() for group in values.double().split(sizes)])
    return ratio_with_error(sums, sizes)


def chi_square_p_value(counts: Tensor, probs: Tensor) -> float:
    """p-value of Pearson's chi-square test of `counts` against `probs` (cells below 5 pooled).

    0 when an outcome of probability 0 occurred: no p-value excuses it.
    """
    counts, probs = counts.double().flatten(), probs.double().flatten()
    if counts.shape != probs.shape:
        raise ValueError(
            f"counts and probs must have the same size, got {counts.numel()} and {probs.numel()}"
        )
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    expected = probs * counts.sum()
    small = expected < 5  # the chi-square approximation needs about 5 expected per cell
    observed = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = expected > 0
    observed, expected = observed[keep], expected[keep]
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = len(expected) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2), statistic / 2))
