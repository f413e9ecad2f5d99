"""The autoregressive loop: turn any course model's next-token logits into text.

Every course model (the census-names bigram, the GPT) answers one call, described by
`LanguageModel`; so one `generate` serves them all. The sampling rules themselves live
in `lessonlib.sampling`; this module only runs the loop, keeps the KV cache, and stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from lessonlib.penalties import apply_penalties, penalties_on
from lessonlib.sampling import DEFAULT_ORDER, check_sampler, sample_next
from lessonlib.threads import GENERATION_THREADS, decoding_threads, torch_threads
from lessonlib.tokenizer import Tokenizer
from lessonlib.validation import check_int

_FIRST_ROOM = 256  # the fewest positions (tokens or steps) a growing buffer grows to


@runtime_checkable
class LanguageModel(Protocol):
    """What every course model offers: next-token logits for a batch of contexts."""

    vocab_size: int  # number of distinct tokens
    block_size: int  # longest context the model reads

    def __call__(self, token_ids: Tensor, kv_cache=None) -> Tensor:
        """Logits (B, T, V) for the token after each position of token_ids (B, T)."""
        ...

    def new_kv_cache(self, batch_size: int):
        """An empty cache for batch_size sequences, or None if the model keeps none."""
        ...


@dataclass
class Generation:
    """What `generate` returns: one entry per prompt."""

    prompts: list[str]
    texts: list[str]  # generated continuations, without the prompt and without the stop token
    token_ids: list[list[int]]  # ids of the generated tokens, stop token included if reached
    finished: list[bool]  # True where the stop token was produced
    # (B, steps, V) raw logits of every step (zeros once a row has finished); record_logits=True
    logits: Tensor | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The only continuation, for a single prompt."""
        if len(self.texts) != 1:
            raise ValueError(f"text is for a single prompt; this generation has {len(self.texts)}")
        return self.texts[0]


def reserve_cache(kv_cache: object, length: int, *, block_size: int) -> None:
    """Give a cache room for `length` positions (at most block_size) at once, if it can grow."""
    # One allocation instead of doubling as the context grows: no copies of the filled part,
    # and never an old and a grown buffer alive together. Positions never written cost no
    # physical memory (the buffer is uninitialised). A model without a cache passes None.
    if hasattr(kv_cache, "reserve"):
        kv_cache.reserve(min(length, block_size))


def next_token_logits(
    model: LanguageModel, context: Tensor, kv_cache=None, *, new_tokens: int | None = None
) -> Tensor:
    """Logits (B, V) for the token after `context` (B, T), cropping to the block size.

    Without a cache the model re-reads the last block_size tokens. With a cache only the
    last `new_tokens` positions are fed; past the block size the cache cannot hold the
    window any more, so it is emptied and refilled from the last block_size tokens (the
    same computation as the uncached path, with no saving).
    """
    block = model.block_size
    if kv_cache is None:
        return model(context[:, -block:])[:, -1, :]
    fresh = context.shape[1] if new_tokens is None else new_tokens
    if kv_cache.length + fresh > block:
        kv_cache.reset()
        fresh = min(context.shape[1], block)
    return model(context[:, -fresh:], kv_cache=kv_cache)[:, -1, :]


@torch.inference_mode()
def prompt_logits(model: LanguageModel, prompt: str, *, tokenizer: Tokenizer) -> Tensor:
    """Logits (V,) of the token after `prompt` (the context starts with the boundary token)."""
    context = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(prompt)]])
    with torch_threads(GENERATION_THREADS):
        return next_token_logits(model, context)[0]


@torch.inference_mode()
def generate(
    model: LanguageModel,
    prompt: str | list[str],
    *,
    tokenizer: Tokenizer,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    stop_at_boundary: bool = True,
    record_logits: bool = False,
) -> Generation:
    """Continue each prompt by sampling up to max_new_tokens tokens (see lessonlib.sampling).

    Each step: the model's logits, the penalties on the tokens of the prompt and of the text so
    far (not the leading boundary token, which would penalise ending the story), then the
    sampler's chain in `order`, then a draw. With stop_at_boundary a row stops once it draws the
    boundary token; rows of a batch stop independently. The same model, prompts, settings and
    seeded generator give the same text. record_logits keeps the model's logits (before the
    penalties).
    """
    prompts = _check_prompts(prompt)
    check_int("max_new_tokens", max_new_tokens, low=0)
    sampler = check_sampler(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        typical_p=typical_p,
        eta_cutoff=eta_cutoff,
        order=order,
    )
    penalties = {
        "repetition": repetition_penalty,
        "frequency": frequency_penalty,
        "presence": presence_penalty,
    }
    penalize = penalties_on(**penalties)
    # Encode: each context is the boundary token (the "start of text" marker), then the prompt.
    encoded = [[tokenizer.boundary_id, *tokenizer.encode(p)] for p in prompts]
    batch = _Batch(model, encoded, max_new_tokens, use_cache=use_cache, record=record_logits)
    with torch_threads(decoding_threads(len(prompts))):  # one thread for a few rows, two for many
        for _ in range(max_new_tokens):
            # Next-token logits of the unfinished rows; through the KV cache the model reads
            # only the newest token instead of the whole context.
            logits = batch.next_token_logits()
            # Penalties need each row's history, so they come before the chain (as in all
            # three libraries); recorded logits stay the model's own.
            step_logits = (
                apply_penalties(logits, batch.history(), **penalties) if penalize else logits
            )
            # One draw per unfinished row: a finished row consumes no random numbers.
            drawn = sample_next(step_logits, **sampler, generator=generator)
            # Append each drawn token to its row (and the logits, when they are recorded).
            batch.append(drawn, logits)
            # A row that drew the boundary token has finished its text; stop once all have.
            if stop_at_boundary and batch.finish(drawn == tokenizer.boundary_id):
                break
    return batch.generation(prompts, tokenizer, stop_at_boundary)


def _check_prompts(prompt: object) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompt!r}")
    return prompts


class _Batch:
    """The rows of one `generate` call: their tokens, which still run, their cache and logits.

    What speed needs beyond the plain loop lives here: finished rows leave the model's batch
    (and the cache) once they are a quarter of it, the cache is reserved once, and the token and
    logits buffers grow with the tokens produced, never to max_new_tokens at once.
    """

    def __init__(
        self,
        model: LanguageModel,
        encoded: list[list[int]],
        max_new_tokens: int,
        *,
        use_cache: bool,
        record: bool,
    ) -> None:
        if len({len(ids) for ids in encoded}) != 1:
            raise ValueError(
                "prompts of a batch must have the same length in tokens, got lengths "
                f"{sorted({len(ids) - 1 for ids in encoded})}; generate them in separate calls"
            )
        device = next(iter(_parameters(model)), torch.empty(0)).device
        self.model, self.size = model, len(encoded)
        self.prompt_length = self.length = self.fresh = len(encoded[0])
        self.most = self.prompt_length + max_new_tokens  # longest a row can become
        # Each row's tokens so far; `append` makes room as they come. After a row's stop token
        # nothing is written, and _collect cuts the row there.
        self.tokens = torch.tensor(encoded, dtype=torch.long, device=device)
        # (rows, steps, V) on the CPU, zeros where a row had finished.
        self.recorded = torch.zeros(self.size, 0, model.vocab_size) if record else None
        self.kv_cache = model.new_kv_cache(self.size) if use_cache else None
        reserve_cache(self.kv_cache, self.most, block_size=model.block_size)
        self.rows = torch.arange(self.size, device=device)  # rows the model computes (the cache's)
        self.live = self.rows  # rows that draw this step
        self.done = torch.zeros(self.size, dtype=torch.bool, device=device)
        self.carrying_finished = False  # whether `rows` still holds rows that have stopped

    def next_token_logits(self) -> Tensor:
        """Logits (live rows, V) of the next token of each unfinished row; sets `live`."""
        start = max(0, self.length - self.model.block_size)
        # Plain slicing (a view) while every row is still in the batch; indexing copies.
        if len(self.rows) == self.size:
            window = self.tokens[:, start : self.length]
        else:
            window = self.tokens[self.rows, start : self.length]
        logits = next_token_logits(self.model, window, self.kv_cache, new_tokens=self.fresh)
        if not self.carrying_finished:
            self.live = self.rows
            return logits
        unfinished = ~self.done[self.rows]
        self.live = self.rows[unfinished]
        return logits[unfinished]

    def history(self) -> Tensor:
        """Token ids (live rows, T) of each live row's prompt and text, without the first token."""
        # Rows share a length (prompts of equal length, nothing written after a stop), and a
        # live row has not stopped; the first token is the boundary that starts every context.
        return self.tokens[self.live, 1 : self.length]

    def append(self, drawn: Tensor, logits: Tensor) -> None:
        """Write each live row's drawn token, and its logits when they are recorded."""
        self.tokens = _grown(self.tokens, self.length + 1, self.most)
        if len(self.live) == self.size:
            self.tokens[:, self.length] = drawn
        else:
            self.tokens[self.live, self.length] = drawn
        if self.recorded is not None:
            step = self.length - self.prompt_length
            self.recorded = _grown(self.recorded, step + 1, self.most - self.prompt_length)
            self.recorded[self.live, step] = logits.float().cpu()
        self.length, self.fresh = self.length + 1, 1

    def finish(self, stopped: Tensor) -> bool:
        """Mark the live rows where `stopped` holds as finished; True once every row is."""
        if not bool(stopped.any()):
            return False
        self.done[self.live] = stopped
        if bool(self.done.all()):
            return True
        # Stop computing finished rows once they are a quarter of the batch: copying the
        # cache's remaining rows once costs less than carrying the dead ones every step.
        finished_here = self.done[self.rows]
        self.carrying_finished = 4 * int(finished_here.sum()) < len(self.rows)
        if not self.carrying_finished:
            if self.kv_cache is not None:
                self.kv_cache.keep_rows((~finished_here).nonzero().flatten())
            self.rows = self.rows[~finished_here]
        return False

    def generation(
        self, prompts: list[str], tokenizer: Tokenizer, stop_at_boundary: bool
    ) -> Generation:
        """The texts, token ids, stops and recorded logits of every row."""
        new_ids = self.tokens[:, self.prompt_length : self.length]
        steps = self.length - self.prompt_length
        logits = None if self.recorded is None else self.recorded[:, :steps]
        return _collect(prompts, new_ids, tokenizer, stop_at_boundary, logits)


def _grown(buffer: Tensor, needed: int, most: int) -> Tensor:
    """`buffer` if its dim 1 holds `needed` entries, else a copy at least twice as long (<= most)."""
    # Doubling keeps the copies to a constant per step on average, where growing by a fixed
    # step (or a torch.cat per step) would copy the whole buffer ever more often.
    if needed <= buffer.shape[1]:
        return buffer
    length = min(max(needed, 2 * buffer.shape[1], _FIRST_ROOM), most)
    grown = buffer.new_zeros(buffer.shape[0], length, *buffer.shape[2:])
    grown[:, : buffer.shape[1]] = buffer
    return grown


def _collect(
    prompts: list[str],
    new_ids: Tensor,
    tokenizer: Tokenizer,
    stop_at_boundary: bool,
    logits: Tensor | None,
) -> Generation:
    texts, token_ids, finished = [], [], []
    for row in new_ids.tolist():
        if stop_at_boundary and tokenizer.boundary_id in row:
            row = row[: row.index(tokenizer.boundary_id) + 1]
            texts.append(tokenizer.decode(row[:-1]))
            finished.append(True)
        else:
            texts.append(tokenizer.decode(row))
            finished.append(False)
        token_ids.append(row)
    return Generation(prompts, texts, token_ids, finished, logits)


def _parameters(model: LanguageModel):
    parameters = getattr(model, "parameters", None)
    return parameters() if callable(parameters) else iter(())
