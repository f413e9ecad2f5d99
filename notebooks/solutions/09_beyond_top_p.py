"""Solution to the exercise of notebooks/09_beyond_top_p.ipynb: min-p filtering."""

import torch


def my_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Return new logits with -inf where P < min_p times its row's top P; (V,) or (B, V)."""
    # 1. Probabilities of each row (softmax along the vocabulary; -inf logits get probability 0).
    probs = torch.softmax(logits, dim=-1)
    # 2. Each row's top probability, kept as a column (keepdim) so that it broadcasts against its
    #    own row in a batch (B, V).
    top = probs.amax(dim=-1, keepdim=True)
    # 3. The threshold scales with the top token: a confident row cuts hard, a flat row keeps
    #    almost everything. min_p is a fraction of the top probability, not a probability.
    threshold = min_p * top
    # 4. Drop the tokens strictly below it: a token exactly at the threshold stays, and so does
    #    the top token (min_p <= 1), with every token tied with it.
    drop = probs < threshold
    # 5. A new tensor with -inf (not -1e9) where tokens are dropped; the input is untouched.
    return logits.masked_fill(drop, float("-inf"))
