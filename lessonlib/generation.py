"""The autoregressive loop: turn any course model's next-token logits into text.

Every course model (the census-names bigram, the GPT) answers one call, described by
`LanguageModel`; so one `generate` serves them all. The sampling rules themselves live
in `lessonlib.sampling`; this module only runs the loop, keeps the KV cache, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from lessonlib.sampling import sample_next
from lessonlib.threads import GENERATION_THREADS, decoding_threads, torch_threads
from lessonlib.tokenizer import CharTokenizer


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
def prompt_logits(model: LanguageModel, prompt: str, *, tokenizer: CharTokenizer) -> Tensor:
    """Logits (V,) of the token after `prompt` (the context starts with the boundary token)."""
    context = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(prompt)]])
    with torch_threads(GENERATION_THREADS):
        return next_token_logits(model, context)[0]


@torch.inference_mode()
def generate(
    model: LanguageModel,
    prompt: str | list[str],
    *,
    tokenizer: CharTokenizer,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    stop_at_boundary: bool = True,
    record_logits: bool = False,
) -> Generation:
    """Continue each prompt by sampling up to max_new_tokens tokens (see lessonlib.sampling).

    The context starts with the tokenizer's boundary token (the "start of text" marker), then
    the prompt. With stop_at_boundary, a row stops once it produces the boundary token; rows
    of a batch stop independently. Same model, prompt, settings and seeded generator give
    byte-identical text.
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompt!r}")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    encoded = [[tokenizer.boundary_id, *tokenizer.encode(p)] for p in prompts]
    if len({len(ids) for ids in encoded}) != 1:
        raise ValueError(
            "prompts of a batch must have the same length in tokens, got lengths "
            f"{sorted({len(ids) - 1 for ids in encoded})}; generate them in separate calls"
        )
    device = next(iter(_parameters(model)), torch.empty(0)).device
    batch, prompt_length = len(encoded), len(encoded[0])
    # One pre-allocated buffer per row: the prompt, then the new tokens. Rows that stop early
    # keep the boundary token in their unused tail, which _collect cuts off.
    tokens = torch.full(
        (batch, prompt_length + max_new_tokens),
        tokenizer.boundary_id,
        dtype=torch.long,
        device=device,
    )
    tokens[:, :prompt_length] = torch.tensor(encoded, dtype=torch.long, device=device)
    recorded = torch.zeros(batch, max_new_tokens, model.vocab_size) if record_logits else None
    kv_cache = model.new_kv_cache(batch) if use_cache else None
    reserve_cache(kv_cache, prompt_length + max_new_tokens, block_size=model.block_size)
    rows = torch.arange(batch, device=device)  # the rows the model computes (the cache's rows)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    length, fresh, steps = prompt_length, prompt_length, 0
    carrying_finished = False  # whether `rows` still holds rows that have stopped

    with torch_threads(decoding_threads(batch)):
        while steps < max_new_tokens:
            start = max(0, length - model.block_size)
            # Plain slicing (a view) while every row is still in the batch; indexing copies.
            window = tokens[:, start:length] if len(rows) == batch else tokens[rows, start:length]
            logits = next_token_logits(model, window, kv_cache, new_tokens=fresh)
            # Only unfinished rows draw, so a row's random numbers do not depend on when the
            # finished rows around it are dropped from the batch.
            live_rows = rows[~done[rows]] if carrying_finished else rows
            if carrying_finished:
                logits = logits[~done[rows]]
            if recorded is not None:
                recorded[live_rows, steps] = logits.float().cpu()
            drawn = sample_next(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
            )
            if len(live_rows) == batch:
                tokens[:, length] = drawn
            else:
                tokens[live_rows, length] = drawn
            length, fresh, steps = length + 1, 1, steps + 1
            if not stop_at_boundary:
                continue
            stopped = drawn == tokenizer.boundary_id
            if not bool(stopped.any()):
                continue
            done[live_rows] = stopped
            if bool(done.all()):
                break
            # Stop computing finished rows once they are a quarter of the batch: copying the
            # cache's remaining rows once costs less than carrying the dead ones every step.
            finished_here = done[rows]
            carrying_finished = True
            if 4 * int(finished_here.sum()) >= len(rows):
                if kv_cache is not None:
                    kv_cache.keep_rows((~finished_here).nonzero().flatten())
                rows = rows[~finished_here]
                carrying_finished = False

    new_ids = tokens[:, prompt_length:length]
    logits = None if recorded is None else recorded[:, :steps]
    return _collect(prompts, new_ids, tokenizer, stop_at_boundary, logits)


def _collect(
    prompts: list[str],
    new_ids: Tensor,
    tokenizer: CharTokenizer,
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
