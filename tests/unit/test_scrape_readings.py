"""Scrape-time readings: a value read when Prometheus asks, NaN when it cannot be read."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from common import metrics


def test_a_reading_is_taken_at_each_scrape():
    registry = CollectorRegistry()
    gauge = Gauge("probe_in_use", "probe", registry=registry)
    values = iter([3, 5])
    gauge.set_function(metrics.reading(lambda: next(values)))
    assert b"probe_in_use 3.0" in generate_latest(registry)
    assert b"probe_in_use 5.0" in generate_latest(registry)


def test_a_reading_that_fails_is_nan_and_the_scrape_still_answers():
    def unreachable() -> float:
        raise ConnectionError("Redis at 127.0.0.1:6379 is unreachable")

    assert math.isnan(metrics.reading(unreachable)())
