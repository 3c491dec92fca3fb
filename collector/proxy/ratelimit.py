"""Requests and tokens per minute, per (token, endpoint), over a sliding one-minute window."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RateLimited", "RateLimiter"]

WINDOW = 60.0


class RateLimited(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.token_sum -= self.tokens.popleft()[1]


class RateLimiter:
    """Token counts are known only once a response is over, so a call is admitted while the
    tokens of the calls of the last minute are under the limit (the last one may overshoot)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def admit(self, who: str, endpoint: str, rpm: int, tpm: int) -> None:
        """Count one request, or raise :class:`RateLimited` with the seconds to wait."""
        if not rpm and not tpm:
            return
        now = self._clock()
        window = self._windows.setdefault((who, endpoint), _Window())
        window.expire(now)
        if rpm and len(window.requests) >= rpm:
            wait = window.requests[len(window.requests) - rpm] + WINDOW - now
            raise RateLimited(
                f"rate limit of {rpm} requests per minute reached for endpoint {endpoint!r}",
                wait,
            )
        if tpm and window.token_sum >= tpm:
            # Wait until enough of the oldest calls leave the window to get under the limit.
            over, wait = window.token_sum - tpm, WINDOW
            for at, count in window.tokens:
                over -= count
                if over < 0:
                    wait = at + WINDOW - now
                    break
            raise RateLimited(
                f"rate limit of {tpm} tokens per minute reached for endpoint {endpoint!r}",
                wait,
            )
        window.requests.append(now)

    def record_tokens(self, who: str, endpoint: str, tokens: int, tpm: int) -> None:
        if not tpm or tokens <= 0:
            return
        window = self._windows.setdefault((who, endpoint), _Window())
        window.tokens.append((self._clock(), tokens))
        window.token_sum += tokens
