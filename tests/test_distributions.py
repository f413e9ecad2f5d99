"""Distribution statistics."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib.analysis.distributions import (
    CONFIDENT,
    LONG_TAILED,
    QUIZ_NUCLEUS,
    as_probs,
    entropy,
    kept_mass,
    nucleus_mask,
    nucleus_size,
    tail_mass,
)


def test_entropy_of_uniform_and_one_hot():
    assert float(entropy(torch.ones(8))) == pytest.approx(math.log(8))
    assert float(entropy(torch.tensor([0.0, 1.0, 0.0]))) == 0.0
    assert entropy(torch.ones(3, 4)).shape == (3,)


def test_tail_mass_is_what_top_k_removes():
    probs = as_probs(QUIZ_NUCLEUS)
    assert float(tail_mass(probs, 2)) == pytest.approx(0.30)
    assert float(tail_mass(probs, 6)) == 0.0


def test_nucleus_of_the_quiz_distribution():
    # 0.50 + 0.20 + 0.15 = 0.85 < 0.9, adding 0.08 crosses it: four tokens.
    assert int(nucleus_size(QUIZ_NUCLEUS, 0.9)) == 4
    mask = nucleus_mask(QUIZ_NUCLEUS, 0.9)
    assert float(kept_mass(QUIZ_NUCLEUS, mask)) == pytest.approx(0.93)


def test_nucleus_tracks_confidence():
    assert int(nucleus_size(CONFIDENT, 0.9)) == 1
    assert int(nucleus_size(LONG_TAILED, 0.9)) > 10


def test_as_probs_rejects_bad_values():
    with pytest.raises(
        ValueError, match=r"values must be finite and non-negative, got -0\.1 at index \(1,\)"
    ):
        as_probs([0.5, -0.1])
    with pytest.raises(ValueError, match="positive sum"):
        as_probs([0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        as_probs(torch.ones(2, 2, 2))


def test_as_probs_names_the_first_bad_value_and_its_index():
    with pytest.raises(
        ValueError, match=r"non-negative, got nan at index \(1, 0\) of shape \(2, 3\)"
    ):
        as_probs([[0.5, 0.5, 0.0], [float("nan"), -1.0, 1.0]])
    with pytest.raises(ValueError, match=r"non-negative, got inf at index \(2,\) of shape \(3,\)"):
        as_probs(torch.tensor([0.5, 0.5, float("inf")]))
    with pytest.raises(ValueError, match="positive sum in every row, got only zeros in row 1"):
        as_probs([[1.0, 0.0], [0.0, 0.0]])


def test_as_probs_rejects_what_is_not_numbers():
    with pytest.raises(TypeError, match="values must be a torch.Tensor or a sequence .* got str"):
        as_probs("abc")
    with pytest.raises(TypeError, match="values must be .* got NoneType"):
        as_probs(None)
    with pytest.raises(ValueError, match="values must be numbers .* rows of equal length"):
        as_probs([[0.5, 0.5], [1.0]])


def test_kept_mass_rejects_a_mask_of_another_shape_naming_both():
    mask = nucleus_mask(QUIZ_NUCLEUS, 0.9)
    with pytest.raises(
        ValueError,
        match=r"mask must have the same shape as probs, got mask of shape \(3,\) "
        r"for probs of shape \(6,\)",
    ):
        kept_mass(QUIZ_NUCLEUS, mask[:3])
    with pytest.raises(ValueError, match=r"mask of shape \(6,\) for probs of shape \(2, 6\)"):
        kept_mass([QUIZ_NUCLEUS, QUIZ_NUCLEUS], mask)


def test_kept_mass_wants_a_boolean_tensor():
    with pytest.raises(TypeError, match="mask must be a boolean torch.Tensor .* got list"):
        kept_mass(QUIZ_NUCLEUS, [True] * 6)
    with pytest.raises(TypeError, match="mask must be a boolean .* got dtype torch.float32"):
        kept_mass(QUIZ_NUCLEUS, torch.ones(6))
