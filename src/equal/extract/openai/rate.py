"""Client-side pacing for the ``openai`` extractor: token buckets and the Retry-After pause.

:class:`Bucket` caps requests or tokens per minute (refilled continuously, bursts of one second's worth).
:class:`Pause` holds every request back until the time a 429/503's ``Retry-After`` named;
:func:`retry_after` reads that header.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class Bucket:
    """Token bucket: ``per_minute / 60`` units per second, bursts up to one second's worth.

    A request larger than the burst waits for a full bucket and leaves it in
    debt, so the long-run rate holds for any request size.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float) -> float:
        """Take ``amount``; returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= need - 1e-9:
                    self.level -= amount
                    return waited
                delay = (need - self.level) / self.rate
                waited += delay
                await asyncio.sleep(delay)

    def credit(self, amount: float) -> None:
        """Give back (positive) or charge (negative) ``amount`` after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class Pause:
    """No request is sent before ``not_before`` (a monotonic time), which Retry-After pushes back.

    ``waited`` sums the seconds requests were held back (counted as each sleep starts).
    """

    def __init__(self) -> None:
        self.not_before = 0.0
        self.waited = 0.0

    def extend(self, seconds: float) -> None:
        """Hold every request back for at least ``seconds`` from now."""
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    async def wait(self) -> None:
        """Sleep until the pause is over."""
        while True:
            delay = self.not_before - time.monotonic()
            if delay <= 0:
                return
            self.waited += delay
            await asyncio.sleep(delay)
