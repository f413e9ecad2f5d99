"""State of the KV cache stepper: tokens arrive one per step, and the cache keeps their K and V.

Step s has read tokens 0 .. s-1: with the cache it computes the K and V of token s-1 only, without
it all s rows again. The work figures are exact matrix-multiply FLOP counts from
`lessonlib.analysis.flops`. Pure: no ipywidgets or matplotlib (the view is
`lessonlib.widgets.kv_cache`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.analysis.flops import forward_flops, generation_flops
from lessonlib.model import GPT, GPTConfig
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int
from lessonlib.widgets.state import visible

__all__ = [
    "DEFAULT_DIMS",
    "DEFAULT_TEXT",
    "KVCacheStepperState",
    "cache_rows",
    "from_model",
]

DEFAULT_TEXT = "Once upon a"  # with the boundary token in front: 12 tokens, 12 steps
DEFAULT_DIMS = 8  # dimensions of one head's key and value shown per row


@dataclass(frozen=True, eq=False)
class KVCacheStepperState:
    """The stepper's state: the tokens, their cached K and V rows, the step and the switch.

    Transitions return a new state and never modify this one; everything else is derived.
    """

    config: GPTConfig  # shape of the model, for the work counts
    labels: tuple[str, ...]  # one label per token, in the order the tokens arrive
    keys: Tensor  # (tokens, dims): the shown part of each token's key
    values: Tensor  # (tokens, dims): the shown part of each token's value
    step: int = 0  # tokens read so far: rows 0 .. step-1 are in the cache
    use_cache: bool = True
    description: str = ""  # one line saying where the numbers come from

    def __post_init__(self) -> None:
        if not isinstance(self.config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(self.config).__name__}")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        count = len(self.labels)
        if not 1 <= count <= self.config.block_size:
            raise ValueError(
                f"labels must name 1 .. block_size={self.config.block_size} tokens, got {count}"
            )
        for name in ("keys", "values"):
            rows = getattr(self, name)
            if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] != count:
                shape = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
                raise ValueError(
                    f"{name} must be a tensor of shape ({count}, dims), one row per label, "
                    f"got {shape}"
                )
        if self.keys.shape != self.values.shape:
            raise ValueError(
                f"keys and values must have the same shape, got {tuple(self.keys.shape)} "
                f"and {tuple(self.values.shape)}"
            )
        check_int("step", self.step, low=0, high=count)
        if not isinstance(self.use_cache, bool):
            raise TypeError(f"use_cache must be a bool, got {self.use_cache!r}")

    # Transitions.

    def set_step(self, step: int) -> KVCacheStepperState:
        """The same state at `step` (0 .. max_step)."""
        step = check_int("step", step, low=0, high=self.max_step)
        return dataclasses.replace(self, step=step)

    def forward(self) -> KVCacheStepperState:
        """One token more (stays at max_step once every token has arrived)."""
        return self.set_step(min(self.step + 1, self.max_step))

    def back(self) -> KVCacheStepperState:
        """One token fewer (stays at 0)."""
        return self.set_step(max(self.step - 1, 0))

    def set_cache(self, use_cache: bool) -> KVCacheStepperState:
        """The same step with the cache switched on (True) or off (False)."""
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be a bool, got {use_cache!r}")
        return dataclasses.replace(self, use_cache=use_cache)

    def toggle_cache(self) -> KVCacheStepperState:
        """The same step with the cache switch flipped."""
        return self.set_cache(not self.use_cache)

    def reset(self) -> KVCacheStepperState:
        """Back to step 0 with the cache on."""
        return dataclasses.replace(self, step=0, use_cache=True)

    # Derived values.

    @property
    def max_step(self) -> int:
        """The last step: every token has arrived."""
        return len(self.labels)

    @property
    def newest_row(self) -> int | None:
        """Row of the token that arrived at this step; None at step 0."""
        return self.step - 1 if self.step else None

    @property
    def computed_rows(self) -> range:
        """Rows whose K and V this step computes: the newest with the cache, all without."""
        if self.step == 0:
            return range(0)
        return range(self.step - 1, self.step) if self.use_cache else range(self.step)

    def step_work(self, use_cache: bool) -> int:
        """FLOPs of this step alone, with or without the cache (0 at step 0)."""
        if self.step == 0:
            return 0
        if use_cache:
            past, new = self.step - 1, 1
        else:
            past, new = 0, self.step
        return forward_flops(self.config, past_tokens=past, new_tokens=new).total

    def cumulative_work(self, use_cache: bool) -> int:
        """FLOPs of steps 1 .. step together, with or without the cache."""
        return generation_flops(
            self.config, prompt_length=1, max_new_tokens=self.step, use_cache=use_cache
        ).total

    @property
    def step_ratio(self) -> float | None:
        """This step's work without the cache over its work with it (exactly `step`); None at 0."""
        if self.step == 0:
            return None
        return self.step_work(False) / self.step_work(True)

    @property
    def cumulative_ratio(self) -> float | None:
        """Work of steps 1 .. step without the cache over the same with it; None at step 0."""
        if self.step == 0:
            return None
        return self.cumulative_work(False) / self.cumulative_work(True)

    def readout(self) -> dict[str, str]:
        """The readouts as short strings: step, rows computed, this step's work, totals, ratios."""
        computed = len(self.computed_rows)
        rows = "row" if computed == 1 else "rows"
        if self.step == 0:
            doing = "no token yet: nothing computed"
        elif self.use_cache:
            reused = self.step - 1
            doing = f"cache on: this step computes K and V for {computed} {rows}, reuses {reused}"
        else:
            doing = f"cache off: this step recomputes K and V for all {computed} {rows}"
        step_ratio, cumulative_ratio = self.step_ratio, self.cumulative_ratio
        return {
            "step": f"step {self.step} / {self.max_step}",
            "computed": doing,
            "step_work": (
                f"this step: {self.step_work(True):,} FLOPs with the cache, "
                f"{self.step_work(False):,} without"
            ),
            "with": f"cumulative work, cache on: {self.cumulative_work(True):,} FLOPs",
            "without": f"cumulative work, cache off: {self.cumulative_work(False):,} FLOPs",
            "step_ratio": (
                "per-step ratio: none yet"
                if step_ratio is None
                else f"per-step ratio (this step, off / on) {step_ratio:.2f}×"
            ),
            "ratio": (
                "cumulative ratio: none yet"
                if cumulative_ratio is None
                else f"cumulative ratio (steps 1 .. {self.step}, off / on) {cumulative_ratio:.2f}×"
            ),
        }


@torch.inference_mode()
def cache_rows(
    model: GPT, token_ids: Tensor, *, layer: int = 0, head: int = 0, dims: int = DEFAULT_DIMS
) -> tuple[Tensor, Tensor]:
    """The first `dims` dimensions of one head's cached keys and values for token_ids (T,)."""
    config = model.config
    if not isinstance(token_ids, Tensor) or token_ids.dim() != 1:
        raise ValueError(f"token_ids must be a 1-d tensor of ids, got {token_ids!r}")
    layer = check_int("layer", layer, low=0, high=config.n_layer - 1)
    head = check_int("head", head, low=0, high=config.n_head - 1)
    dims = check_int("dims", dims, low=1, high=config.head_dim)
    kv_cache = model.new_kv_cache(1)
    model(token_ids[None, :], kv_cache=kv_cache)
    length = token_ids.shape[0]
    keys = kv_cache.keys[layer, 0, head, :length, :dims].float().clone()
    values = kv_cache.values[layer, 0, head, :length, :dims].float().clone()
    return keys, values


def from_model(
    model: GPT,
    tokenizer: CharTokenizer,
    text: str = DEFAULT_TEXT,
    *,
    layer: int = 0,
    head: int = 0,
    dims: int = DEFAULT_DIMS,
) -> KVCacheStepperState:
    """A stepper state at step 0 over the boundary token and `text`, with the model's K and V."""
    ids = [tokenizer.boundary_id, *tokenizer.encode(text)]
    keys, values = cache_rows(model, torch.tensor(ids), layer=layer, head=head, dims=dims)
    labels = tuple(visible(char) for char in tokenizer.decode(ids))
    description = (
        f"layer {layer}, head {head}: the first {dims} of {model.config.head_dim} dimensions"
    )
    return KVCacheStepperState(
        config=model.config, labels=labels, keys=keys, values=values, description=description
    )
