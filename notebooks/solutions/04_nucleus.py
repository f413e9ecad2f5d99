"""Solution to the exercise of notebooks/04_nucleus.ipynb: top-p (nucleus) filtering."""

import torch


def my_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Return new logits with -inf outside the nucleus of mass p; (V,) or (B, V)."""
    # 1. Sort each row from the largest logit down; sorted_idx[..., j] is the token at rank j.
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    # 2. Probabilities in sorted order (softmax divides by the sum: exp alone would not).
    probs = torch.softmax(sorted_logits, dim=-1)
    # 3. The mass of the tokens ranked above each one (0 for the top token).
    mass_before = probs.cumsum(dim=-1) - probs
    # 4. Drop a sorted token once the tokens above it already reach p. The token that crosses p
    #    has mass before it < p and stays; the top token (mass before 0) always stays.
    drop_sorted = mass_before >= p
    # 5. The bug of the common first attempt: drop_sorted is in sorted order, and
    #    sorted_idx[drop_sorted] is a list of token ids, but masked_fill needs a boolean mask
    #    in vocabulary order. Scatter sends the entry at rank j to position sorted_idx[..., j].
    drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
    # 6. A new tensor with -inf (not -1e9) where tokens are dropped; the input is untouched.
    return logits.masked_fill(drop, float("-inf"))
