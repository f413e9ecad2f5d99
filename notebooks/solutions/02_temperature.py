"""Solution to lesson 02's exercise: temperature scaling of the logits."""

import torch


def my_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return new logits divided by `temperature` (> 0); (V,) or (B, V). 0 raises ValueError."""
    # Temperature 0 is not a rescaling (logits / 0 gives inf and nan): greedy decoding is a
    # branch of its own in the sampler, so refuse it here with a clear message.
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 here, got {temperature}; temperature 0 means greedy "
            "decoding, which takes the argmax and never calls this function"
        )
    # Divide every logit, -inf included (it stays -inf). A new tensor: the input is untouched.
    # No softmax: the sampler applies it at the end, after top-k and top-p.
    return logits / temperature
