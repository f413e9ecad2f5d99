"""Confident and uncertain steps, and what top-k and top-p keep at one step."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib.confidence import (
    Kept,
    confident_step,
    kept_by_top_k,
    kept_by_top_p,
    step_entropies,
    step_top_probs,
    uncertain_step,
)
from lessonlib.distributions import CONFIDENT, LONG_TAILED, QUIZ_NUCLEUS, as_probs


def logits_of(values) -> torch.Tensor:
    return torch.log(as_probs(values))


def steps() -> torch.Tensor:
    """Four steps over 8 tokens: uniform, sharp, medium, sharp."""
    rows = [
        [0.125] * 8,
        [0.97] + [0.03 / 7] * 7,
        [0.5, 0.3, 0.2] + [0.0] * 5,
        [0.99] + [0.01 / 7] * 7,
    ]
    return torch.stack([logits_of(row) for row in rows])


def test_top_probs_and_entropies_per_step():
    assert step_top_probs(steps()).tolist() == pytest.approx([0.125, 0.97, 0.5, 0.99])
    entropies = step_entropies(steps())
    assert float(entropies[0]) == pytest.approx(math.log(8))
    # Zero-probability tokens (-inf logits) add nothing: the third step has 3 live tokens.
    expected = -sum(q * math.log(q) for q in (0.5, 0.3, 0.2))
    assert float(entropies[2]) == pytest.approx(expected)
    assert entropies.dtype == torch.float64


def test_confident_step_is_the_first_above_the_threshold_from_start():
    assert confident_step(steps(), min_top_prob=0.95) == 1
    assert confident_step(steps(), min_top_prob=0.95, start=2) == 3
    assert confident_step(steps(), min_top_prob=0.98) == 3
    with pytest.raises(ValueError, match="no step at or after start=0"):
        confident_step(steps(), min_top_prob=0.995)


def test_uncertain_step_has_the_highest_entropy():
    assert uncertain_step(steps()) == 0
    assert uncertain_step(steps(), start=1) == 2


def test_top_k_keeps_k_tokens_whatever_the_shape_and_top_p_tracks_it():
    for values, top_p_count in ((CONFIDENT, 1), (QUIZ_NUCLEUS, 4), (LONG_TAILED, 17)):
        logits = logits_of(values)
        assert kept_by_top_k(logits, 5).count == 5
        assert kept_by_top_p(logits, 0.9).count == top_p_count
    quiz = logits_of(QUIZ_NUCLEUS)
    assert kept_by_top_k(quiz, 5) == Kept(rule="top-k (k=5)", count=5, mass=pytest.approx(0.98))
    assert kept_by_top_p(quiz, 0.9) == Kept(rule="top-p (p=0.9)", count=4, mass=pytest.approx(0.93))


def test_bad_input_names_the_parameter():
    with pytest.raises(
        TypeError, match=r"logits must be a torch\.Tensor of shape \(steps, V\), got list"
    ):
        step_top_probs([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"shape \(steps, V\)"):
        step_entropies(torch.zeros(5))
    with pytest.raises(ValueError, match="start must be an int in 0..3"):
        uncertain_step(steps(), start=4)
    with pytest.raises(ValueError, match="min_top_prob must be in"):
        confident_step(steps(), min_top_prob=1.0)
    with pytest.raises(ValueError, match=r"shape \(V,\)"):
        kept_by_top_p(steps(), 0.9)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        kept_by_top_k([0.0, 1.0], 1)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        kept_by_top_k(logits_of(QUIZ_NUCLEUS), 0)


def test_integer_logits_are_rejected_naming_their_dtype():
    # The dtype, not the type name "Tensor", and not the values.
    with pytest.raises(
        TypeError,
        match=r"logits must have a floating dtype \(e\.g\. torch\.float32\), got torch\.int64",
    ):
        step_top_probs(torch.tensor([[0, 1, 2]]))
