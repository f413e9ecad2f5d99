"""What every widget state shares: comparing two frozen states that hold tensors."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor


def same_state(first: Any, second: Any, *, by_identity: tuple[str, ...] = ()) -> bool:
    """True when two states of one dataclass hold the same values (tensors compared exactly).

    Fields named in `by_identity` are mappings whose values are compared with `is`, for
    values (such as loaded distributions) that are shared rather than copied.
    """
    if type(first) is not type(second) or not dataclasses.is_dataclass(first):
        return False
    for field in dataclasses.fields(first):
        mine, theirs = getattr(first, field.name), getattr(second, field.name)
        if isinstance(mine, Tensor) or isinstance(theirs, Tensor):
            same = (
                isinstance(mine, Tensor)
                and isinstance(theirs, Tensor)
                and mine.shape == theirs.shape
                and torch.equal(mine, theirs)
            )
        elif field.name in by_identity:
            same = set(mine) == set(theirs) and all(mine[key] is theirs[key] for key in mine)
        else:
            same = mine == theirs
        if not same:
            return False
    return True
