"""Small stand-in language models shared by the widget and analysis tests."""

from __future__ import annotations

import torch

from lessonlib import tinytales


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
