"""The benchmark's run checks: each one fails on the fault it is there to catch."""

from __future__ import annotations

from typing import Any

import pytest

from bench.checks import run_checks, run_entries, sent_by

pytestmark = pytest.mark.unit

RUNS = {"warmup": 3, "open-1a2b3c": 4}


def clean_result() -> dict[str, Any]:
    return {
        "writes_ok": [
            ("open-1a2b3c-1", "debit", "bc-1"),
            ("open-1a2b3c-2", "credit", "bc-2"),
        ],
        "replay_mismatches": [],
        "statuses": {"200": 3, "201": 2},
        "connection_errors": {},
        "requests": 5,
    }


def clean_entries() -> dict[str, tuple[str, int]]:
    return {
        "warmup-1": ("debit", 1),
        "warmup-3": ("credit", 1),
        "open-1a2b3c-1": ("debit", 1),
        "open-1a2b3c-2": ("credit", 1),
        # Applied, answered with something else (a timeout, say): allowed, and reported.
        "open-1a2b3c-4": ("debit", 1),
    }


def failures(entries: dict[str, tuple[str, int]], result: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in run_checks(entries, result, "open-1a2b3c", RUNS).items() if v}


def test_a_clean_run_passes_every_check() -> None:
    assert failures(clean_entries(), clean_result()) == {}
    assert sorted(run_entries(clean_entries(), "open-1a2b3c")) == [
        "open-1a2b3c-1",
        "open-1a2b3c-2",
        "open-1a2b3c-4",
    ]


def test_an_answered_write_without_its_entry_fails() -> None:
    entries = clean_entries()
    del entries["open-1a2b3c-2"]
    assert failures(entries, clean_result()) == {"every_201_has_exactly_one_entry": 1}


def test_an_entry_of_the_wrong_kind_fails() -> None:
    entries = clean_entries()
    entries["open-1a2b3c-2"] = ("debit", 1)
    assert failures(entries, clean_result()) == {"every_201_has_exactly_one_entry": 1}


def test_a_doubled_entry_fails() -> None:
    entries = clean_entries()
    entries["open-1a2b3c-1"] = ("debit", 2)
    entries["warmup-1"] = ("debit", 2)
    assert failures(entries, clean_result()) == {
        "every_201_has_exactly_one_entry": 1,
        "no_entry_counted_twice": 2,
    }


@pytest.mark.parametrize(
    "request_id",
    ["open-1a2b3c-5", "open-1a2b3c-0", "other-1", "open-1a2b3c-x", "warmup-4", "open-1a2b3c"],
)
def test_an_entry_the_load_generator_never_sent_fails(request_id: str) -> None:
    entries = clean_entries()
    entries[request_id] = ("debit", 1)
    assert failures(entries, clean_result()) == {"every_entry_was_sent_by_the_load_generator": 1}


def test_sent_by_reads_run_ids_with_dashes() -> None:
    assert sent_by("open-1a2b3c-4", RUNS)
    assert not sent_by("open-1a2b3c-4", {"open": 10})


def test_answers_the_audit_refuses() -> None:
    result = clean_result()
    result["replay_mismatches"] = [{"request_id": "open-1a2b3c-1"}]
    result["statuses"] = {"201": 2, "503": 1, "500": 2}
    result["connection_errors"] = {"ConnectionError": 1}
    assert failures(clean_entries(), result) == {
        "replays_got_the_original_answer": 1,
        "no_5xx": 3,
        "no_connection_errors": 1,
    }
    result = clean_result() | {"requests": 0, "writes_ok": [], "statuses": {}}
    assert failures({}, result) == {"requests_were_answered": 1}
