"""What every benchmark shares: the plan (sizes per mode), timing, statistics, results."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class NotMeasured(Exception):
    """A measured piece is missing or broken (not built yet, 404, 500): reported, then the run goes on."""


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions. QUICK keeps the whole run under two minutes on two shared cores."""

    quick: bool
    list_sizes: tuple[int, ...] = (100, 1_000, 10_000)
    b1_requests: int = 200
    b2_requests: int = 40
    b3_iterations: int = 60
    b4_small: int = 1_000
    b4_large: int = 1_000_000
    b4_requests: int = 100
    b6_seconds: float = 10.0
    b6_concurrency: int = 8
    warmup: int = 5
    b2_warmup: int = 2
    b8_requests: int = 10
    b8_warmup: int = 1

    @classmethod
    def for_mode(cls, *, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            b1_requests=20,
            b2_requests=5,
            b3_iterations=12,
            b4_large=100_000,
            b4_requests=20,
            b6_seconds=3.0,
            warmup=3,
            b2_warmup=1,
            b8_requests=3,
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a time that really happened)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, Any]:
    """p50/p95/mean in milliseconds of samples given in seconds."""
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, 3),
        "p95_ms": round(percentile(samples, 95) * 1000, 3),
        "mean_ms": round(sum(samples) / len(samples) * 1000, 3) if samples else math.nan,
    }


def time_calls(call: Callable[[], Any], *, n: int, warmup: int, before: Callable[[], Any] | None = None) -> list[float]:
    """Run `call` warmup + n times; return the n timed durations in seconds.

    `before` runs untimed ahead of each call (e.g. emptying the cache for a cold read).
    """
    samples: list[float] = []
    for i in range(warmup + n):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        elapsed = time.perf_counter() - started
        if i >= warmup:
            samples.append(elapsed)
    return samples


def ratio(measured: float, baseline: float) -> float | None:
    if not baseline or math.isnan(baseline) or math.isnan(measured):
        return None
    return round(measured / baseline, 3)


@dataclass
class Result:
    """One checked figure: what was measured, against what, and whether the goal holds.

    `holds` is None only when the benchmark could not measure (see `error`).
    """

    bench: str
    name: str
    goal: str
    measured: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    limit: float | None = None
    # What the limit applies to: the ratio, or one of the measured values (e.g. "rows_per_s").
    compare: str = "ratio"
    at_least: bool = False
    holds: bool | None = None
    note: str = ""
    error: str = ""

    def judge(self) -> Result:
        """holds = value <= limit (>= when at_least); a missing value never holds."""
        if self.limit is None:
            self.holds = True  # a figure to report, with no goal of its own
            return self
        value = self.ratio if self.compare == "ratio" else self.measured.get(self.compare)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.holds = False
        else:
            self.holds = value >= self.limit if self.at_least else value <= self.limit
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_measured(bench: str, name: str, goal: str, reason: str) -> Result:
    return Result(bench=bench, name=name, goal=goal, holds=False, error=reason)
