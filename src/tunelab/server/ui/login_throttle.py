"""Failed logins slowed down per client address, so an API key cannot be guessed at speed.

Each address has a few free tries (`FREE_FAILURES`); every failure after them closes the
login to that address for a delay that doubles (`FIRST_DELAY_S`, ..., `MAX_DELAY_S`). While
closed, a try is refused with 429 and `Retry-After` before the key is even compared, so a
guesser learns nothing from it. A success forgets the address's failures. The record lives
in the server's memory, bounded (`MAX_ADDRESSES`, the longest-quiet address forgotten first).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5  # a user mistyping a key is not slowed down
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
MAX_ADDRESSES = 10_000


@dataclass
class _Failures:
    count: int = 0
    closed_until: float = 0.0


class LoginThrottle:
    """Per-address failed logins and the backoff they earn; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> int:
        """Whole seconds before `address` may try again; 0 when it may now."""
        with self._lock:
            failures = self._by_address.get(address)
            left = failures.closed_until - self._clock() if failures else 0.0
        return math.ceil(left) if left > 0 else 0

    def failed(self, address: str) -> None:
        """One more failure: past the free ones, the login closes for a doubled delay."""
        with self._lock:
            failures = self._by_address.pop(address, None) or _Failures()
            failures.count += 1
            beyond = failures.count - FREE_FAILURES
            if beyond > 0:
                delay = min(FIRST_DELAY_S * 2 ** (beyond - 1), MAX_DELAY_S)
                failures.closed_until = self._clock() + delay
            self._by_address[address] = failures  # most recent last
            while len(self._by_address) > MAX_ADDRESSES:
                self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)
