"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one torch thread (`pytestmark = pytest.mark.usefixtures(...)`), then restore.

    Property tests call tiny tensor operations thousands of times; on a busy machine handing even
    a (B, 40) cumsum to a worker thread costs up to a millisecond a call and dominates the run.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
