"""Standard errors: of a mean, a share, a paired difference, a ratio over groups, the jackknife."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib.analysis.statistics import (
    in_standard_errors,
    jackknife_se,
    mean_and_se,
    mean_with_error,
    paired_difference,
    ratio_with_error,
    share_se,
)


def test_mean_and_se():
    assert mean_and_se([1.0, 2.0, 3.0, 6.0]) == pytest.approx((3.0, math.sqrt(14 / 3 / 4)))
    assert mean_and_se([2.0, 2.0]) == (2.0, 0.0)
    assert mean_and_se([True, False]) == (0.5, 0.5)
    mean, error = mean_and_se([5])
    assert mean == 5.0 and math.isnan(error)
    with pytest.raises(ValueError, match="at least one number"):
        mean_and_se([])


def test_share_se():
    assert share_se(0.5, 25) == pytest.approx(0.1)
    assert share_se(0.2, 100) == pytest.approx(0.04)
    assert share_se(0.0, 10) == 0.0 == share_se(1, 10)
    with pytest.raises(ValueError, match=r"share must be a finite number in \[0, 1\], got 1\.5"):
        share_se(1.5, 10)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        share_se(0.5, 0)


def test_jackknife_of_a_mean_is_the_usual_standard_error():
    values = [0.3, 1.2, -0.5, 2.0, 0.7]
    without_one = [(sum(values) - v) / 4 for v in values]
    assert jackknife_se(without_one) == pytest.approx(mean_and_se(values)[1])
    assert math.isnan(jackknife_se([0.4]))


def test_in_standard_errors():
    assert in_standard_errors(0.3, 0.1) == pytest.approx(3.0)
    assert in_standard_errors(-0.2, 0.0) == -math.inf
    assert in_standard_errors(0.0, 0.0) == 0.0


def test_paired_difference_on_a_hand_example():
    result = paired_difference([True, True, False, True], [1, 0, 0, 1])
    # Differences (0, 1, 0, 0): mean 1/4, sample standard deviation 1/2, so se = 1/2 / 2.
    assert (result.samples, result.first, result.second) == (4, 0.75, 0.5)
    assert result.difference == pytest.approx(0.25)
    assert result.se == pytest.approx(0.25)
    assert result.within_noise  # 0.25 is one standard error
    assert paired_difference([1, 0], [1, 0]).se == 0.0
    with pytest.raises(ValueError, match="same length >= 2"):
        paired_difference([1, 0], [1])
    with pytest.raises(ValueError, match="same length >= 2"):
        paired_difference([1], [1])


def test_paired_difference_describes_itself_from_the_baseline():
    result = paired_difference([True, True, False, True], [1, 0, 0, 1])
    assert result.describe() == (
        "0.50 -> 0.75, paired difference +0.25, standard error 0.25 (4 pairs, +1.0 standard errors)"
    )
    assert result.describe(digits=3).startswith("0.500 -> 0.750, paired difference +0.250")
    # No spread at all: no count of standard errors to give.
    assert paired_difference([1, 0], [1, 0]).describe(digits=1) == (
        "0.5 -> 0.5, paired difference +0.0, standard error 0.0 (2 pairs)"
    )
    with pytest.raises(ValueError, match=r"digits must be an int in 0\.\.6, got 7"):
        result.describe(digits=7)
    with pytest.raises(TypeError, match=r"digits must be an int in 0\.\.6, got True"):
        result.describe(digits=True)


def test_ratio_with_error_of_one_unit_has_no_error():
    estimate = ratio_with_error([3.0], [4])
    assert estimate.value == 0.75 and math.isnan(estimate.standard_error) and estimate.units == 1


def test_mean_with_error_by_hand() -> None:
    # Two stories: 1 of 2 steps, then 3 of 4. Mean 4/6; residuals S_g - mean * n_g are
    # 1 - 4/3 = -1/3 and 3 - 8/3 = 1/3; s.e. = sqrt(2/1 * 2/9) / 6 = (2/3) / 6.
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    estimate = mean_with_error(values, group_sizes=[2, 4])
    assert estimate.value == pytest.approx(4 / 6)
    assert estimate.standard_error == pytest.approx((2 / 3) / 6)
    assert estimate.units == 2


def test_mean_with_error_of_single_steps_is_the_usual_standard_error() -> None:
    values = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    estimate = mean_with_error(values, group_sizes=[1] * 500)
    assert estimate.value == pytest.approx(float(values.mean()))
    assert estimate.standard_error == pytest.approx(float(values.std() / math.sqrt(500)))


def test_mean_with_error_grows_when_whole_stories_move_together() -> None:
    # The same 0/1 values, once spread evenly over ten stories, once with all the ones in two
    # stories: the share is the same, its standard error is much larger in the second case.
    even = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0] * 10)
    clumped = torch.cat([torch.ones(10), torch.zeros(40)])
    sizes = [5] * 10
    assert mean_with_error(even, group_sizes=sizes).value == pytest.approx(0.2)
    assert mean_with_error(even, group_sizes=sizes).standard_error == pytest.approx(0.0)
    assert mean_with_error(clumped, group_sizes=sizes).standard_error > 0.1


def test_mean_with_error_rejects_bad_groups_naming_them() -> None:
    values = torch.zeros(4)
    with pytest.raises(ValueError, match="add up"):
        mean_with_error(values, group_sizes=[2, 1])
    with pytest.raises(ValueError, match="at least two"):
        mean_with_error(values, group_sizes=[4])
    with pytest.raises(ValueError, match="group_sizes"):
        mean_with_error(values, group_sizes=[2, 0, 2])
    with pytest.raises(TypeError, match="group_sizes"):
        mean_with_error(values, group_sizes="22")
    with pytest.raises(ValueError, match="values"):
        mean_with_error(torch.zeros(2, 2), group_sizes=[2, 2])
