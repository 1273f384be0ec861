"""``python -m bench --with-downstream``: reading the accounting consumer's lag from its
Prometheus text, the reconciler's verdicts from /ready and ``once --json``, and summarising a
scenario's samples (pure; no service runs here)."""

from __future__ import annotations

import math

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench.downstream import (
    BooksReading,
    CpuMarks,
    ReadyReading,
    books_lag,
    cpu_cost,
    format_summary,
    nearest_rank,
    read_books_metrics,
    read_ready,
    reconciler_health,
    reconciler_once_failures,
    slowest_bucket,
    summarise,
)

pytestmark = pytest.mark.unit

BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


def exposition(lags: dict[int, int], lag_seconds: list[float], booked: int) -> str:
    """The consumer's metrics as prometheus_client writes them (the same names and buckets)."""
    registry = CollectorRegistry()
    gauge = Gauge("accounting_lag_facts", "lag", ["partition"], registry=registry)
    for partition, lag in lags.items():
        gauge.labels(str(partition)).set(lag)
    histogram = Histogram("accounting_lag_seconds", "lag", buckets=BUCKETS, registry=registry)
    for value in lag_seconds:
        histogram.observe(value)
    Counter("accounting_facts_booked_total", "booked", registry=registry).inc(booked)
    # A metric whose name starts the same must not be taken for the lag.
    Gauge("accounting_lag_facts_extra", "other", registry=registry).set(999)
    return generate_latest(registry).decode()


def histogram(counts: dict[str, float], total: float) -> dict[str, float]:
    """Cumulative buckets as the parser returns them, with ``sum`` and ``count``."""
    return {**counts, "sum": total, "count": counts["+Inf"]}


def test_lag_in_facts_is_the_sum_over_the_partitions() -> None:
    text = exposition({0: 3, 1: 0, 7: 1_500_000}, [], 0)
    assert read_books_metrics(text, 1.0).lag_facts == 1_500_003


def test_no_partition_reporting_a_lag_is_no_reading_rather_than_zero() -> None:
    # Before its first fetch the consumer exports no lag: that must not pass for "caught up".
    text = exposition({}, [], 0)
    assert read_books_metrics(text, 1.0).lag_facts is None


def test_lag_seconds_histogram_and_booked_count_are_read() -> None:
    text = exposition({0: 0}, [0.003, 0.015, 0.015, 0.4], 42)
    reading = read_books_metrics(text, 2.5)
    assert reading.at == 2.5
    assert reading.booked == 42
    assert reading.lag_seconds["count"] == 4
    assert reading.lag_seconds["0.005"] == 1
    assert reading.lag_seconds["0.02"] == 3
    assert reading.lag_seconds["0.5"] == 4
    assert reading.lag_seconds["+Inf"] == 4
    assert reading.lag_seconds["sum"] == pytest.approx(0.433)


def test_nearest_rank_p99_is_an_observed_value() -> None:
    values = list(range(1, 201))  # 1..200
    assert nearest_rank(values, 0.99) == 198
    assert nearest_rank([5], 0.99) == 5


def test_slowest_bucket_is_the_bound_that_holds_the_last_observation() -> None:
    h = histogram({"0.01": 5, "0.02": 9, "0.05": 10, "+Inf": 10}, 0.1)
    assert slowest_bucket(h) == 0.05
    assert slowest_bucket({"count": 0.0}) == 0.0
    beyond = histogram({"0.01": 1, "60": 1, "+Inf": 2}, 100.0)
    assert slowest_bucket(beyond) == math.inf


def test_books_lag_takes_facts_under_load_and_seconds_until_settled() -> None:
    start = histogram({"0.01": 100, "0.02": 100, "0.5": 100, "+Inf": 100}, 0.5)
    under_load = [
        BooksReading(10.0 + i * 0.5, lag, start, 1000.0) for i, lag in enumerate([0, 40, 7, 12])
    ]
    # Sampled after the load stopped (at 11.6): the backlog drains, not part of "under load".
    draining = BooksReading(12.0, 500, start, 1500.0)
    settled_hist = histogram({"0.01": 180, "0.02": 199, "0.5": 200, "+Inf": 200}, 2.0)
    settled = BooksReading(16.6, 0, settled_hist, 1900.0)
    lag = books_lag([*under_load, draining], 11.6, settled)
    assert lag["facts"] == {"max": 40, "p99": 40, "after_settling": 0, "samples": 4}
    seconds = lag["seconds"]
    assert seconds["booked"] == 100
    assert seconds["mean"] == pytest.approx(0.015)
    assert seconds["p99_le"] == 0.02  # the 99th of 100 facts is in the 0.02 bucket
    assert seconds["max_le"] == 0.5
    assert seconds["p50_le"] == 0.01
    assert seconds["buckets"] == {"0.01": 80, "0.02": 99, "0.5": 100, "+Inf": 100}
    assert seconds["after_settling_at_least"] == 0.0
    assert lag["facts_booked"] == 900
    assert lag["settle_seconds"] == 5.0


def test_facts_still_waiting_when_settled_have_waited_at_least_since_the_load_stopped() -> None:
    empty = histogram({"+Inf": 0}, 0.0)
    lag = books_lag([BooksReading(0.0, 0, empty)], 60.0, BooksReading(65.2, 30, empty))
    assert lag["facts"]["after_settling"] == 30
    assert lag["seconds"]["after_settling_at_least"] == 5.2


def test_failed_scrapes_are_left_out_of_the_lag() -> None:
    before = histogram({"0.01": 500, "+Inf": 500}, 1.0)
    after = histogram({"0.01": 510, "+Inf": 510}, 1.05)
    # The first scrape failed: the window starts at the first that answered, not at zero.
    readings = [BooksReading(0.0, None), BooksReading(0.5, 3, before, 500.0)]
    lag = books_lag(readings, 1.0, BooksReading(6.0, 0, after, 510.0))
    assert lag["facts"]["samples"] == 1
    assert lag["seconds"]["booked"] == 10
    assert lag["facts_booked"] == 10


def ready_body(
    checks: dict[str, bool],
    last: str | None = "2026-12-01T10:00:00+00:00",
    books: str = "ok",
) -> bytes:
    details = {"books": {"status": books, "accounts": 12}}
    return orjson.dumps({"status": "x", "checks": checks, "details": details, "last_run_at": last})


def test_ready_with_every_check_passed_is_ok() -> None:
    reading = read_ready(200, ready_body({"fresh": True, "books": True, "projection": True}))
    assert reading == ReadyReading(True, (), "2026-12-01T10:00:00+00:00")


def test_ready_names_the_checks_that_failed() -> None:
    body = ready_body({"fresh": True, "books": False, "projection": False, "offsets": True})
    assert read_ready(503, body).failed == ("books", "projection")
    assert not read_ready(503, body).ok


def test_ready_that_does_not_answer_its_json_is_unreachable() -> None:
    assert read_ready(None, b"") == ReadyReading(False, ("unreachable",))
    assert read_ready(502, b"<html>bad gateway</html>") == ReadyReading(False, ("unreachable",))
    assert read_ready(200, b'{"status": "ready"}').failed == ("unreachable",)


def test_a_503_with_no_failed_check_is_not_ok() -> None:
    # Before its first round the reconciler has no verdicts: not ready, though nothing failed.
    assert not read_ready(503, ready_body({"fresh": False}, None)).ok


def test_reconciler_health_counts_samples_failures_and_rounds() -> None:
    readings = [
        ReadyReading(True, (), "r1"),
        ReadyReading(True, (), "r1"),
        ReadyReading(False, ("books",), "r2"),
        ReadyReading(False, ("unreachable",)),
        ReadyReading(True, (), "r3"),
    ]
    assert reconciler_health(readings) == {
        "samples": 5,
        "ready": 3,
        "always_ok": False,
        "failed_checks": {"books": 1, "unreachable": 1},
        "rounds_seen": 3,
    }
    assert reconciler_health([ReadyReading(True, (), "r1")])["always_ok"] is True
    assert reconciler_health([])["always_ok"] is False


def test_cpu_per_thousand_callbacks_counts_the_backlog_and_percent_only_the_load() -> None:
    cost = cpu_cost(CpuMarks(started=10.0, load_ended=16.0, settled=16.5), 60.0, 60_000)
    assert cost == {"cpu_s": 6.5, "cpu_s_per_1000_callbacks": 0.108, "cpu_pct": 10.0}
    assert cpu_cost(CpuMarks(1.0, 1.0, 1.0), 0.0, 0)["cpu_s_per_1000_callbacks"] is None


def test_reconciler_once_json_becomes_audit_checks() -> None:
    ok = ready_body({"fresh": True, "books": True, "trial_balance": True}).decode()
    assert reconciler_once_failures(ok) == {"reconciler_books": 0, "reconciler_trial_balance": 0}
    drift = ready_body({"fresh": True, "books": False, "trial_balance": True}).decode()
    assert reconciler_once_failures(drift)["reconciler_books"] == 1


def test_books_the_reconciler_found_absent_fail_the_audit() -> None:
    # "absent" passes the reconciler (no consumer installed), but here the consumer ran.
    absent = ready_body({"fresh": True, "books": True}, books="absent").decode()
    assert reconciler_once_failures(absent)["reconciler_books"] == 1


def test_reconciler_once_that_printed_no_report_fails_the_audit() -> None:
    assert reconciler_once_failures("") == {"reconciler_once_answered": 1}
    assert reconciler_once_failures('{"checks": {}}') == {"reconciler_once_answered": 1}
    assert reconciler_once_failures("Traceback ...") == {"reconciler_once_answered": 1}


def test_summary_prints_the_figures_it_reports() -> None:
    empty = histogram({"0.01": 0, "+Inf": 0}, 0.0)
    done = histogram({"0.01": 1000, "+Inf": 1000}, 5.0)
    summary = summarise(
        [BooksReading(0.0, 0, empty, 0.0), BooksReading(0.5, 25, empty, 0.0)],
        BooksReading(65.0, 0, done, 1000.0),
        [ReadyReading(True, (), "r1"), ReadyReading(False, ("projection",), "r2")],
        load_ended=60.0,
        load_seconds=60.0,
        callbacks=60_000,
        accounting_cpu=CpuMarks(0.0, 12.0, 12.3),
        reconciler_cpu=CpuMarks(0.0, 0.6, 0.6),
    )
    assert summary["accounting"]["cpu_pct"] == 20.0
    assert summary["accounting"]["cpu_s_per_1000_callbacks"] == 0.205
    assert summary["accounting"]["cpu_ms_per_fact_booked"] == 12.3  # 12.3 s over 1,000 facts
    assert summary["reconciler"]["cpu_pct"] == 1.0
    assert summary["reconciler"]["health"]["failed_checks"] == {"projection": 1}
    text = "\n".join(format_summary(summary))
    assert "0.205 s per 1,000 callbacks, 20.0 % of a core" in text
    assert "lag facts max 25" in text
    assert "/ready ok in 1 of 2 samples" in text
    assert "projection x1" in text
