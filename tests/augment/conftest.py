"""Augmentation tests run many tiny tensor ops: one thread (see tests/_threads.py)."""

from tests._threads import one_thread  # noqa: F401  (autouse fixture)
