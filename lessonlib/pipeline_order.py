"""The sampling pipeline stage by stage, and what changes when its order changes.

The course's sampler (`lessonlib.sampling.sampling_probs`) runs temperature -> top-k -> top-p ->
softmax, the order Hugging Face transformers and vLLM use. llama.cpp's default chain runs the
truncation samplers on the unscaled logits and divides by the temperature last;
`temperature_last_probs` is that order, built from the same lessonlib transforms. Temperature
never changes the ranking of the logits, so it commutes with top-k; it changes how the mass is
spread, so it does not commute with top-p, and the two orders can keep different token sets.

Pure functions on logits of shape (V,) or (B, V) (the recorded logits of `generate(...,
record_logits=True)` are (B, steps, V); `drawn_step_logits` flattens them to one row per drawn
token). Randomness only from an explicit `torch.Generator`. Nothing here runs a model or plots.
The tensor functions run on `GENERATION_THREADS` torch threads, as decoding does: they are many
small operations on (steps, 50) matrices, measured several times faster on one thread than
on two here when other processes share the cores.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.generation import GENERATION_THREADS, Generation, torch_threads
from lessonlib.sampling import (
    apply_temperature,
    filter_top_k,
    filter_top_p,
    sample_next,
    sampling_probs,
)
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "STAGES",
    "OrderComparison",
    "StageProbs",
    "compare_orders",
    "draw_counts",
    "draw_tokens",
    "drawn_step_contexts",
    "drawn_step_logits",
    "kept_mask",
    "orders_disagree",
    "stage_probs",
    "temperature_last_probs",
]

STAGES = ("temperature", "top-k", "top-p", "draw")  # the fixed order of the course's sampler


def _softmax(logits: Tensor) -> Tensor:
    """Softmax in float32 or wider (float64 input stays float64)."""
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


@dataclass(frozen=True, eq=False)
class StageProbs:
    """Probabilities after each stage of temperature -> top-k -> top-p; same shape as the logits."""

    temperature: Tensor  # softmax(logits / temperature): every token still possible
    top_k: Tensor  # ... then only the k highest logits, renormalised
    top_p: Tensor  # ... then only the nucleus of that, renormalised: what the draw samples from

    @property
    def final(self) -> Tensor:
        """The distribution the draw samples from (equal to `sampling_probs`)."""
        return self.top_p


@torch_threads(GENERATION_THREADS)  # many small tensor operations: see GENERATION_THREADS
def stage_probs(
    logits: Tensor, *, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> StageProbs:
    """Probabilities after temperature, after top-k and after top-p; (V,) or (B, V).

    `temperature` must be > 0 (greedy has no stages to show); `None` turns a filter off, and
    that stage then equals the one before it.
    """
    scaled = apply_temperature(logits, temperature)
    after_k = filter_top_k(scaled, top_k)
    after_p = filter_top_p(after_k, top_p)
    return StageProbs(
        temperature=_softmax(scaled), top_k=_softmax(after_k), top_p=_softmax(after_p)
    )


@torch_threads(GENERATION_THREADS)
def kept_mask(
    logits: Tensor,
    *,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature_last: bool = False,
) -> Tensor:
    """Boolean mask of the tokens top-k and top-p keep, same shape as `logits`.

    By default the filters see `logits / temperature` (temperature first, as `sampling_probs`);
    with `temperature_last=True` they see the unscaled logits (llama.cpp's default order).
    """
    if not isinstance(temperature_last, bool):
        raise TypeError(f"temperature_last must be a bool, got {temperature_last!r}")
    # Validates `temperature` (> 0) in both orders, so that a bad value never passes silently.
    scaled = apply_temperature(logits, temperature)
    seen = logits if temperature_last else scaled
    return torch.isfinite(filter_top_p(filter_top_k(seen, top_k), top_p))


@torch_threads(GENERATION_THREADS)
def temperature_last_probs(
    logits: Tensor, *, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Probabilities of top-k -> top-p on the unscaled logits, then temperature, then softmax.

    This is the order of llama.cpp's default sampler chain (its other samplers switched off);
    compare `lessonlib.sampling.sampling_probs`, which divides by the temperature first.
    Accepts (V,) or (B, V) and `temperature > 0`; the result has the shape of `logits`.
    """
    truncated = filter_top_p(filter_top_k(logits, top_k), top_p)
    # -inf / temperature stays -inf: the removed tokens stay removed.
    return _softmax(apply_temperature(truncated, temperature))


@torch_threads(GENERATION_THREADS)
def orders_disagree(
    logits: Tensor, *, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Per row, True where temperature first and temperature last keep different token sets.

    (V,) gives a scalar bool tensor, (B, V) gives (B,).
    """
    first = kept_mask(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    last = kept_mask(
        logits, temperature=temperature, top_k=top_k, top_p=top_p, temperature_last=True
    )
    return (first != last).any(dim=-1)


@dataclass(frozen=True)
class OrderComparison:
    """How often the two orders keep different token sets over many steps, and how many each keeps."""

    temperature: float
    top_k: int | None
    top_p: float | None
    steps: int  # rows compared
    differ: int  # rows whose kept sets differ
    kept_first: float  # mean number of tokens kept with temperature first
    kept_last: float  # mean number of tokens kept with temperature last

    @property
    def share(self) -> float:
        """Fraction of the steps whose kept sets differ."""
        return self.differ / self.steps


@torch_threads(GENERATION_THREADS)
def compare_orders(
    logits: Tensor, *, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> OrderComparison:
    """Compare temperature-first and temperature-last kept sets on every row of (steps, V) logits."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] == 0:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"logits must be a tensor of shape (steps, V) with steps >= 1, got {shape}"
        )
    first = kept_mask(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    last = kept_mask(
        logits, temperature=temperature, top_k=top_k, top_p=top_p, temperature_last=True
    )
    return OrderComparison(
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
        steps=int(logits.shape[0]),
        differ=int((first != last).any(dim=-1).sum()),
        kept_first=float(first.sum(dim=-1).double().mean()),
        kept_last=float(last.sum(dim=-1).double().mean()),
    )


@torch_threads(GENERATION_THREADS)
def draw_tokens(
    logits: Tensor,
    *,
    n: int,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`n` independent draws of `sample_next` from one row of logits (V,): token ids, shape (n,)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(logits, Tensor) or logits.dim() != 1:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be one row of shape (V,), got {shape}")
    if n == 0:
        # Nothing to draw, but bad settings must still fail (sampling_probs draws nothing).
        sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return torch.zeros(0, dtype=torch.int64)
    # One batch of n identical rows: one call, one stream of random numbers from `generator`.
    return sample_next(
        logits.expand(int(n), -1),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
    ).reshape(int(n))


def draw_counts(
    logits: Tensor,
    *,
    n: int,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """How often each token comes up in `n` draws from one row of logits (V,): (V,) int64."""
    tokens = draw_tokens(
        logits, n=n, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    return torch.bincount(tokens, minlength=logits.shape[0])


def _check_recorded(generation: object) -> Generation:
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    if generation.logits is None:
        raise ValueError(
            "generation has no recorded logits; call generate(..., record_logits=True)"
        )
    return generation


def drawn_step_logits(generation: Generation) -> Tensor:
    """The recorded logits of every drawn token, all rows one after another: (steps, V).

    Steps after a row stopped (padding up to the longest row) are left out.
    """
    logits = _check_recorded(generation).logits
    rows = [logits[row, : len(ids)] for row, ids in enumerate(generation.token_ids)]
    return torch.cat(rows, dim=0)


def drawn_step_contexts(
    generation: Generation, tokenizer: CharTokenizer, *, width: int = 24
) -> list[tuple[str, str]]:
    """For each row of `drawn_step_logits`: the last `width` characters before it, and the draw."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an int >= 0, got {width!r}")
    contexts = []
    for prompt, ids in zip(_check_recorded(generation).prompts, generation.token_ids, strict=True):
        text = prompt + tokenizer.decode(ids)
        start = len(prompt)
        for step in range(len(ids)):
            end = start + step
            contexts.append((text[max(0, end - width) : end], text[end]))
    return contexts
