"""Backoff, route order and per-container cool-down of failing routes.

Cool-down state is module-level on purpose: it lives as long as the warm Lambda container, shared by
every request it serves. Only upstream faults count (5xx, 429, timeouts, dropped connections, bad
credentials, malformed answers), never errors the client caused.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from imagegw.upstream.config import Route


def backoff_delay(failures: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(failures-1)))."""
    ceiling = min(cap, base * (2 ** max(0, failures - 1)))
    return (rng or random).uniform(0.0, ceiling)


def order_routes(routes: Sequence[Route], rng: random.Random | None = None) -> list[Route]:
    """Failover order: by priority (default: position in the list), the list order within a priority;
    the first route is drawn by weight among the routes sharing the top priority."""
    ordered = sorted(routes, key=lambda r: r.priority)  # stable: list order within a priority
    if len(ordered) < 2:
        return ordered
    top = [r for r in ordered if r.priority == ordered[0].priority]
    if len(top) < 2:
        return ordered
    weights = [r.weight for r in top]
    if sum(weights) <= 0:
        return ordered
    first = (rng or random).choices(range(len(top)), weights=weights, k=1)[0]
    return [top[first], *(r for i, r in enumerate(ordered) if i != first)]


@dataclass
class _RouteHealth:
    consecutive_failures: int = 0
    last_failure: float = 0.0
    cooling_until: float = 0.0


class CooldownTracker:
    """Consecutive upstream failures per route label; `threshold` in a row cools a route for `seconds`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._health: dict[str, _RouteHealth] = {}
        self._lock = threading.Lock()

    def failure(self, label: str, *, threshold: int, seconds: float) -> bool:
        """Record an upstream fault; True when this one starts a cool-down."""
        now = self.clock()
        with self._lock:
            health = self._health.setdefault(label, _RouteHealth())
            health.consecutive_failures += 1
            health.last_failure = now
            if health.consecutive_failures >= threshold and health.cooling_until <= now and seconds > 0:
                health.cooling_until = now + seconds
                # On probation afterwards: the first failure after the cool-down starts another one.
                health.consecutive_failures = threshold - 1
                return True
            return False

    def success(self, label: str) -> None:
        with self._lock:
            self._health.pop(label, None)

    def cooling(self, label: str) -> bool:
        with self._lock:
            health = self._health.get(label)
            return health is not None and health.cooling_until > self.clock()

    def plan(self, routes: Sequence[Route]) -> tuple[list[Route], list[Route]]:
        """(routes to try, routes skipped). With every route cooling, the least recently failed one is
        still tried (the caller logs it) rather than failing without a single attempt."""
        ready = [r for r in routes if not self.cooling(r.label)]
        skipped = [r for r in routes if r not in ready]
        if ready or not routes:
            return ready, skipped
        with self._lock:
            last_failure = {label: h.last_failure for label, h in self._health.items()}
        oldest = min(routes, key=lambda r: last_failure.get(r.label, 0.0))
        return [oldest], [r for r in routes if r is not oldest]

    def reset(self) -> None:
        with self._lock:
            self._health.clear()


# The warm container's state, shared by every Router built in it (tests reset it or inject their own).
COOLDOWNS = CooldownTracker()
