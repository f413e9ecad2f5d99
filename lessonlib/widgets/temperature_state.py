"""State of the temperature explorer: a next-token distribution and what the learner did to it.

An immutable value: each transition returns a new state. The bars shown are `sampling_probs`
(the course sampler's own pipeline, so temperature 0 is greedy); any change of them clears the
draws, and only `reset` re-seeds. No ipywidgets or matplotlib (the view is
`lessonlib.widgets.temperature`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.distributions import entropy
from lessonlib.bigram import BIGRAM_SYMBOLS, BOUNDARY, load_bigram
from lessonlib.generation import LanguageModel
from lessonlib.sampling import filter_top_k, sample_next, sampling_probs
from lessonlib.tokenizer import CharTokenizer, Tokenizer
from lessonlib.validation import check_int, check_real, check_temperature
from lessonlib.widgets.state import (
    MAX_DRAWS,
    check_draws,
    check_seed,
    labelled_logits,
    model_title,
    prompt_source_logits,
    same_state,
    seeded_rng_state,
    shortened,
    token_labels,
    top_k_setting,
)

__all__ = ["MAX_DRAWS", "TemperatureExplorerState"]


@dataclass(frozen=True, eq=False)
class TemperatureExplorerState:
    """A labelled next-token distribution, the sampler settings, learner edits and draw counts.

    Build one with `from_logits`, `from_bigram` or `from_model`. Tensors held here are never
    modified in place; transitions return new states.
    """

    labels: tuple[str, ...]  # one printable label per token, in vocabulary order
    logits: Tensor  # (V,) float64 current logits: the source's, plus the learner's edits
    initial_logits: Tensor  # (V,) float64 the source's logits, restored by reset()
    truth: Tensor | None  # (V,) float64 true next-token probabilities, or None if unknown
    title: str  # what the distribution is, e.g. "census names bigram, after '·'"
    temperature: float  # >= 0; 0 is greedy
    top_k: int | None  # None is off (top-k >= V is stored as None)
    counts: Tensor  # (V,) int64 draws per token since the distribution last changed
    seed: int  # seeds the generator at construction and on reset()
    rng_state: Tensor  # torch.Generator state, advanced by each draw() call

    # ----- constructors -------------------------------------------------------------------

    @classmethod
    def from_logits(
        cls,
        logits: Tensor | Sequence[float],
        labels: Sequence[str],
        *,
        truth: Tensor | Sequence[float] | None = None,
        title: str = "",
        seed: int = 0,
    ) -> TemperatureExplorerState:
        """The state for `logits` (V,) over `labels` at temperature 1, top-k off, no draws."""
        values, labels = labelled_logits(logits, labels)
        truth_tensor = None
        if truth is not None:
            truth_tensor = torch.as_tensor(truth, dtype=torch.float64).detach().clone()
            if truth_tensor.shape != values.shape:
                raise ValueError(
                    f"truth must have shape {tuple(values.shape)} like logits, "
                    f"got {tuple(truth_tensor.shape)}"
                )
            if (truth_tensor < 0).any() or abs(float(truth_tensor.sum()) - 1) > 1e-6:
                raise ValueError("truth must be non-negative probabilities that sum to 1")
        seed = check_seed(seed)
        return cls(
            labels=labels,
            logits=values,
            initial_logits=values.clone(),
            truth=truth_tensor,
            title=title,
            temperature=1.0,
            top_k=None,
            counts=torch.zeros(values.numel(), dtype=torch.int64),
            seed=seed,
            rng_state=seeded_rng_state(seed),
        )

    @classmethod
    def from_bigram(
        cls, context_char: str = BOUNDARY, *, seed: int = 0
    ) -> TemperatureExplorerState:
        """The census-names bigram's next symbol after `context_char` (27 bars `·a..z`)."""
        model, _ = load_bigram()
        # The bigram's logits are its log-probabilities, so temperature 1 shows the model itself.
        log_probs = model.probs(context_char).log()
        return cls.from_logits(
            log_probs,
            list(BIGRAM_SYMBOLS),
            title=f"census names bigram, after {context_char!r}",
            seed=seed,
        )

    @classmethod
    def from_model(
        cls,
        model: LanguageModel,
        tokenizer: Tokenizer,
        prompt: str,
        *,
        seed: int = 0,
    ) -> TemperatureExplorerState:
        """A model's next-token distribution after `prompt`, with the TinyTales truth if any.

        The truth is per character, so only a character tokenizer's distribution has one.
        """
        logits = prompt_source_logits(model, tokenizer, prompt)
        if isinstance(tokenizer, CharTokenizer):
            labels, truth = tokenizer.labels(), tinytales_truth(prompt, tokenizer.chars)
        else:
            labels, truth = token_labels(tokenizer, model.vocab_size), None
        return cls.from_logits(
            logits,
            labels,
            truth=truth,
            title=f"{model_title(model)}, after {shortened(prompt, 27)!r}",
            seed=seed,
        )

    # ----- derived values -----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of tokens (bars)."""
        return len(self.labels)

    @functools.cached_property
    def probs(self) -> Tensor:
        """(V,) float64 probabilities after temperature -> top-k -> softmax (the shown bars)."""
        return sampling_probs(self.logits, temperature=self.temperature, top_k=self.top_k)

    @property
    def argmax(self) -> int:
        """Index of the most likely token (the first one on ties)."""
        return int(self.probs.argmax())

    @property
    def argmax_label(self) -> str:
        """Label of the most likely token."""
        return self.labels[self.argmax]

    @property
    def p_argmax(self) -> float:
        """Probability of the most likely token."""
        return float(self.probs[self.argmax])

    @property
    def entropy(self) -> float:
        """Entropy of the shown distribution, in nats (0 for one-hot, log V for uniform)."""
        return float(entropy(self.probs))

    @property
    def num_draws(self) -> int:
        """Draws counted since the distribution last changed."""
        return int(self.counts.sum())

    @property
    def frequencies(self) -> Tensor:
        """(V,) float64 empirical share of each token among the draws (all 0 before any draw)."""
        total = self.num_draws
        return (
            self.counts.double() / total
            if total
            else torch.zeros(self.vocab_size, dtype=torch.float64)
        )

    @property
    def kept(self) -> Tensor:
        """(V,) bool: tokens that top-k keeps (all tokens with a finite logit when it is off)."""
        return torch.isfinite(filter_top_k(self.logits, self.top_k))

    @property
    def edited(self) -> bool:
        """True once the learner has set a probability by hand (until reset)."""
        return not torch.equal(self.logits, self.initial_logits)

    def shown_tokens(self, max_bars: int) -> Tensor:
        """Ids of the tokens a view with room for `max_bars` bars draws, in drawing order.

        Every token in vocabulary order when V <= max_bars; otherwise the max_bars highest
        source logits, highest first (ties in vocabulary order).
        """
        max_bars = check_int("max_bars", max_bars, low=1)
        if self.vocab_size <= max_bars:
            return torch.arange(self.vocab_size)
        # The source's logits, not the current ones: temperature, top-k, edits and reset never
        # change which bars are drawn, so no bar jumps while the learner works on them.
        source = self.initial_logits
        # A stable sort of only the tokens at or above the max_bars-th logit: the same ids as a
        # stable sort of all V, without sorting 50,000 logits at every redraw.
        threshold = source.topk(max_bars).values[-1]
        candidates = torch.nonzero(source >= threshold).flatten()
        ranked = torch.sort(source[candidates], descending=True, stable=True).indices
        return candidates[ranked][:max_bars]

    def hidden(self, max_bars: int) -> Tensor:
        """(V,) bool: the tokens `shown_tokens(max_bars)` leaves out."""
        mask = torch.ones(self.vocab_size, dtype=torch.bool)
        mask[self.shown_tokens(max_bars)] = False
        return mask

    def hidden_mass(self, max_bars: int) -> float:
        """Probability the shown distribution gives the tokens `shown_tokens(max_bars)` omits."""
        return float(self.probs[self.hidden(max_bars)].sum())

    def index(self, token: int | str) -> int:
        """Index of `token`, given as an index or as a label."""
        if isinstance(token, str):
            if token not in self.labels:
                raise ValueError(f"token must be one of the labels {self.labels}, got {token!r}")
            return self.labels.index(token)
        try:
            return check_int("token", token, low=0, high=self.vocab_size - 1)
        except TypeError:
            raise TypeError(f"token must be an int index or a label str, got {token!r}") from None

    # ----- transitions --------------------------------------------------------------------

    def _changed(self, **fields: object) -> TemperatureExplorerState:
        """A copy with `fields` replaced and the counts cleared (the distribution changed)."""
        return dataclasses.replace(
            self, counts=torch.zeros(self.vocab_size, dtype=torch.int64), **fields
        )

    def set_temperature(self, temperature: float) -> TemperatureExplorerState:
        """The same distribution at `temperature` (>= 0; 0 is greedy)."""
        temperature = check_temperature(temperature)
        if temperature == self.temperature:
            return self
        return self._changed(temperature=temperature)

    def set_top_k(self, top_k: int | None) -> TemperatureExplorerState:
        """The same distribution with top-k `top_k` (None, or any k >= V, is off)."""
        top_k = top_k_setting(top_k, self.vocab_size)
        if top_k == self.top_k:
            return self
        return self._changed(top_k=top_k)

    def set_probability(self, token: int | str, q: float) -> TemperatureExplorerState:
        """The state whose shown probability of `token` is `q`, the others scaled alike."""
        i = self.index(token)
        q = check_real("q", q, low=0, high=1)
        # Only the token's own logit changes: softmax ignores a shared shift, so every other
        # shown probability is scaled by the same factor (1 - q) / (1 - p_old). The bar lands
        # at q unless the edit moves the token across the top-k cut.
        others = torch.arange(self.vocab_size) != i
        # Tokens whose mass the edit rescales: those top-k shows; if top-k shows no other
        # token (k = 1), all other possible tokens, so the edit is still well defined.
        rest = others & self.kept
        if not rest.any():
            rest = others & torch.isfinite(self.logits)
        if not rest.any():
            return self
        logits = self.logits.clone()
        if q == 1:
            # The others' share becomes 0, and scaling 0 gives 0: dragging this bar back down
            # gives them nothing back (drag another bar up, or reset).
            logits[others] = -math.inf
            if not math.isfinite(logits[i]):
                logits[i] = 0.0
        elif q == 0:
            logits[i] = -math.inf
        else:
            # Greedy shows a one-hot whatever the logits: solve the edit at temperature 1.
            scale = self.temperature if self.temperature > 0 else 1.0
            # P(i) = e^(l_i/T) / (e^(l_i/T) + Z) = q  <=>  l_i = T * (log Z + log q - log(1 - q)).
            log_rest = torch.logsumexp(self.logits[rest] / scale, dim=0)
            logits[i] = scale * (float(log_rest) + math.log(q) - math.log1p(-q))
        return self._changed(logits=logits)

    def draw(self, n: int) -> TemperatureExplorerState:
        """The state with `n` more draws from the shown distribution added to the counts."""
        n = check_draws(n)
        if n == 0:
            return self
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        draws = sample_next(
            self.logits.expand(n, -1),
            temperature=self.temperature,
            top_k=self.top_k,
            generator=generator,
        )
        counts = self.counts + torch.bincount(draws, minlength=self.vocab_size)
        return dataclasses.replace(self, counts=counts, rng_state=generator.get_state())

    def reset(self) -> TemperatureExplorerState:
        """The state as first built: source logits, temperature 1, top-k off, no draws, seeded."""
        return dataclasses.replace(
            self,
            logits=self.initial_logits,
            temperature=1.0,
            top_k=None,
            counts=torch.zeros(self.vocab_size, dtype=torch.int64),
            rng_state=seeded_rng_state(self.seed),
        )

    def same_as(self, other: TemperatureExplorerState) -> bool:
        """True when both states hold the same values (tensors compared exactly)."""
        return same_state(self, other)


def tinytales_truth(prompt: str, chars: str) -> list[float] | None:
    """TinyTales' exact next-character probabilities after `prompt`, aligned to `chars`, or None.

    None when `prompt` is not a possible story prefix (the grammar has no distribution there).
    """
    try:
        tinytales.next_char_distribution(prompt)
    except ValueError:
        return None
    # Outside the try: a `chars` that lacks a possible next character is a bug, not "no truth".
    return tinytales.next_char_vector(prompt, chars)
