"""Many stories drawn in batches, each batch one `generate` call with a generator of its own.

Batches smaller than `lessonlib.threads.PARALLEL_BATCH` decode on one thread: fast on a busy
machine, and the same text on every machine. The lessons' sweeps draw in such batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from lessonlib.generation import Generation, LanguageModel, generate
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int

__all__ = ["batch_sizes", "generate_batches", "seeded"]


def batch_sizes(samples: int, batch_size: int) -> list[int]:
    """The sizes of the batches that split `samples` rows: full batches, then the rest."""
    samples = check_int("samples", samples, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    return [min(batch_size, samples - start) for start in range(0, samples, batch_size)]


def seeded(seeds: Iterable[int]) -> list[torch.Generator]:
    """A fresh torch.Generator for each seed."""
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def generate_batches(
    model: LanguageModel,
    prompt: str,
    *,
    tokenizer: CharTokenizer,
    sizes: Sequence[int],
    generators: Sequence[torch.Generator],
    bar: Any = None,  # a lessonlib.progress bar, or None
    **settings: object,
) -> list[Generation]:
    """`generate` of `prompt` once per batch, sizes[b] rows drawn with generators[b].

    `settings` are the other keyword arguments of `generate`; `bar` counts the rows drawn.
    """
    generations = []
    for size, generator in zip(sizes, generators, strict=True):
        generations.append(
            generate(model, [prompt] * size, tokenizer=tokenizer, generator=generator, **settings)
        )
        if bar is not None:
            bar.update(size)
    return generations
