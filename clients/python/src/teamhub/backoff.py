"""Exponential backoff with full jitter.

Before attempt *n* (from 0) wait a time drawn uniformly from
``[0, min(cap, base * 2**n)]``, and start again from ``base`` once a connection has
worked. The jitter keeps the clients of a restarted node from all coming back in the
same instant (docs/clients.md, section 5). Defaults as the browser library: 250 ms
doubling to 30 s.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 30.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """The wait in seconds before attempt ``attempt`` (0-based), full jitter."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * 2 ** min(attempt, 60))
    return float(random() * ceiling)


class Backoff:
    """Counts attempts and hands out full-jitter delays; seedable for tests."""

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 30.0,
        *,
        seed: int | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = _random.Random(seed)

    def next_delay(self) -> float:
        """The delay before the next attempt, and count the attempt."""
        delay = backoff_delay(self.attempt, base=self.base, cap=self.cap, random=self._rng.random)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A connection worked: the next failure starts from ``base`` again."""
        self.attempt = 0
