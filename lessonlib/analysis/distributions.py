"""Statistics of next-token distributions: entropy, tail mass, nucleus size, example shapes.

Pure functions on probability tensors of shape (V,) or (B, V); no plotting, no widgets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lessonlib.sampling import filter_top_k, filter_top_p

# Example distributions for the explorers and quizzes (sorted, most likely first).
QUIZ_NUCLEUS = (0.50, 0.20, 0.15, 0.08, 0.05, 0.02)  # the nucleus-size quiz of lesson 04
CONFIDENT = (0.92, 0.03, 0.02, 0.013, 0.009, 0.005, 0.003)  # one token holds most of the mass
LONG_TAILED = tuple(round(0.2 / r, 6) for r in range(1, 25))  # Zipf-like: many small bars


def as_probs(values: Tensor | tuple[float, ...] | list[float]) -> Tensor:
    """A float64 tensor of probabilities, renormalised to sum to 1 per row."""
    try:
        probs = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, RuntimeError):
        raise TypeError(
            "values must be a torch.Tensor or a sequence of numbers of shape (V,) or (B, V), "
            f"got {type(values).__name__}"
        ) from None
    except ValueError as error:  # rows of different lengths, or strings among the numbers
        raise ValueError(
            "values must be numbers of shape (V,) or (B, V) with rows of equal length, "
            f"got a {type(values).__name__} that torch cannot convert ({error})"
        ) from None
    if probs.dim() not in (1, 2) or probs.shape[-1] == 0:
        raise ValueError(f"values must have shape (V,) or (B, V), got shape {tuple(probs.shape)}")
    bad = (probs < 0) | ~torch.isfinite(probs)
    if bool(bad.any()):
        where = tuple(torch.nonzero(bad)[0].tolist())
        raise ValueError(
            f"values must be finite and non-negative, got {float(probs[where])} at index "
            f"{where} of shape {tuple(probs.shape)}"
        )
    total = probs.sum(dim=-1, keepdim=True)
    if bool((total == 0).any()):
        if probs.dim() == 1:
            raise ValueError(
                f"values must have a positive sum, got only zeros (shape {tuple(probs.shape)})"
            )
        row = int(torch.nonzero(total.flatten() == 0)[0])
        raise ValueError(
            f"values must have a positive sum in every row, got only zeros in row {row}"
        )
    return probs / total


def _logits(probs: Tensor) -> Tensor:
    # log(0) = -inf is exactly "filtered out" for the sampler's filters.
    return torch.log(probs)


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats per row; (V,) gives a scalar, (B, V) gives (B,)."""
    p = as_probs(probs)
    return -(p * torch.log(p).nan_to_num(neginf=0.0)).sum(dim=-1)


def tail_mass(probs: Tensor, k: int) -> Tensor:
    """Probability held by the tokens outside the top k, per row."""
    p = as_probs(probs)
    kept = torch.isfinite(filter_top_k(_logits(p), k))
    return (p * ~kept).sum(dim=-1)


def nucleus_mask(probs: Tensor, p: float) -> Tensor:
    """Boolean mask of the tokens top-p keeps (same rule as lessonlib.sampling.filter_top_p)."""
    return torch.isfinite(filter_top_p(_logits(as_probs(probs)), p))


def nucleus_size(probs: Tensor, p: float) -> Tensor:
    """Number of tokens top-p keeps, per row."""
    return nucleus_mask(probs, p).sum(dim=-1)


def kept_mass(probs: Tensor, mask: Tensor) -> Tensor:
    """Probability of the tokens in `mask` (a boolean tensor of the same shape as probs), per row."""
    p = as_probs(probs)
    if not isinstance(mask, Tensor):
        raise TypeError(
            "mask must be a boolean torch.Tensor of the same shape as probs, "
            f"got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a boolean torch.Tensor (e.g. from nucleus_mask), got dtype {mask.dtype}"
        )
    if mask.shape != p.shape:
        raise ValueError(
            f"mask must have the same shape as probs, got mask of shape {tuple(mask.shape)} "
            f"for probs of shape {tuple(p.shape)}"
        )
    return (p * mask).sum(dim=-1)
