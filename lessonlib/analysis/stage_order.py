"""The sampling pipeline stage by stage, and what changes when its order changes.

The course's sampler runs temperature -> top-k -> top-p -> softmax (as Hugging Face and vLLM);
llama.cpp's default chain truncates the unscaled logits and divides by the temperature last
(`temperature_last_probs`). Temperature commutes with top-k but not with top-p, and top-p after
top-k reads the mass renormalised over the k survivors (`kept_mask(..., top_p_first=True)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lessonlib.analysis.batches import batch_sizes, generate_batches
from lessonlib.analysis.recorded import check_recorded, drawn_step_logits
from lessonlib.analysis.statistics import Estimate, mean_with_error
from lessonlib.generation import Generation, LanguageModel
from lessonlib.progress import progress_bar
from lessonlib.sampling import (
    apply_temperature,
    filter_top_k,
    filter_top_p,
    sample_next,
    sampling_probs,
)
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_logits

__all__ = [
    "STAGES",
    "SWAPS",
    "OrderComparison",
    "RecordedSteps",
    "StageProbs",
    "compare_orders",
    "draw_counts",
    "draw_tokens",
    "drawn_step_contexts",
    "kept_mask",
    "orders_disagree",
    "record_steps",
    "stage_probs",
    "temperature_last_probs",
]

STAGES = ("temperature", "top-k", "top-p", "draw")  # the fixed order of the course's sampler
# The stage that moves in the other order: "temperature" goes last (after top-k and top-p, as
# llama.cpp's default chain), "top-p" goes before top-k (top-p reads the untruncated mass).
SWAPS = ("temperature", "top-p")


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
    top_p_first: bool = False,
) -> Tensor:
    """Boolean mask of the tokens top-k and top-p keep, same shape as `logits`.

    By default the filters see `logits / temperature` (temperature first, as `sampling_probs`)
    and top-k runs before top-p; with `temperature_last=True` they see the unscaled logits
    (llama.cpp's default order), with `top_p_first=True` top-p runs before top-k.
    """
    for name, flag in (("temperature_last", temperature_last), ("top_p_first", top_p_first)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    # Validates `temperature` (> 0) in both orders, so that a bad value never passes silently.
    scaled = apply_temperature(logits, temperature)
    seen = logits if temperature_last else scaled
    if top_p_first:
        kept = filter_top_k(filter_top_p(seen, top_p), top_k)
    else:
        kept = filter_top_p(filter_top_k(seen, top_k), top_p)
    return torch.isfinite(kept)


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


def _check_swap(swap: object) -> str:
    if swap not in SWAPS:
        raise ValueError(f"swap must be one of {SWAPS}, got {swap!r}")
    return swap


def _both_orders(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, swap: str
) -> tuple[Tensor, Tensor]:
    """Kept masks of the course's order and of the order with `swap` moved."""
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    course = kept_mask(logits, **settings)
    moved = {"temperature": "temperature_last", "top-p": "top_p_first"}[_check_swap(swap)]
    return course, kept_mask(logits, **settings, **{moved: True})


@torch_threads(GENERATION_THREADS)
def orders_disagree(
    logits: Tensor,
    *,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    swap: str = "temperature",
) -> Tensor:
    """Per row, True where the course's order and the `swap`ped order keep different token sets.

    `swap="temperature"` compares temperature first with temperature last; `swap="top-p"`
    compares top-k then top-p with top-p then top-k. (V,) gives a scalar bool tensor, (B, V)
    gives (B,).
    """
    course, swapped = _both_orders(logits, temperature, top_k, top_p, swap)
    return (course != swapped).any(dim=-1)


@dataclass(frozen=True)
class OrderComparison:
    """How often two orders keep different token sets over many steps, with standard errors."""

    temperature: float
    top_k: int | None
    top_p: float | None
    swap: str  # the stage moved in the other order (see SWAPS)
    steps: int  # rows compared
    differ: int  # rows whose kept sets differ
    share: Estimate  # differ / steps, with its standard error over the groups (stories)
    kept_course: float  # mean number of tokens kept in the course's order
    kept_swapped: float  # mean number of tokens kept in the swapped order
    kept_difference: Estimate  # mean of (swapped - course) per step: a paired difference


@torch_threads(GENERATION_THREADS)
def compare_orders(
    logits: Tensor,
    *,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    swap: str = "temperature",
    group_sizes: Sequence[int] | None = None,
) -> OrderComparison:
    """Compare the course's order with the `swap`ped one on every row of (steps, V) logits.

    `group_sizes` (the steps per story, in order) makes each story one unit of the standard
    errors; without it every step is its own unit.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"logits must be a tensor of shape (steps, V) with steps >= 2, got {shape}"
        )
    steps = int(logits.shape[0])
    sizes = [1] * steps if group_sizes is None else group_sizes
    course, swapped = _both_orders(logits, temperature, top_k, top_p, swap)
    differ = (course != swapped).any(dim=-1)
    kept_course, kept_swapped = course.sum(dim=-1).double(), swapped.sum(dim=-1).double()
    return OrderComparison(
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
        swap=swap,
        steps=steps,
        differ=int(differ.sum()),
        share=mean_with_error(differ, group_sizes=sizes),
        kept_course=float(kept_course.mean()),
        kept_swapped=float(kept_swapped.mean()),
        kept_difference=mean_with_error(kept_swapped - kept_course, group_sizes=sizes),
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
    n = check_int("n", n, low=0)
    logits = check_logits("logits", logits, dims=(1,))
    if n == 0:
        # Nothing to draw, but bad settings must still fail (sampling_probs draws nothing).
        sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return torch.zeros(0, dtype=torch.int64)
    # One batch of n identical rows: one call, one stream of random numbers from `generator`.
    return sample_next(
        logits.expand(n, -1),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
    ).reshape(n)


def draw_counts(logits: Tensor, *, n: int, **settings: Any) -> Tensor:
    """How often each token comes up in `draw_tokens(logits, n=n, **settings)`: (V,) int64."""
    return torch.bincount(draw_tokens(logits, n=n, **settings), minlength=logits.shape[0])


def drawn_step_contexts(
    generation: Generation, tokenizer: CharTokenizer, *, width: int = 24
) -> list[tuple[str, str]]:
    """For each row of `drawn_step_logits`: the last `width` characters before it, and the draw."""
    width = check_int("width", width, low=0)
    contexts = []
    for prompt, ids in zip(check_recorded(generation).prompts, generation.token_ids, strict=True):
        text = prompt + tokenizer.decode(ids)
        start = len(prompt)
        for step in range(len(ids)):
            end = start + step
            contexts.append((text[max(0, end - width) : end], text[end]))
    return contexts


@dataclass(frozen=True, eq=False)
class RecordedSteps:
    """Every drawn step of several generated stories, story after story."""

    logits: Tensor  # (steps, V): the model's raw logits at each drawn token
    contexts: list[tuple[str, str]]  # per step: the text before it (its end) and the draw
    story_lengths: tuple[int, ...]  # drawn tokens per story, in order; they add up to steps
    texts: tuple[str, ...]  # the stories


def record_steps(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    stories: int,
    generator: torch.Generator,
    batch_size: int = 8,
    progress: bool = False,
) -> RecordedSteps:
    """Sample `stories` stories from the empty prompt at temperature 1, keeping each step's logits.

    Batches of `batch_size` draw one after another from `generator`, so the first batch is the
    same as one `generate` call with that batch size and generator. `progress` shows a bar.
    """
    sizes = batch_sizes(check_int("stories", stories, low=1), batch_size)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    bar = progress_bar(total=stories, desc="stories", unit="story", show=progress)
    batches = generate_batches(
        model, "", tokenizer=tokenizer, sizes=sizes, generators=[generator] * len(sizes), bar=bar,
        max_new_tokens=model.block_size, record_logits=True,
    )  # fmt: skip
    bar.close()
    return RecordedSteps(
        logits=torch.cat([drawn_step_logits(batch) for batch in batches]),
        contexts=[
            context for batch in batches for context in drawn_step_contexts(batch, tokenizer)
        ],
        story_lengths=tuple(len(ids) for batch in batches for ids in batch.token_ids),
        texts=tuple(text for batch in batches for text in batch.texts),
    )
