"""Where a model is sure and where it hesitates, and what top-k and top-p keep at such a step.

Pure functions on the raw logits that `generate(..., record_logits=True)` keeps, shape
(steps, V), read at temperature 1. "Confident" means the top token's probability exceeds a
threshold; "uncertain" means high entropy. The kept sets come from `lessonlib.sampling`
(`filter_top_k`, `filter_top_p`), so the counts are exactly what the sampler keeps. This module
runs no model and draws nothing.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.sampling import filter_top_k, filter_top_p

__all__ = [
    "Kept",
    "confident_step",
    "kept_by_top_k",
    "kept_by_top_p",
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
