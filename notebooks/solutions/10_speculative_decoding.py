"""Solution to the exercise of notebooks/10_speculative_decoding.ipynb: one accept/reject step."""

import torch


def my_accept_or_resample(
    p: torch.Tensor, q: torch.Tensor, drafted_token: int, generator: torch.Generator
) -> int:
    """Keep drafted_token with probability min(1, P(x)/Q(x)), else draw from the residual."""
    # 1. One uniform u in [0, 1), drawn with the generator given, so that a seed reproduces it.
    u = torch.rand((), generator=generator)
    # 2. Keep the proposal when u < P(x) / Q(x). The ratio can exceed 1 (the target likes x more
    #    than the draft does); u < 1 always, so that is the same as u < min(1, P(x) / Q(x)).
    #    Q(x) > 0 because the draft drew x from Q.
    if u < p[drafted_token] / q[drafted_token]:
        return drafted_token
    # 3. Rejected: keeping already gave every token min(P, Q); the residual max(0, P - Q) is the
    #    mass still missing. Clamp, do not take abs: where Q > P nothing is missing.
    residual = torch.clamp(p - q, min=0.0)
    # 4. Normalise it and draw one token (torch.multinomial would normalise by itself).
    residual = residual / residual.sum()
    return int(torch.multinomial(residual, 1, generator=generator))
