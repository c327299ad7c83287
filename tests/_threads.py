"""One intra-op thread for test folders of many tiny tensor ops. On a small shared CPU, two
OpenMP threads are up to 15x slower than one for such ops when another process holds a
core (threads wait for each other at every barrier). A folder opts in by importing
``one_thread`` into its conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
