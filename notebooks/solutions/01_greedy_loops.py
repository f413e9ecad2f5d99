"""Solution to the exercise of notebooks/01_greedy_loops.ipynb: a greedy decoding loop."""

import torch


def my_greedy(model, prompt, *, tokenizer, max_new_tokens):
    """The greedy continuation of `prompt` (without the prompt), stopped at the boundary token."""
    ids = [tokenizer.boundary_id, *tokenizer.encode(prompt)]  # every story starts at the marker
    new_ids = []
    for _ in range(max_new_tokens):
        context = torch.tensor([ids + new_ids])[:, -model.block_size :]  # at most one block
        logits = model(context)[0, -1]  # (V,): the last position's scores for the next token
        next_id = int(logits.argmax())
        # The bug of the first attempt: the boundary token ends the story and is not text, so
        # stop before appending it (otherwise the loop writes it and starts a new story).
        if next_id == tokenizer.boundary_id:
            break
        new_ids.append(next_id)
    return tokenizer.decode(new_ids)
