"""State of the temperature explorer: a next-token distribution and what the learner did to it.

`TemperatureExplorerState` is an immutable value. Every transition (`set_temperature`,
`set_top_k`, `set_probability`, `sample`, `reset`) returns a new state and leaves the old one
untouched, so a view keeps one current state and replaces it on each event, and tests compare
states before and after. Derived values (the probabilities after temperature and top-k, the
argmax, the entropy, the empirical frequencies of the draws) are read-only properties.

Rules the view relies on:
- the shown distribution is `sampling_probs(logits, temperature=..., top_k=...)`, the course
  sampler's own pipeline, so temperature 0 is greedy (a one-hot at the argmax, no division);
- any transition that changes the shown distribution clears the sample counts, because draws
  from another distribution would no longer say anything about the bars; the generator keeps
  its position, and only `reset` re-seeds it;
- `set_probability(token, q)` edits one logit (see its docstring for the exact rule).

No ipywidgets or matplotlib here (see `lessonlib.widgets.temperature` for the view).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.distributions import entropy
from lessonlib.bigram import BIGRAM_SYMBOLS, BOUNDARY, load_bigram
from lessonlib.generation import LanguageModel, prompt_logits
from lessonlib.sampling import check_temperature, filter_top_k, sample_next, sampling_probs
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.state import same_state

__all__ = ["MAX_SAMPLES", "TemperatureExplorerState"]

MAX_SAMPLES = 1_000_000  # most draws one `sample` call accepts (memory stays a few MB)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _seeded_state(seed: int) -> Tensor:
    """The state tensor of a torch.Generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed).get_state()


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
    rng_state: Tensor  # torch.Generator state, advanced by each sample() call

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
        values = torch.as_tensor(logits, dtype=torch.float64).detach().clone()
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"logits must have shape (V,) with V >= 1, got {tuple(values.shape)}")
        if torch.isnan(values).any() or torch.isposinf(values).any():
            raise ValueError("logits must be finite or -inf (no NaN, no +inf)")
        if not torch.isfinite(values).any():
            raise ValueError("logits must have at least one finite value, got all -inf")
        labels = tuple(str(label) for label in labels)
        if len(labels) != values.numel():
            raise ValueError(
                f"labels must have one entry per logit ({values.numel()}), got {len(labels)}"
            )
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
        seed = _check_seed(seed)
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
            rng_state=_seeded_state(seed),
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
        tokenizer: CharTokenizer,
        prompt: str,
        *,
        seed: int = 0,
    ) -> TemperatureExplorerState:
        """A model's next-token distribution after `prompt`, with the TinyTales truth if any.

        `truth` is the grammar's exact next-character distribution when `prompt` is a possible
        story prefix (aligned to the tokenizer's vocabulary, the boundary meaning "the story
        ends here"), else None.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        logits = prompt_logits(model, prompt, tokenizer=tokenizer).double()
        return cls.from_logits(
            logits,
            tokenizer.labels(),
            truth=tinytales_truth(prompt, tokenizer.chars),
            title=f"TinyTales GPT, after {_shorten(prompt)!r}",
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
    def num_samples(self) -> int:
        """Number of draws counted since the distribution last changed."""
        return int(self.counts.sum())

    @property
    def frequencies(self) -> Tensor:
        """(V,) float64 empirical share of each token among the draws (all 0 before any draw)."""
        total = self.num_samples
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

    def index(self, token: int | str) -> int:
        """Index of `token`, given as an index or as a label."""
        if isinstance(token, str):
            if token not in self.labels:
                raise ValueError(f"token must be one of the labels {self.labels}, got {token!r}")
            return self.labels.index(token)
        if isinstance(token, bool) or not isinstance(token, numbers.Integral):
            raise TypeError(f"token must be an int index or a label str, got {token!r}")
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token must be an index in 0..{self.vocab_size - 1}, got {token!r}")
        return int(token)

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
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1
        ):
            raise ValueError(f"top_k must be an int >= 1 or None (off), got {top_k!r}")
        top_k = None if top_k is None or top_k >= self.vocab_size else int(top_k)
        if top_k == self.top_k:
            return self
        return self._changed(top_k=top_k)

    def set_probability(self, token: int | str, q: float) -> TemperatureExplorerState:
        """The state whose shown probability of `token` is `q`, the rest scaled proportionally.

        Only the token's own logit changes: softmax ignores a shared shift, so keeping every
        other logit fixed scales every other shown probability by the same factor (1 - q) /
        (1 - p_old). The new logit is solved at the current temperature over the tokens top-k
        keeps, so the bar lands exactly at q unless the edit moves the token across the top-k
        cut (then top-k, applied to the edited logits, decides again what is shown).
        Edge cases: q = 0 sets the logit to -inf; q = 1 keeps the token and sets every other
        logit to -inf (their share is 0, and scaling 0 gives 0 again, so dragging the token
        back down gives back nothing; drag another bar up or reset). At temperature 0 the edit
        is solved at temperature 1 and the shown distribution stays one-hot. A token that is
        the only possible one keeps probability 1 whatever q is.
        """
        i = self.index(token)
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not (0 <= q <= 1):
            raise ValueError(f"q must be a probability in [0, 1], got {q!r}")
        q = float(q)
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
            logits[others] = -math.inf
            if not math.isfinite(logits[i]):
                logits[i] = 0.0
        elif q == 0:
            logits[i] = -math.inf
        else:
            scale = self.temperature if self.temperature > 0 else 1.0
            # P(i) = e^(l_i/T) / (e^(l_i/T) + Z) = q  <=>  l_i = T * (log Z + log q - log(1 - q)).
            log_rest = torch.logsumexp(self.logits[rest] / scale, dim=0)
            logits[i] = scale * (float(log_rest) + math.log(q) - math.log1p(-q))
        return self._changed(logits=logits)

    def sample(self, n: int) -> TemperatureExplorerState:
        """The state with `n` more draws from the shown distribution added to the counts."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= MAX_SAMPLES:
            raise ValueError(f"n must be an int in 0..{MAX_SAMPLES}, got {n!r}")
        if n == 0:
            return self
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        draws = sample_next(
            self.logits.expand(int(n), -1),
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
            rng_state=_seeded_state(self.seed),
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


def _shorten(text: str, keep: int = 24) -> str:
    """`text`, or '...' and its last `keep` characters when it is long."""
    return text if len(text) <= keep + 3 else "..." + text[-keep:]
