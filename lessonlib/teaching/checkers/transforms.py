"""Inputs and hint helpers that the temperature, top-k, top-p and min-p checkers share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lessonlib.teaching.checkers.engine import _NEG_INF


def _grid_logits(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Logits on a grid of halves in [-3, 3] (exact, readable, often tied), some -inf.

    Every row keeps at least one finite value, as the sampler requires.
    """
    values = torch.randint(-6, 7, shape, generator=generator).to(torch.float32) / 2
    drop = torch.rand(shape, generator=generator) < 0.15
    rows = values.reshape(-1, shape[-1])
    drop_rows = drop.reshape(-1, shape[-1])
    full = drop_rows.all(dim=-1)
    drop_rows[:, 0] &= ~full
    return rows.masked_fill(drop_rows, _NEG_INF).reshape(shape)


def _random_shape(generator: torch.Generator) -> tuple[int, ...]:
    """(V,) or (B, V) with B in 2..5 and V in 2..8, B == V sometimes (no broadcasting error)."""
    vocab_size = int(torch.randint(2, 9, (), generator=generator))
    kind = int(torch.randint(0, 3, (), generator=generator))
    if kind == 0:
        return (vocab_size,)
    rows = (
        vocab_size
        if kind == 1 and vocab_size <= 5
        else int(torch.randint(2, 6, (), generator=generator))
    )
    return (rows, vocab_size)


def _row_logits(probs: Sequence[float]) -> Tensor:
    """float64 log-probabilities; for powers of two their softmax and cumsum are exact."""
    return torch.tensor(probs, dtype=torch.float64).log()


_ONE_ROW = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0])
_BATCH = torch.tensor(
    [[2.0, -1.0, 0.5, 3.0, 1.0], [0.0, 4.0, 1.0, -2.0, 3.5], [-1.0, -3.0, -2.0, -0.5, -4.0]]
)
# Square (B == V), so that comparing with a (B,) column broadcasts without an error.
_SQUARE = torch.tensor(
    [[1.0, 3.0, 2.0, 0.0], [-2.0, 0.5, 1.5, 4.0], [2.5, 2.5, -1.0, 0.0], [0.0, -1.0, -3.0, -0.5]]
)
_WITH_NEG_INF = torch.tensor([0.0, _NEG_INF, 2.0, _NEG_INF, 1.0])


_NO_SOFTMAX_HINT = "return logits, not probabilities: no softmax in this function."


def _as_rows(values: Tensor) -> Tensor:
    return values.detach().to(torch.float64).reshape(-1, values.shape[-1])


def _looks_like_probs(g: Tensor) -> bool:
    """True if every row of `g` (as from `_as_rows`) is non-negative and sums to 1."""
    return bool((g >= 0).all()) and torch.allclose(g.sum(-1), torch.ones(g.shape[0], dtype=g.dtype))


def _kept_counts(values: Tensor) -> list[int]:
    return torch.isfinite(_as_rows(values)).sum(-1).tolist()
