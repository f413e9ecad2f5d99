"""State of the chain viewer: one set of logits, the six stages' settings, their order, and the
last search for a counterexample between this order and a library's.

An immutable value: each transition returns a new state. A library preset that lacks a stage
leaves that stage out of the order; it is "not in this library" and off until a preset that has
it comes back, which restores its setting. Any change of the order, the settings or the library
compared with clears the last search. Pure: no ipywidgets or matplotlib (the view is
`lessonlib.widgets.chain`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import torch
from torch import Tensor

from lessonlib.analysis.chain_order import (
    GRID_STEPS,
    OrderCounterexample,
    active_stages,
    check_chain_settings,
    find_order_counterexample,
    format_counterexample,
    kept_after_each_stage,
    orders_always_agree,
)
from lessonlib.sampling import DEFAULT_ORDER, LIBRARY_ORDERS, STAGES, check_order, stage_by_stage
from lessonlib.widgets.pipeline_state import (
    GPT_SOURCE,
    PipelineSource,
    ShownSource,
    built_in_sources,
    make_source,
    source_from_model,
)
from lessonlib.widgets.state import (
    check_one_of,
    check_seed,
    letters,
    same_state,
    top_k_setting,
    top_p_setting,
)

__all__ = [
    "COUNTEREXAMPLE_SOURCE",
    "FINDER_MAX_VOCAB",
    "FINDER_TRIES",
    "GPT_SOURCE",
    "LONG_TAIL_LOGITS",
    "NOT_IN_LIBRARY",
    "ChainViewerState",
    "FinderResult",
    "PipelineSource",
    "chain_sources",
    "initial_state",
    "source_from_model",
]

# Fourteen tokens: one clear favourite and a long flat tail, where min-p, typical and eta matter.
LONG_TAIL_LOGITS = (4.0, 2.6, 1.8, 1.2, 0.8, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9, -1.1)
NOT_IN_LIBRARY = "not in this library"
COUNTEREXAMPLE_SOURCE = "counterexample"  # name of the source `show_counterexample` adds
FINDER_TRIES = 500  # random cases per (V, grid) in the viewer's search (well under a second)
FINDER_MAX_VOCAB = 8  # the most tokens the viewer's search tries
MAX_LISTED = 12  # token labels a readout lists before it says how many more
ARROW = " \u2192 "


def chain_sources() -> dict[str, PipelineSource]:
    """The pipeline viewer's hand-made examples, and a favourite with a long tail."""
    sources = built_in_sources()
    sources["long tail"] = make_source(
        "long tail",
        LONG_TAIL_LOGITS,
        letters(len(LONG_TAIL_LOGITS)),
        "one favourite and a long tail: try min_p 0.1 at \u03c4 = 2 in each library's order",
    )
    return sources


@dataclass(frozen=True)
class FinderResult:
    """What the last search for a counterexample found, and the text the view prints."""

    compared_with: str  # the library preset the current order was compared with
    text: str  # a few lines for the learner
    case: OrderCounterexample | None = None  # the smallest case found, if any


@dataclass(frozen=True, eq=False)
class ChainViewerState(ShownSource):
    """Sources to switch between, the shown one, the stages' settings and order, a last search."""

    sources: Mapping[str, PipelineSource]
    source: str
    settings: Mapping[str, float | int | None] = dataclasses.field(default_factory=dict)
    order: tuple[str, ...] = DEFAULT_ORDER  # the stages this chain has, in order
    compare_with: str = "llama.cpp"  # the preset the counterexample search compares with
    finder: FinderResult | None = None  # the last search, None before one (or after a change)
    seed: int = 0  # seeds the counterexample search

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources must name at least one source, got none")
        # Read-only copies: a state must not change when the caller's dicts do.
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        check_one_of("source", self.source, self.sources)
        object.__setattr__(self, "order", check_order(self.order))
        if "temperature" not in self.order:
            # Every library has a temperature stage, and a chain needs one stage at least.
            raise ValueError(f"order must hold the 'temperature' stage, got {list(self.order)}")
        stored = _stored_settings(self.settings, self.vocab_size)
        object.__setattr__(self, "settings", MappingProxyType(stored))
        check_one_of("compare_with", self.compare_with, LIBRARY_ORDERS)
        object.__setattr__(self, "seed", check_seed(self.seed))

    # ----- transitions -------------------------------------------------------------------------

    def _changed(self, **fields: object) -> ChainViewerState:
        """A copy with `fields` replaced and the last search cleared (it compared other things)."""
        return dataclasses.replace(self, finder=None, **fields)

    def move_up(self, stage: str) -> ChainViewerState:
        """The same state with `stage` one place earlier (unchanged if it is first)."""
        return self._moved(stage, -1)

    def move_down(self, stage: str) -> ChainViewerState:
        """The same state with `stage` one place later (unchanged if it is last)."""
        return self._moved(stage, +1)

    def _moved(self, stage: str, step: int) -> ChainViewerState:
        self._check_in_order(stage)
        order = list(self.order)
        here = order.index(stage)
        there = here + step
        if not 0 <= there < len(order):
            return self
        order[here], order[there] = order[there], order[here]
        return self._changed(order=tuple(order))

    def apply_preset(self, name: str) -> ChainViewerState:
        """The same settings in the order of the library `name` (see LIBRARY_ORDERS)."""
        check_one_of("name", name, LIBRARY_ORDERS)
        order = LIBRARY_ORDERS[name]
        return self if order == self.order else self._changed(order=order)

    def set_setting(self, stage: str, value: float | None) -> ChainViewerState:
        """The same state with `stage` set to `value` (None is off; the stage must be in order)."""
        self._check_in_order(stage)
        settings = _stored_settings({**self.settings, stage: value}, self.vocab_size)
        if settings[stage] == self.settings[stage]:
            return self
        return self._changed(settings=settings)

    def set_source(self, name: str) -> ChainViewerState:
        """The same settings on the source called `name` (a top_k >= its V turns off)."""
        check_one_of("name", name, self.sources)
        # The search does not read the source's logits: its result still holds.
        return self if name == self.source else dataclasses.replace(self, source=name)

    def with_source(self, source: PipelineSource) -> ChainViewerState:
        """The state holding `source` too (replacing one of the same name), showing it."""
        if not isinstance(source, PipelineSource):
            raise TypeError(f"source must be a PipelineSource, got {type(source).__name__}")
        sources = {**self.sources, source.name: source}
        return dataclasses.replace(self, sources=sources, source=source.name)

    def set_compare_with(self, name: str) -> ChainViewerState:
        """The state that compares the current order with the library `name`."""
        check_one_of("name", name, LIBRARY_ORDERS)
        return self if name == self.compare_with else self._changed(compare_with=name)

    def find_counterexample(
        self, *, tries: int = FINDER_TRIES, max_vocab: int = FINDER_MAX_VOCAB
    ) -> ChainViewerState:
        """The state holding the smallest case where this order and `compare_with`'s differ."""
        return dataclasses.replace(self, finder=self._search(tries, max_vocab))

    def _search(self, tries: int, max_vocab: int) -> FinderResult:
        other = self.compare_with
        library = LIBRARY_ORDERS[other]
        settings = self.effective_settings
        missing = [stage for stage in self.stages_on if stage not in library]
        if missing:
            return FinderResult(
                other,
                f"{other} has no {missing[0]} stage, and {missing[0]} is on here: switch it off "
                f"to compare with {other}.",
            )
        if orders_always_agree(self.order, library, settings=settings):
            return FinderResult(other, self._agreement_text(library))
        case = find_order_counterexample(
            self.order, library, settings=settings, seed=self.seed, tries=tries, max_vocab=max_vocab
        )
        if case is None:
            return FinderResult(
                other,
                f"No case found with up to V = {max_vocab} tokens and probabilities on grids of "
                f"{GRID_STEPS[0]} to {GRID_STEPS[-1]} ({tries} random cases each). That is not a "
                "proof: a threshold below the finest grid is out of the search's reach.",
            )
        # The names differ: an order equal to the library's would have agreed above.
        names = (self.order_name, f"{other}'s order")
        text = f"Smallest case found, {names[0]} vs {names[1]}:\n" + format_counterexample(
            case, names=names
        )
        return FinderResult(other, text, case)

    def _agreement_text(self, library: tuple[str, ...]) -> str:
        """Why no logits can make this order and `library` keep different tokens."""
        other = self.compare_with
        mine = self.stages_on
        theirs = active_stages(library, self.effective_settings)
        if not mine:
            return f"Every stage is off: this order and {other}'s both keep every token."
        if mine == theirs:
            return (
                f"With these settings both orders run {ARROW.join(mine)}: the stages they place "
                f"differently are off, so they always keep the same tokens as {other}."
            )
        return (
            f"This order and {other}'s differ only by swapping stages that commute (temperature "
            "with top_k, top_k with min_p): they always keep the same tokens."
        )

    def show_counterexample(self) -> ChainViewerState:
        """The state showing the last search's case as a source of its own."""
        if self.finder is None or self.finder.case is None:
            raise ValueError("there is no counterexample to show: find one first")
        case = self.finder.case
        description = f"the counterexample found against {self.finder.compared_with}"
        source = make_source(COUNTEREXAMPLE_SOURCE, case.logits, case.labels, description)
        return self.with_source(source)

    def _check_in_order(self, stage: str) -> None:
        check_one_of("stage", stage, STAGES)
        if stage not in self.order:
            raise ValueError(
                f"{stage} is {NOT_IN_LIBRARY} (order {list(self.order)}); pick a preset that "
                "has it, such as Hugging Face, to use it"
            )

    # ----- derived values ----------------------------------------------------------------------

    @property
    def preset(self) -> str | None:
        """The library whose order this is, or None for an order of one's own."""
        return next((name for name, order in LIBRARY_ORDERS.items() if order == self.order), None)

    @property
    def order_name(self) -> str:
        """ "Hugging Face's order" and the like, or "your order" for an order of one's own."""
        return f"{self.preset}'s order" if self.preset else "your order"

    @property
    def absent(self) -> tuple[str, ...]:
        """The stages not in the order, in STAGES order: off whatever their stored setting."""
        return tuple(stage for stage in STAGES if stage not in self.order)

    @property
    def effective_settings(self) -> dict[str, float | int | None]:
        """The settings the chain runs with: a stage not in the order is off."""
        off = check_chain_settings({})
        return {
            stage: self.settings[stage] if stage in self.order else off[stage] for stage in STAGES
        }

    @property
    def stages_on(self) -> tuple[str, ...]:
        """The stages of the order that are switched on, in order."""
        return active_stages(self.order, self.effective_settings)

    @cached_property
    def stage_probs(self) -> tuple[tuple[str, Tensor], ...]:
        """(stage, probabilities after it) for each stage of the order, in vocabulary order."""
        return tuple(stage_by_stage(self.logits, order=self.order, **self.effective_settings))

    @cached_property
    def kept(self) -> dict[str, Tensor]:
        """Per stage of the order: the (V,) mask of the tokens still possible after it."""
        masks = kept_after_each_stage(self.logits, order=self.order, **self.effective_settings)
        return dict(masks)

    @property
    def final_probs(self) -> Tensor:
        """(V,) float64 probabilities after the whole chain: what a draw samples from."""
        return self.stage_probs[-1][1]

    @cached_property
    def compare_probs(self) -> Tensor | None:
        """The final probabilities in `compare_with`'s order, or None when it lacks a stage on."""
        library = LIBRARY_ORDERS[self.compare_with]
        if any(stage not in library for stage in self.stages_on):
            return None
        return stage_by_stage(self.logits, order=library, **self.effective_settings)[-1][1]

    @cached_property
    def ranking(self) -> Tensor:
        """Token ids by descending logit (ties in vocabulary order): the order of bars and lists."""
        return torch.sort(self.logits, descending=True, stable=True).indices

    def kept_labels(self, mask: Tensor) -> tuple[str, ...]:
        """The labels of the tokens in `mask`, by descending logit."""
        return tuple(self.labels[i] for i in self.ranking.tolist() if bool(mask[i]))

    def _listed(self, mask: Tensor) -> str:
        labels = self.kept_labels(mask)
        shown = " ".join(labels[:MAX_LISTED])
        more = len(labels) - MAX_LISTED
        return shown + (f" (+{more} more)" if more > 0 else "")

    def stage_readout(self, stage: str) -> str:
        """One line for the stage's row: what is kept after it, or that it is not in the order."""
        check_one_of("stage", stage, STAGES)
        if stage not in self.order:
            return NOT_IN_LIBRARY
        mask = self.kept[stage]
        state = "" if stage in self.stages_on else "off, "
        return f"{state}kept {int(mask.sum())} of {self.vocab_size}: {self._listed(mask)}"

    def order_text(self) -> str:
        """The order as arrows, named when it is a library's."""
        name = f" ({self.preset})" if self.preset else " (an order of your own)"
        absent = f"; {NOT_IN_LIBRARY}: {', '.join(self.absent)}" if self.absent else ""
        return f"order: {ARROW.join(self.order)}{name}{absent}"

    def final_text(self) -> str:
        """The tokens the whole chain keeps, and how the compared library's order differs."""
        mask = self.final_probs > 0
        text = f"final: kept {int(mask.sum())} of {self.vocab_size}: {self._listed(mask)}"
        other = self.compare_probs
        if other is None:
            return text + f"; {self.compare_with} lacks a stage that is on here"
        theirs = other > 0
        if torch.equal(mask, theirs):
            return text + f"; {self.compare_with}'s order keeps the same tokens"
        return (
            text
            + f"; {self.compare_with}'s order keeps {int(theirs.sum())}: {self._listed(theirs)}"
        )

    def same_as(self, other: ChainViewerState) -> bool:
        """True when both states hold the same values (tensors compared exactly)."""
        return same_state(self, other, by_identity=("sources",))


def _stored_settings(settings: object, vocab_size: int) -> dict[str, float | int | None]:
    """All six settings as a state stores them: checked, and None wherever a stage is off."""
    checked = check_chain_settings(settings)
    checked["top_k"] = top_k_setting(checked["top_k"], vocab_size)
    checked["top_p"] = top_p_setting(checked["top_p"])
    # Typical sampling with mass 1 keeps every token, like top_p = 1: stored as off.
    checked["typical_p"] = None if checked["typical_p"] == 1 else checked["typical_p"]
    return checked


def initial_state(
    sources: Mapping[str, PipelineSource] | None = None,
    *,
    source: str = "hand-made",
    preset: str = "Hugging Face",
    compare_with: str = "llama.cpp",
    settings: Mapping[str, float | int | None] | None = None,
    seed: int = 0,
) -> ChainViewerState:
    """A starting state in the order of the library `preset`; `sources=None` means the built-ins."""
    check_one_of("preset", preset, LIBRARY_ORDERS)
    return ChainViewerState(
        sources=chain_sources() if sources is None else sources,
        source=source,
        settings={} if settings is None else settings,
        order=LIBRARY_ORDERS[preset],
        compare_with=compare_with,
        seed=seed,
    )
