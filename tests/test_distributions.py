"""Distribution statistics."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib.distributions import (
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
    with pytest.raises(ValueError, match="non-negative"):
        as_probs([0.5, -0.1])
    with pytest.raises(ValueError, match="positive sum"):
        as_probs([0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        as_probs(torch.ones(2, 2, 2))
