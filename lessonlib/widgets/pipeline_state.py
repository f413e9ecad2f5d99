"""State of the pipeline viewer: one set of logits, the sampler settings, and draws from the result.

An immutable value: each transition returns a new state, and any change of the distribution
shown clears the draws (only `reset` re-seeds). Pure: no ipywidgets or matplotlib (the view is
`lessonlib.widgets.pipeline`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import torch
from torch import Tensor

from lessonlib.analysis.stage_order import StageProbs, draw_tokens, kept_mask, stage_probs
from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import CharTokenizer, Tokenizer
from lessonlib.validation import check_temperature
from lessonlib.widgets.state import (
    MAX_DRAWS,
    check_draws,
    check_one_of,
    check_seed,
    labelled_logits,
    letters,
    model_title,
    prompt_source_logits,
    same_state,
    seeded_rng_state,
    shortened,
    token_labels,
    top_k_setting,
    top_p_setting,
)

__all__ = [
    "COUNTEREXAMPLE_LOGITS",
    "GPT_SOURCE",
    "HAND_MADE_LOGITS",
    "MAX_DRAWS",
    "PipelineSource",
    "PipelineViewerState",
    "StartSettings",
    "built_in_sources",
    "initial_state",
    "make_source",
    "source_from_model",
]

HAND_MADE_LOGITS = (2.0, 1.6, 1.2, 0.9, 0.5, 0.0, -0.6, -1.5)  # eight tokens a..h, a small tail
COUNTEREXAMPLE_LOGITS = (3.0, 2.0, 1.0)  # p = 0.8 keeps two tokens at tau = 1, one at tau = 0.5
GPT_SOURCE = "GPT"  # name of the source built by `source_from_model`


@dataclass(frozen=True, eq=False)
class PipelineSource:
    """Named next-token logits with one label per token."""

    name: str
    logits: Tensor  # (V,) float64, finite or -inf, at least one finite
    labels: tuple[str, ...]
    description: str = ""  # one line for the view's note


def make_source(
    name: str, logits: Sequence[float] | Tensor, labels: Sequence[str], description: str = ""
) -> PipelineSource:
    """A validated `PipelineSource` (float64 logits, one label per token)."""
    values, labels = labelled_logits(logits, labels)
    return PipelineSource(name=name, logits=values, labels=labels, description=description)


def built_in_sources() -> dict[str, PipelineSource]:
    """The hand-made examples: eight tokens with a small tail, and the counterexample (3, 2, 1)."""
    return {
        "hand-made": make_source(
            "hand-made", HAND_MADE_LOGITS, letters(len(HAND_MADE_LOGITS)), "hand-made logits"
        ),
        "(3, 2, 1)": make_source(
            "(3, 2, 1)",
            COUNTEREXAMPLE_LOGITS,
            letters(len(COUNTEREXAMPLE_LOGITS)),
            "logits (3, 2, 1): try p = 0.8 at tau = 1 and at tau = 0.5",
        ),
    }


def source_from_model(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, *, name: str = GPT_SOURCE
) -> PipelineSource:
    """The model's next-token logits after `prompt`, labelled as `token_labels` labels them."""
    logits = prompt_source_logits(model, tokenizer, prompt)
    labels = token_labels(tokenizer, model.vocab_size)
    if isinstance(tokenizer, CharTokenizer):
        description = f"GPT's next character after {shortened(prompt, 30)!r}"
    else:
        description = f"next token of {model_title(model)} after {shortened(prompt, 30)!r}"
    return make_source(name, logits, labels, description)


class ShownSource:
    """What a state that shows one of its `sources` derives from it (pipeline and chain viewer)."""

    sources: Mapping[str, PipelineSource]  # fields of the dataclass that uses this mixin
    source: str

    @property
    def distribution(self) -> PipelineSource:
        """The source shown."""
        return self.sources[self.source]

    @property
    def logits(self) -> Tensor:
        """(V,) float64 logits of the source shown."""
        return self.distribution.logits

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per token, in vocabulary order."""
        return self.distribution.labels

    @property
    def vocab_size(self) -> int:
        """Number of tokens of the source shown."""
        return int(self.sources[self.source].logits.numel())


@dataclass(frozen=True)
class StartSettings:
    """The sampler settings a reset returns to."""

    source: str
    temperature: float
    top_k: int | None
    top_p: float | None


@dataclass(frozen=True, eq=False)
class PipelineViewerState(ShownSource):
    """Sources to switch between, the shown one, the sampler settings and the draws so far."""

    sources: Mapping[str, PipelineSource]
    source: str
    temperature: float = 1.0  # > 0
    top_k: int | None = None  # None is off; a k >= V is stored as None
    top_p: float | None = None  # None is off; p = 1 is stored as None
    counts: Tensor | None = None  # (V,) int64 draws per token since the distribution changed
    last_draw: int | None = None  # token id of the most recent draw, None before any
    seed: int = 0  # seeds the generator at construction and on reset
    rng_state: Tensor | None = None  # torch.Generator state; None means freshly seeded
    start: StartSettings | None = None  # what `reset` returns to; None means these settings

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources must name at least one source, got none")
        # A read-only copy: a state must not change when the caller's dict does.
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        check_one_of("source", self.source, self.sources)
        object.__setattr__(self, "temperature", check_temperature(self.temperature, greedy=False))
        object.__setattr__(self, "top_k", top_k_setting(self.top_k, self.vocab_size))
        object.__setattr__(self, "top_p", top_p_setting(self.top_p))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.counts is None:
            object.__setattr__(self, "counts", torch.zeros(self.vocab_size, dtype=torch.int64))
        elif tuple(self.counts.shape) != (self.vocab_size,):
            raise ValueError(
                f"counts must have shape ({self.vocab_size},), got {tuple(self.counts.shape)}"
            )
        if self.rng_state is None:
            object.__setattr__(self, "rng_state", seeded_rng_state(self.seed))
        if self.start is None:
            start = StartSettings(self.source, self.temperature, self.top_k, self.top_p)
            object.__setattr__(self, "start", start)

    # ----- transitions -------------------------------------------------------------------------

    def _changed(self, **fields: object) -> PipelineViewerState:
        """A copy with `fields` replaced and the draws cleared (the shown distribution changed)."""
        return dataclasses.replace(self, counts=None, last_draw=None, **fields)

    def set_temperature(self, temperature: float) -> PipelineViewerState:
        """The same state at `temperature` (> 0)."""
        temperature = check_temperature(temperature, greedy=False)
        return self if temperature == self.temperature else self._changed(temperature=temperature)

    def set_top_k(self, top_k: int | None) -> PipelineViewerState:
        """The same state with top-k `top_k` (None, or any k >= V, is off)."""
        top_k = top_k_setting(top_k, self.vocab_size)
        return self if top_k == self.top_k else self._changed(top_k=top_k)

    def set_top_p(self, top_p: float | None) -> PipelineViewerState:
        """The same state with top-p `top_p` (None, or 1, is off)."""
        top_p = top_p_setting(top_p)
        return self if top_p == self.top_p else self._changed(top_p=top_p)

    def set_source(self, name: str) -> PipelineViewerState:
        """The same settings on the source called `name` (a top-k >= its V turns off)."""
        check_one_of("name", name, self.sources)
        if name == self.source:
            return self
        # __post_init__ turns a top-k that the new source's V cannot exceed off.
        return self._changed(source=name)

    def with_source(self, source: PipelineSource) -> PipelineViewerState:
        """The state holding `source` too (replacing one of the same name), showing it."""
        if not isinstance(source, PipelineSource):
            raise TypeError(f"source must be a PipelineSource, got {type(source).__name__}")
        sources = {**self.sources, source.name: source}
        return self._changed(sources=sources, source=source.name)

    def draw(self, n: int = 1) -> PipelineViewerState:
        """The state with `n` more draws from the final distribution; the last one is remembered."""
        n = check_draws(n)
        if n == 0:
            return self
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        tokens = draw_tokens(
            self.logits,
            n=n,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            generator=generator,
        )
        return dataclasses.replace(
            self,
            counts=self.counts + torch.bincount(tokens, minlength=self.vocab_size),
            last_draw=int(tokens[-1]),
            rng_state=generator.get_state(),
        )

    def reset(self) -> PipelineViewerState:
        """The starting source and settings, no draws, and the generator seeded again."""
        start = self.start
        return dataclasses.replace(
            self,
            source=start.source,
            temperature=start.temperature,
            top_k=start.top_k,
            top_p=start.top_p,
            counts=None,
            last_draw=None,
            rng_state=None,
        )

    # ----- derived values ----------------------------------------------------------------------

    @cached_property
    def stages(self) -> StageProbs:
        """Probabilities after temperature, after top-k and after top-p, in vocabulary order."""
        return stage_probs(
            self.logits, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p
        )

    @cached_property
    def order(self) -> Tensor:
        """Token ids by descending logit (ties in vocabulary order): one rank for every stage."""
        return torch.sort(self.logits, descending=True, stable=True).indices

    def kept_counts(self) -> tuple[int, int, int]:
        """Tokens still possible after temperature, after top-k and after top-p."""
        settings = {"temperature": self.temperature, "top_k": self.top_k}
        return (
            # Temperature removes nothing: a token is possible iff its logit is finite.
            int(torch.isfinite(self.logits).sum()),
            int(kept_mask(self.logits, **settings).sum()),
            int(kept_mask(self.logits, **settings, top_p=self.top_p).sum()),
        )

    @property
    def num_draws(self) -> int:
        """Draws counted since the shown distribution last changed."""
        return int(self.counts.sum())

    @property
    def frequencies(self) -> Tensor:
        """(V,) float64 share of each token among the draws (all 0 before any draw)."""
        total = self.num_draws
        if total == 0:
            return torch.zeros(self.vocab_size, dtype=torch.float64)
        return self.counts.double() / total

    def stage_titles(self) -> tuple[str, str, str, str]:
        """One title per panel: what the stage did and how many tokens are left."""
        total = self.vocab_size
        after_temperature, after_k, after_p = self.kept_counts()
        top = float(self.stages.temperature.max())
        k_text = "off" if self.top_k is None else f"k = {self.top_k}"
        p_text = "off" if self.top_p is None else f"p = {self.top_p:.2f}"
        if self.num_draws == 0:
            draw_text = "no draws yet (press draw)"
        else:
            draw_text = f"{self.num_draws} draws, last {self.labels[self.last_draw]!r}"
        first = f"1 \u00b7 temperature \u03c4 = {self.temperature:.2f}: top token {top:.3f}"
        return (
            f"{first}, {after_temperature} of {total} possible",
            f"2 \u00b7 top-k {k_text}: {after_k} of {total} kept",
            f"3 \u00b7 top-p {p_text}: {after_p} of {total} kept (final distribution)",
            f"4 \u00b7 draw: {draw_text}",
        )

    def same_as(self, other: PipelineViewerState) -> bool:
        """True when both states hold the same values (tensors compared exactly)."""
        return same_state(self, other, by_identity=("sources",))


def initial_state(
    sources: Mapping[str, PipelineSource] | None = None,
    *,
    source: str = "hand-made",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> PipelineViewerState:
    """A starting state; `sources=None` means the built-in examples."""
    return PipelineViewerState(
        sources=built_in_sources() if sources is None else sources,
        source=source,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
