"""The torch thread policy of decoding: one thread for a few sequences, two for large batches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "GENERATION_THREADS",
    "PARALLEL_BATCH",
    "PARALLEL_THREADS",
    "decoding_threads",
    "torch_threads",
]

# A decoding step of a few sequences multiplies tiny matrices (batch x 128): thread start-up and
# spin-waiting cost more than they save, and far more when other processes share the cores.
# A large batch is another matter: its step reads the whole KV cache and multiplies
# (batch x 128) matrices, work that splits well. Measured on 2 cores (ms per cached step, 1 vs
# 2 threads): batch 2: 0.97 vs 1.12; batch 16: 3.2 vs 2.4; batch 64: 11.8 vs 7.1.
GENERATION_THREADS = 1  # for small work: one sequence, or a few
PARALLEL_BATCH = 16  # batches of at least this many sequences use PARALLEL_THREADS
# Two, not "every core": the thread count changes how torch splits its sums, so logits move by
# about 1e-6 between 1 and 2 threads. A fixed count keeps generated text, and the notebooks'
# saved outputs, the same on a 2-core laptop and a 16-core server.
PARALLEL_THREADS = 2


def decoding_threads(batch_size: int) -> int:
    """Torch threads for one decoding step of `batch_size` sequences (see PARALLEL_BATCH)."""
    if batch_size < PARALLEL_BATCH:
        return GENERATION_THREADS
    # Never more than torch was allowed: torch.set_num_threads(1) by a user still means 1.
    return min(PARALLEL_THREADS, torch.get_num_threads())


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
