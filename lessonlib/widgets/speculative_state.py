"""State of the speculative decoding stepper: one round per step, the draft proposing k tokens
and the target keeping a prefix of them, then adding one of its own.

Each step runs `lessonlib.speculative.speculative_generate` on the text so far with room for
one round (k + 1 tokens) and keeps that first round's record; when the round stops short, the
call goes on with further rounds, which are discarded (they only advance the generator). The
state holds the generator's state, so the text is the same for the same seed, and each round
is a fresh round of the library's loop: the text is distributed as the target's own samples.
Changing k, the temperature or the prompt starts again from the prompt, reseeded, so that the
counts describe one setting. Pure: no ipywidgets (the view is `lessonlib.widgets.speculative`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from lessonlib.generation import LanguageModel, prompt_logits
from lessonlib.sampling import sampling_probs
from lessonlib.speculative import (
    SpeculativeGeneration,
    SpeculativeRound,
    expected_tokens_per_pass,
    residual_probs,
    speculative_generate,
)
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_temperature
from lessonlib.widgets.state import check_seed, same_state, seeded_rng_state, visible

__all__ = [
    "DEFAULT_K",
    "DEFAULT_PROMPT",
    "MAX_K",
    "Proposal",
    "SpeculativeStepperState",
    "StepperRound",
    "initial_state",
]

DEFAULT_PROMPT = "Once upon a time, there was a "
DEFAULT_K = 4  # proposals per round
MAX_K = 6  # the slider's end: past it, a TinyTales draft rarely gets a whole round kept


@dataclass(frozen=True)
class Proposal:
    """One proposal of a round as the stepper shows it."""

    token: int
    label: str  # the character, drawn visible (a space as ␣)
    draft_prob: float  # Q(x): the draft's sampling probability of it
    target_prob: float  # P(x): the target's sampling probability of it at the same position
    keep_prob: float  # min(1, P(x) / Q(x))
    verdict: str  # "kept", "rejected", or "not judged" (after a rejection)


@dataclass(frozen=True)
class StepperRound:
    """One round: the library's record, where it starts in the text, the target token's odds."""

    record: SpeculativeRound
    start: int  # characters generated before this round
    # The probability the target's token had where it was drawn from: the residual after a
    # rejection, P after the last proposal for the bonus token; None when there is no token.
    token_prob: float | None


@dataclass(frozen=True, eq=False)
class SpeculativeStepperState:
    """The two models, the settings, the rounds run so far, and the generator's state.

    Transitions return a new state and never modify this one; everything else is derived.
    """

    target: LanguageModel
    draft: LanguageModel
    tokenizer: CharTokenizer
    prompt: str = DEFAULT_PROMPT
    k: int = DEFAULT_K  # proposals per round, 1 .. MAX_K
    temperature: float = 1.0  # both models' sampler temperature, >= 0 (0 is greedy)
    seed: int = 0  # seeds the generator at the start and after every restart
    rounds: tuple[StepperRound, ...] = ()
    rng_state: Tensor | None = None  # torch.Generator state; None means freshly seeded

    def __post_init__(self) -> None:
        for name in ("target", "draft"):
            if not isinstance(getattr(self, name), LanguageModel):
                raise TypeError(
                    f"{name} must be a course language model, got "
                    f"{type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.tokenizer, CharTokenizer):
            raise TypeError(
                f"tokenizer must be a CharTokenizer, got {type(self.tokenizer).__name__}"
            )
        if not self.target.vocab_size == self.draft.vocab_size == self.tokenizer.vocab_size:
            raise ValueError(
                "target, draft and tokenizer must share one vocabulary, got vocab_size "
                f"{self.target.vocab_size}, {self.draft.vocab_size} and "
                f"{self.tokenizer.vocab_size}"
            )
        _check_prompt(self.prompt, self.tokenizer, self.target.block_size)
        object.__setattr__(self, "k", check_int("k", self.k, low=1, high=MAX_K))
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "rounds", tuple(self.rounds))
        if self.rng_state is None:
            object.__setattr__(self, "rng_state", seeded_rng_state(self.seed))

    # ----- transitions -------------------------------------------------------------------------

    def step(self) -> SpeculativeStepperState:
        """The state after one more round (this state itself once the text cannot grow)."""
        if not self.can_step:
            return self
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        result = speculative_generate(
            self.target,
            self.draft,
            self.context,
            tokenizer=self.tokenizer,
            k=self.k,
            max_new_tokens=min(self.k + 1, self.room),
            temperature=self.temperature,
            generator=generator,
        )
        record = result.rounds[0]
        shown = StepperRound(
            record=record, start=len(self.text), token_prob=self._token_prob(record)
        )
        return dataclasses.replace(
            self, rounds=(*self.rounds, shown), rng_state=generator.get_state()
        )

    def reset(self) -> SpeculativeStepperState:
        """Back to the prompt with the generator seeded again (the same rounds follow)."""
        return dataclasses.replace(self, rounds=(), rng_state=None)

    def set_k(self, k: int) -> SpeculativeStepperState:
        """Start again from the prompt with k proposals per round (1 .. MAX_K)."""
        k = check_int("k", k, low=1, high=MAX_K)
        return self if k == self.k else dataclasses.replace(self.reset(), k=k)

    def set_temperature(self, temperature: float) -> SpeculativeStepperState:
        """Start again from the prompt at `temperature` (>= 0; 0 is greedy)."""
        temperature = check_temperature(temperature)
        if temperature == self.temperature:
            return self
        return dataclasses.replace(self.reset(), temperature=temperature)

    def set_prompt(self, prompt: str) -> SpeculativeStepperState:
        """Start again from `prompt` (characters of the tokenizer's alphabet, shorter than the
        target's context)."""
        _check_prompt(prompt, self.tokenizer, self.target.block_size)
        return self if prompt == self.prompt else dataclasses.replace(self.reset(), prompt=prompt)

    # ----- derived values ----------------------------------------------------------------------

    @cached_property
    def token_ids(self) -> list[int]:
        """Every token the rounds produced, in order (an end marker included)."""
        return [token for shown in self.rounds for token in shown.record.produced]

    @property
    def finished(self) -> bool:
        """True once the text has ended: a round produced the end marker."""
        return bool(self.token_ids) and self.token_ids[-1] == self.tokenizer.boundary_id

    @property
    def text(self) -> str:
        """The generated text (without the prompt and without an end marker)."""
        return self.tokenizer.decode(self.token_ids[:-1] if self.finished else self.token_ids)

    @property
    def context(self) -> str:
        """The prompt and the generated text: what the next round continues."""
        return self.prompt + self.text

    @property
    def room(self) -> int:
        """Tokens the target's context still holds."""
        return self.target.block_size - len(self.context)

    @property
    def can_step(self) -> bool:
        """True while another round can run: the text has not ended and the context has room."""
        return not self.finished and self.room > 0

    @cached_property
    def generation(self) -> SpeculativeGeneration:
        """The rounds so far as lessonlib's SpeculativeGeneration (its counts and rates)."""
        return SpeculativeGeneration(
            prompts=[self.prompt],
            texts=[self.text],
            token_ids=[self.token_ids],
            finished=[self.finished],
            rounds=[shown.record for shown in self.rounds],
        )

    @property
    def last_round(self) -> StepperRound | None:
        """The most recent round, None before the first step."""
        return self.rounds[-1] if self.rounds else None

    def proposals(self, shown: StepperRound) -> list[Proposal]:
        """One row per proposal of `shown`: the token, Q(x), P(x), min(1, P/Q) and the verdict."""
        record = shown.record
        rows = []
        for i, (token, q, p) in enumerate(
            zip(record.drafted, record.draft_probs, record.target_probs, strict=True)
        ):
            if i < record.accepted:
                verdict = "kept"
            elif i == record.accepted and record.rejected:
                verdict = "rejected"
            else:
                verdict = "not judged"
            rows.append(
                Proposal(
                    token=token,
                    label=self.label(token),
                    draft_prob=q,
                    target_prob=p,
                    keep_prob=min(1.0, p / q) if q > 0 else 1.0,
                    verdict=verdict,
                )
            )
        return rows

    def label(self, token: int) -> str:
        """A token as a visible character (the space as ␣, the end marker as ↵)."""
        return visible(self.tokenizer.decode([token]))

    def round_text(self, shown: StepperRound) -> str:
        """One sentence saying what happened in `shown`."""
        record = shown.record
        proposed = len(record.drafted)
        kept = f"kept {record.accepted} of {proposed}"
        if record.token is None:
            return f"the draft proposed {proposed}; the target {kept}, the last one ending the text"
        token = f"{self.label(record.token)!r}"
        if record.bonus:
            return (
                f"the draft proposed {proposed}; the target {kept} and added the bonus token "
                f"{token} from its own P after the last one (P = {shown.token_prob:.3f})"
            )
        return (
            f"the draft proposed {proposed}; the target {kept}, rejected proposal "
            f"{record.accepted + 1} and resampled {token} from the residual max(0, P - Q) "
            f"(probability {shown.token_prob:.3f} there)"
        )

    def readout(self) -> dict[str, str]:
        """The readouts as short strings: rounds and passes, tokens, acceptance, the formula."""
        generation = self.generation
        produced = len(self.token_ids)
        passes = generation.target_passes
        if not self.rounds:
            last = "no round yet: press step"
        else:
            last = f"round {len(self.rounds)}: " + self.round_text(self.rounds[-1])
        per_pass = "-" if not passes else f"{generation.tokens_per_target_pass:.2f}"
        rate = generation.acceptance_rate
        judged = sum(shown.record.examined for shown in self.rounds)
        kept = sum(shown.record.accepted for shown in self.rounds)
        if math.isnan(rate):
            acceptance = "acceptance rate: no proposal judged yet"
            formula = "formula (1 - a^(k+1)) / (1 - a): needs an acceptance rate a"
        else:
            acceptance = (
                f"acceptance rate a = {rate:.2f} ({kept} of {judged} judged proposals kept)"
            )
            formula = (
                f"formula (1 - a^(k+1)) / (1 - a) at a = {rate:.2f}, k = {self.k}: "
                f"{expected_tokens_per_pass(rate, self.k):.2f} tokens per target pass"
            )
        if self.finished:
            status = "the text has ended (the target produced the end marker): press reset"
        elif self.room <= 0:
            status = "the target's context is full: press reset"
        else:
            greedy = "greedy" if self.temperature == 0 else f"\u03c4 = {self.temperature:.2f}"
            status = f"k = {self.k}, {greedy}, seed {self.seed}"
        return {
            "round": last,
            "passes": (
                f"rounds: {len(self.rounds)} \u00b7 target passes: {passes} \u00b7 "
                f"draft passes: {generation.draft_passes}"
            ),
            "tokens": (
                f"tokens produced: {produced} \u00b7 per target pass: {per_pass} "
                "(plain decoding: 1.00)"
            ),
            "acceptance": acceptance,
            "formula": formula,
            "status": status,
        }

    def same_as(self, other: SpeculativeStepperState) -> bool:
        """True when both states hold the same values (models compared by identity)."""
        return same_state(self, other)

    # ----- helpers -----------------------------------------------------------------------------

    def _token_prob(self, record: SpeculativeRound) -> float | None:
        """The probability of the round's own token under the distribution it was drawn from."""
        if record.token is None:
            return None
        # The position after the committed text and the kept proposals, read afresh: a display
        # value, equal to what the round used up to float rounding.
        context = self.context + self.tokenizer.decode(record.drafted[: record.accepted])
        p = self._probs(self.target, context)
        if record.bonus:
            return float(p[record.token])
        q = self._probs(self.draft, context)
        return float(residual_probs(p, q)[record.token])

    @torch.inference_mode()
    def _probs(self, model: LanguageModel, context: str) -> Tensor:
        """`model`'s sampling distribution (V,) after `context`, at this state's temperature."""
        logits = prompt_logits(model, context, tokenizer=self.tokenizer)
        return sampling_probs(logits.float(), temperature=self.temperature)


def _check_prompt(prompt: object, tokenizer: CharTokenizer, block_size: int) -> None:
    """Raise unless `prompt` is a str of the alphabet that leaves the target room for a token."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    tokenizer.encode(prompt)  # a character outside the alphabet raises, naming it
    if len(prompt) >= block_size:
        raise ValueError(
            f"prompt must be shorter than the target's block_size={block_size} characters, so "
            f"that a token fits after it, got {len(prompt)}"
        )


def initial_state(
    target: LanguageModel,
    draft: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str = DEFAULT_PROMPT,
    k: int = DEFAULT_K,
    temperature: float = 1.0,
    seed: int = 0,
) -> SpeculativeStepperState:
    """A stepper state before the first round."""
    return SpeculativeStepperState(
        target=target,
        draft=draft,
        tokenizer=tokenizer,
        prompt=prompt,
        k=k,
        temperature=temperature,
        seed=seed,
    )
