"""Solution of lesson 03's exercise: top-k filtering for one row or a batch of rows."""

import torch


def my_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Return new logits with -inf outside each row's k largest (ties kept); (V,) or (B, V)."""
    # Each row's k-th largest value, with the last dimension kept: shape (1,) or (B, 1), so
    # that the comparison below lines each row up with its own value.
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    # Strictly below the k-th value is the tail; values equal to it (ties) stay.
    return logits.masked_fill(logits < kth, float("-inf"))
