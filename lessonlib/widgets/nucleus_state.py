"""State of the nucleus explorer: a distribution, a threshold p, and what top-p keeps of it.

The kept set is `lessonlib.analysis.distributions.nucleus_mask`, the rule of
`lessonlib.sampling.filter_top_p`. Pure: no ipywidgets or matplotlib (the view is
`lessonlib.widgets.nucleus`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import torch
from torch import Tensor

from lessonlib.analysis.distributions import (
    CONFIDENT,
    LONG_TAILED,
    QUIZ_NUCLEUS,
    as_probs,
    nucleus_mask,
)
from lessonlib.generation import LanguageModel
from lessonlib.tokenizer import CharTokenizer, Tokenizer
from lessonlib.validation import check_int, check_probability
from lessonlib.widgets.state import (
    check_one_of,
    letters,
    model_title,
    prompt_source_logits,
    token_labels,
)

__all__ = [
    "DEFAULT_P",
    "GPT_SOURCE",
    "Distribution",
    "Fold",
    "NucleusExplorerState",
    "built_in_distributions",
    "from_model",
    "initial_state",
    "make_distribution",
]

DEFAULT_P = 0.9  # a common setting (0.9 to 0.95 in practice), and the p of the lesson's quiz
GPT_SOURCE = "GPT"  # name of the distribution built by `from_model`


@dataclass(frozen=True, eq=False)
class Distribution:
    """A named next-token distribution: probabilities in vocabulary order, one label per token."""

    name: str
    probs: Tensor  # (V,) float64, non-negative, sums to 1
    labels: tuple[str, ...]  # one label per token, in the same order as probs
    description: str = ""  # one line shown under the plot


def make_distribution(
    name: str, values: Sequence[float] | Tensor, labels: Sequence[str], description: str = ""
) -> Distribution:
    """A validated `Distribution`; `values` are renormalised to sum to 1."""
    probs = as_probs(values)
    if probs.dim() != 1:
        raise ValueError(f"values must have shape (V,), got shape {tuple(probs.shape)}")
    labels = tuple(str(label) for label in labels)
    if len(labels) != probs.shape[0]:
        raise ValueError(
            f"labels must have one entry per value: got {len(labels)} labels "
            f"for {probs.shape[0]} values"
        )
    return Distribution(name=name, probs=probs, labels=labels, description=description)


def built_in_distributions() -> dict[str, Distribution]:
    """The example distributions of lesson 04: confident, long-tailed, and the quiz's."""
    examples = [
        ("confident", CONFIDENT, "one token holds most of the mass"),
        ("long-tailed", LONG_TAILED, "Zipf-like: many small bars, no clear winner"),
        ("quiz", QUIZ_NUCLEUS, "the distribution of the lesson's quiz"),
    ]
    # Toy vocabularies: tokens a, b, c, ... in rank order.
    return {
        name: make_distribution(name, values, letters(len(values)), description)
        for name, values, description in examples
    }


def from_model(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, *, name: str = GPT_SOURCE
) -> Distribution:
    """The model's full next-token distribution after `prompt` (all V tokens, labelled)."""
    # float64 so that the cumulative mass of many small probabilities is not blurred.
    probs = torch.softmax(prompt_source_logits(model, tokenizer, prompt), dim=-1)
    labels = token_labels(tokenizer, model.vocab_size)
    if isinstance(tokenizer, CharTokenizer):
        description = f"GPT's next character after {prompt!r}"
    else:
        description = f"next token of {model_title(model)} after {prompt!r}"
    return make_distribution(name, probs, labels, description)


@dataclass(frozen=True)
class Fold:
    """The sorted tokens beyond the first n: how many, how much mass, how many of them kept."""

    count: int
    mass: float
    kept: int


@dataclass(frozen=True, eq=False)
class NucleusExplorerState:
    """The explorer's state: the distributions to switch between, the shown one, and p.

    Transitions return a new state and never modify this one. Everything else is derived.
    """

    distributions: Mapping[str, Distribution]
    source: str  # name of the distribution shown
    p: float = DEFAULT_P
    start_source: str | None = None  # what `reset` returns to; None means `source`
    start_p: float = DEFAULT_P

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_probability("start_p", self.start_p)
        if not self.distributions:
            raise ValueError("distributions must name at least one distribution, got none")
        # A read-only copy: a state must not change when the caller's dict does.
        object.__setattr__(self, "distributions", MappingProxyType(dict(self.distributions)))
        check_one_of("source", self.source, self.distributions)
        if self.start_source is None:
            object.__setattr__(self, "start_source", self.source)
        check_one_of("start_source", self.start_source, self.distributions)

    # Transitions.

    def set_p(self, p: float) -> NucleusExplorerState:
        """The same state with threshold `p` in (0, 1]."""
        return dataclasses.replace(self, p=check_probability("p", p))

    def set_distribution(self, name: str) -> NucleusExplorerState:
        """The same state showing the distribution called `name`."""
        check_one_of("name", name, self.distributions)
        return dataclasses.replace(self, source=name)

    def with_distribution(self, distribution: Distribution) -> NucleusExplorerState:
        """The same state holding `distribution` too (replacing one of the same name)."""
        if not isinstance(distribution, Distribution):
            raise TypeError(
                f"distribution must be a Distribution, got {type(distribution).__name__}"
            )
        distributions = {**self.distributions, distribution.name: distribution}
        return dataclasses.replace(self, distributions=distributions)

    def reset(self) -> NucleusExplorerState:
        """The starting distribution and p (distributions added since are kept)."""
        return dataclasses.replace(self, source=self.start_source, p=self.start_p)

    # Derived values, computed once per state.

    @property
    def distribution(self) -> Distribution:
        """The distribution shown."""
        return self.distributions[self.source]

    @cached_property
    def order(self) -> Tensor:
        """Token ids sorted by probability, descending (ties keep vocabulary order)."""
        # Stable, as in filter_top_p, so that tied tokens are cut in the same order.
        return torch.sort(self.distribution.probs, descending=True, stable=True).indices

    @cached_property
    def sorted_probs(self) -> Tensor:
        """Probabilities in descending order."""
        return self.distribution.probs[self.order]

    @cached_property
    def sorted_labels(self) -> tuple[str, ...]:
        """Labels in descending order of probability."""
        return tuple(self.distribution.labels[i] for i in self.order.tolist())

    @cached_property
    def cumulative(self) -> Tensor:
        """Cumulative mass of the sorted probabilities: the mass up to and including each token."""
        return self.sorted_probs.cumsum(dim=0)

    @cached_property
    def kept(self) -> Tensor:
        """Boolean mask of the tokens top-p keeps, in vocabulary order."""
        return nucleus_mask(self.distribution.probs, self.p)

    @cached_property
    def sorted_kept(self) -> Tensor:
        """Boolean mask of the kept tokens in descending order: always a prefix."""
        return self.kept[self.order]

    @property
    def nucleus_size(self) -> int:
        """Number of tokens top-p keeps."""
        return int(self.kept.sum())

    @property
    def total(self) -> int:
        """Number of tokens in the distribution (kept or not)."""
        return int(self.distribution.probs.shape[0])

    @property
    def kept_mass(self) -> float:
        """Probability mass of the kept tokens (>= p, up to rounding)."""
        return float(self.distribution.probs[self.kept].sum())

    @cached_property
    def renormalised(self) -> Tensor:
        """The distribution top-p samples from, in descending order: kept mass scaled to 1."""
        kept_probs = torch.where(self.sorted_kept, self.sorted_probs, 0.0)
        return kept_probs / kept_probs.sum()

    def fold(self, shown: int) -> Fold:
        """Summary of the sorted tokens after the first `shown` (for a view that draws `shown`)."""
        shown = check_int("shown", shown, low=1)
        return Fold(
            count=max(self.total - shown, 0),
            mass=float(self.sorted_probs[shown:].sum()),
            kept=int(self.sorted_kept[shown:].sum()),
        )

    def readout(self) -> dict[str, str]:
        """The readouts as short strings: p, nucleus size, tokens kept / total, kept mass."""
        return {
            "p": f"p = {self.p:.2f}",
            "size": f"nucleus size {self.nucleus_size}",
            "kept": f"tokens kept {self.nucleus_size} / {self.total}",
            "mass": f"kept mass {self.kept_mass:.3f}",
        }


def initial_state(
    distributions: Mapping[str, Distribution] | None = None,
    *,
    source: str = "confident",
    p: float = DEFAULT_P,
) -> NucleusExplorerState:
    """A starting state; `distributions=None` means the built-in examples."""
    if distributions is None:
        distributions = built_in_distributions()
    p = check_probability("p", p)
    return NucleusExplorerState(
        distributions=distributions, source=source, p=p, start_source=source, start_p=p
    )
