"""Counting what is under way per key (per merchant): the holds of sandbox chaos, the messages of
a slow endpoint. A key whose count falls to zero is forgotten, so the counter holds only the
merchants with something under way."""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def counted(counter: Counter[str], key: str) -> Iterator[None]:
    """`key` counted in `counter` while the block runs, however it ends."""
    counter[key] += 1
    try:
        yield
    finally:
        counter[key] -= 1
        if not counter[key]:
            del counter[key]
