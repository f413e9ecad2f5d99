"""Small stand-in language models shared by the tests."""

from __future__ import annotations

import torch

from lessonlib import tinytales
from lessonlib.model import GPT, GPTConfig


class StubModel:
    """A stand-in language model: the logits depend only on the last token (a fixed table)."""

    vocab_size = len(tinytales.ALPHABET)
    block_size = 64

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.table = 3 * torch.randn(self.vocab_size, self.vocab_size, generator=generator)

    def __call__(self, token_ids: torch.Tensor, kv_cache=None) -> torch.Tensor:
        return self.table[token_ids]

    def new_kv_cache(self, batch_size: int) -> None:
        return None


def lively_gpt(
    vocab_size: int, *, seed: int = 0, block_size: int = 32, n_head: int = 2, n_embd: int = 16
) -> GPT:
    """A small random 2-layer GPT whose weights are scaled up so its logits are far from uniform."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=n_head, n_embd=n_embd
    )
    model = GPT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)
    return model.eval()
