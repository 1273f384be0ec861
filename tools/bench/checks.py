"""The benchmark's own checks of one run against the journal: pure, so they are unit-tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Entries = Mapping[str, tuple[str, int]]  # request_id -> (kind, number of journal entries)


def sent_by(request_id: str, runs: Mapping[str, int]) -> bool:
    """Whether ``request_id`` is one the load generator sent: "<run_id>-<seq>" of a run of this
    benchmark, with 1 <= seq <= the last write sequence number that run used."""
    run_id, _, seq = request_id.rpartition("-")
    return run_id in runs and seq.isdigit() and 1 <= int(seq) <= runs[run_id]


def run_checks(
    entries: Entries, result: Mapping[str, Any], run_id: str, runs: Mapping[str, int]
) -> dict[str, int]:
    """Failures per check (all zero when the run is clean).

    ``entries`` are all the debit and credit entries in the journal, ``result`` what the load
    generator recorded for ``run_id``, and ``runs`` every run so far with its last sequence
    number (the current one included)."""
    answered = {rid: kind for rid, kind, _ in result["writes_ok"]}
    return {
        "every_201_has_exactly_one_entry": sum(
            1 for rid, kind in answered.items() if entries.get(rid) != (kind, 1)
        ),
        "every_entry_was_sent_by_the_load_generator": sum(
            1 for rid in entries if not sent_by(rid, runs)
        ),
        "no_entry_counted_twice": sum(1 for _, n in entries.values() if n != 1),
        "replays_got_the_original_answer": len(result["replay_mismatches"]),
        "no_5xx": sum(v for k, v in result["statuses"].items() if str(k).startswith("5")),
        "no_connection_errors": sum(result["connection_errors"].values()),
        "requests_were_answered": 0 if result["requests"] > 0 else 1,
    }


def run_entries(entries: Entries, run_id: str) -> list[str]:
    """The request ids of ``run_id``'s entries."""
    return [rid for rid in entries if rid.rpartition("-")[0] == run_id]
