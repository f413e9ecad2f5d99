"""Counted work: the floating-point operations of the course GPT, by formula and by torch's count.

Only matrix multiplications count, at 2 FLOPs per multiply-add, as torch's `FlopCounterMode`
counts them; `count_operations` counts tensor operations whatever their size, and
`time_side_by_side` puts the clock beside the counts. The generation loop itself is in
`lessonlib.generation`; `generation_step_flops` follows its cache rule step by step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lessonlib.model import GPTConfig
from lessonlib.progress import progress_bar
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.validation import check_int

__all__ = [
    "ForwardFlops",
    "count_operations",
    "fit_exponent",
    "forward_flops",
    "generation_flops",
    "generation_step_flops",
    "measure_flops",
    "time_side_by_side",
]


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one or more forward passes, by part of the model (matmuls only, 2 per MAC)."""

    projections: int  # q, k, v and attention output projections, every layer
    attention: int  # Q K^T scores and the weighted sum A V, every layer and head
    mlp: int  # both linear layers of every MLP
    lm_head: int  # the final projection to vocabulary logits

    @property
    def total(self) -> int:
        """All counted FLOPs."""
        return self.projections + self.attention + self.mlp + self.lm_head

    @property
    def weights(self) -> int:
        """FLOPs of the products with weight matrices (everything but attention)."""
        return self.projections + self.mlp + self.lm_head

    def __add__(self, other: ForwardFlops) -> ForwardFlops:
        if not isinstance(other, ForwardFlops):
            return NotImplemented
        return ForwardFlops(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )


_ZERO = ForwardFlops(0, 0, 0, 0)


def forward_flops(
    config: GPTConfig, *, past_tokens: int, new_tokens: int, batch_size: int = 1
) -> ForwardFlops:
    """FLOPs of one forward pass over `new_tokens` positions after `past_tokens` cached ones.

    Bias additions, LayerNorm, GELU, softmax and embeddings are left out, as torch's counter
    leaves them out: a small share of the work.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    check_int("past_tokens", past_tokens, low=0)
    check_int("new_tokens", new_tokens, low=1)
    check_int("batch_size", batch_size, low=1)
    if past_tokens + new_tokens > config.block_size:
        raise ValueError(
            f"past_tokens + new_tokens must be <= block_size={config.block_size}, "
            f"got {past_tokens} + {new_tokens}"
        )
    C, L = config.n_embd, config.n_layer
    rows = batch_size * new_tokens  # every matmul below has one row per new position
    context = past_tokens + new_tokens
    return ForwardFlops(
        projections=L * 2 * rows * C * 4 * C,  # q, k, v (3C outputs) and the output projection
        # Per head: (new x hd) @ (hd x context), then (new x context) @ (context x hd); summed
        # over n_head heads of width hd = C / n_head, each product is 2 * new * context * C.
        # Masked scores count too: a dense kernel computes them all.
        attention=L * 2 * (2 * rows * context * C),
        mlp=L * 2 * rows * C * 8 * C,  # C -> 4C and 4C -> C
        lm_head=2 * rows * C * config.vocab_size,  # logits at every new position
    )


def generation_step_flops(
    config: GPTConfig,
    *,
    prompt_length: int,
    max_new_tokens: int,
    use_cache: bool,
    batch_size: int = 1,
) -> list[ForwardFlops]:
    """FLOPs of each forward pass `generate` runs, for a context of `prompt_length` tokens.

    `prompt_length` counts every token fed at the first step (for `generate`, the boundary
    token plus the prompt). Step i reads a context of prompt_length + i tokens. Without a cache
    it runs the whole (cropped) context; with one, the first step fills the cache (prefill)
    and each later step feeds one token, until the cache would pass the block size: then it
    is emptied and refilled from the last block_size tokens, as `next_token_logits` does.
    Every row runs all max_new_tokens steps, as `generate` does with stop_at_boundary=False
    (with it, a batch stops early and drops finished rows, which this count does not follow).
    """
    check_int("prompt_length", prompt_length, low=1)
    check_int("max_new_tokens", max_new_tokens, low=0)
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be a bool, got {use_cache!r}")
    block = config.block_size
    steps = []
    cached, fresh = 0, prompt_length  # positions in the cache; tokens the next step feeds
    for i in range(max_new_tokens):
        context = prompt_length + i
        if not use_cache:
            past, new = 0, min(context, block)
        else:
            if cached + fresh > block:
                cached, fresh = 0, min(context, block)
            past, new = cached, fresh
            cached, fresh = cached + fresh, 1
        steps.append(forward_flops(config, past_tokens=past, new_tokens=new, batch_size=batch_size))
    return steps


def generation_flops(
    config: GPTConfig,
    *,
    prompt_length: int,
    max_new_tokens: int,
    use_cache: bool,
    batch_size: int = 1,
) -> ForwardFlops:
    """Total FLOPs of generating `max_new_tokens` tokens (see `generation_step_flops`)."""
    steps = generation_step_flops(
        config,
        prompt_length=prompt_length,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        batch_size=batch_size,
    )
    return sum(steps, _ZERO)


def fit_exponent(lengths: Sequence[float], work: Sequence[float]) -> float:
    """Least-squares slope of log(work) against log(lengths): gamma in work ~ c * length**gamma."""
    if len(lengths) != len(work):
        raise ValueError(
            f"lengths and work must have the same length, got {len(lengths)} and {len(work)}"
        )
    if len(set(lengths)) < 2:
        raise ValueError(f"lengths must hold at least two distinct values, got {list(lengths)}")
    if any(not (x > 0) for x in lengths) or any(not (y > 0) for y in work):
        raise ValueError("lengths and work must be positive (their logarithms are fitted)")
    xs = [math.log(x) for x in lengths]
    ys = [math.log(y) for y in work]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


def measure_flops(run: Callable[[], object]) -> int:
    """FLOPs torch's FlopCounterMode counts while `run()` executes, attention included.

    Attention is switched to SDPA's math backend for the call, so that it runs as matrix
    products the counter knows (the fused CPU kernel is invisible to it); the math backend
    computes the same attention, up to float rounding.
    """
    # Imported here: the formulas above need neither, and the counter is only for checking.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        run()
    return counter.get_total_flops()


def count_operations(run: Callable[[], object]) -> Counter[str]:
    """The torch operations `run()` starts from Python, by name (e.g. "aten::linear"): 1 each.

    Only top-level operations count: a linear layer is one "aten::linear", not also the matrix
    product it calls inside. Views and slices count too; each costs a fixed few microseconds.
    """
    # The profiler's C++ layer (kineto) logs its every start and stop to stderr unless told
    # otherwise before its first use; 6 silences it (an explicit setting is left alone).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    return Counter(
        event.name
        for event in profiler.events()
        if event.cpu_parent is None and event.name.startswith("aten::")
    )


def time_side_by_side(
    runs: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    progress: bool = False,
    threads: int = GENERATION_THREADS,
) -> dict[str, list[float]]:
    """Seconds of each call in each of `rounds` rounds: the calls alternate, in a new order each round.

    Every round runs every call once, so that a ratio of two calls' times in one round is
    measured under the same load; the order rotates by one each round, so that no call always
    runs first (after a pause) or last. The calls run without autograd (`torch.inference_mode`)
    on `threads` torch threads, as `generate` runs one sequence. `progress` shows a bar.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"runs must be a non-empty mapping of name to callable, got {runs!r}")
    for name, run in runs.items():
        if not callable(run):
            raise TypeError(f"runs[{name!r}] must be callable, got {type(run).__name__}")
    check_int("rounds", rounds, low=1)
    threads = check_int("threads", threads, low=1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode(), torch_threads(threads):
        for round_index in progress_bar(range(rounds), desc="timing", show=progress):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runs[name]()
                seconds[name].append(time.perf_counter() - start)
    return seconds
