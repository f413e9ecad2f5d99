"""Counted work: the floating-point operations of the course GPT, by formula, and torch's count.

What is counted, exactly as `torch.utils.flop_counter.FlopCounterMode` counts it: the matrix
multiplications only, at 2 FLOPs per multiply-add (an (m x k) by (k x n) product is 2*m*k*n).
Bias additions, LayerNorm, GELU, softmax, embeddings and sampling are not counted; they are a
small share of the work and torch's counter skips them too.

For one forward pass over `new_tokens` new positions after `past_tokens` cached ones (without a
cache, `past_tokens` is 0 and `new_tokens` is the whole context), with C = n_embd, L = n_layer,
V = vocab_size and T = past_tokens + new_tokens, per sequence of the batch:

    projections  L * 2 * new_tokens * C * 4C     (q, k, v: 3C outputs; the output projection: C)
    attention    L * 4 * new_tokens * T * C      (scores Q K^T and the weighted sum A V, all heads)
    mlp          L * 2 * new_tokens * C * 8C     (C -> 4C and 4C -> C)
    lm_head      2 * new_tokens * C * V          (logits at every new position, as the model does)

The attention term counts every entry of the (new_tokens x T) score matrix, masked ones too:
that is what a dense kernel computes (a kernel that skips masked blocks does about half of it
for a full causal pass). On CPU, torch's counter does not see attention at all, because
`scaled_dot_product_attention` runs a fused kernel it has no formula for; `measure_flops`
therefore switches attention to the math backend, which is made of counted matrix products.

`count_operations` counts something else: the tensor operations a call starts, whatever their
size. On a model this small a decoding step's time follows that count more than its FLOPs.
`time_side_by_side` puts the clock beside the counts: it times two or more calls in
alternation, round after round, so that their ratio is measured under the same conditions and
its spread over the rounds shows the noise.

This module is not about the generation loop itself (`lessonlib.generation`);
`generation_step_flops` mirrors that loop's cache rule step by step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lessonlib.model import GPTConfig
from lessonlib.progress import progress_bar

__all__ = [
    "ForwardFlops",
    "count_operations",
    "cumulative_generation_flops",
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


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def forward_flops(
    config: GPTConfig, *, past_tokens: int, new_tokens: int, batch_size: int = 1
) -> ForwardFlops:
    """FLOPs of one forward pass over `new_tokens` positions after `past_tokens` cached ones."""
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    _check_count("past_tokens", past_tokens, 0)
    _check_count("new_tokens", new_tokens, 1)
    _check_count("batch_size", batch_size, 1)
    if past_tokens + new_tokens > config.block_size:
        raise ValueError(
            f"past_tokens + new_tokens must be <= block_size={config.block_size}, "
            f"got {past_tokens} + {new_tokens}"
        )
    C, L = config.n_embd, config.n_layer
    rows = batch_size * new_tokens  # every matmul below has one row per new position
    context = past_tokens + new_tokens
    return ForwardFlops(
        projections=L * 2 * rows * C * 4 * C,
        # Per head: (new x hd) @ (hd x context), then (new x context) @ (context x hd); summed
        # over n_head heads of width hd = C / n_head, each product is 2 * new * context * C.
        attention=L * 2 * (2 * rows * context * C),
        mlp=L * 2 * rows * C * 8 * C,
        lm_head=2 * rows * C * config.vocab_size,
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
    _check_count("prompt_length", prompt_length, 1)
    _check_count("max_new_tokens", max_new_tokens, 0)
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


def cumulative_generation_flops(
    config: GPTConfig, *, prompt_length: int, max_new_tokens: int, use_cache: bool
) -> list[int]:
    """Total FLOPs after each generation step: entry i is the work of the first i + 1 tokens."""
    steps = generation_step_flops(
        config, prompt_length=prompt_length, max_new_tokens=max_new_tokens, use_cache=use_cache
    )
    totals, running = [], 0
    for step in steps:
        running += step.total
        totals.append(running)
    return totals


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
    runs: Mapping[str, Callable[[], object]], *, rounds: int, progress: bool = False
) -> dict[str, list[float]]:
    """Seconds of each call in each of `rounds` rounds: the calls alternate, in a new order each round.

    Every round runs every call once, so that a ratio of two calls' times in one round is
    measured under the same load; the order rotates by one each round, so that no call always
    runs first (after a pause) or last. `progress` shows a bar over the rounds (tqdm.auto).
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"runs must be a non-empty mapping of name to callable, got {runs!r}")
    for name, run in runs.items():
        if not callable(run):
            raise TypeError(f"runs[{name!r}] must be callable, got {type(run).__name__}")
    _check_count("rounds", rounds, 1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in progress_bar(range(rounds), desc="timing", show=progress):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds
