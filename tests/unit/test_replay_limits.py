"""The replay's pure parts: where it stops, how fast it may read, and its verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ledger.replay import (
    EXIT_MATCH,
    EXIT_MISMATCH,
    EXIT_NOT_COMPARED,
    RateLimit,
    Refused,
    ReplayRun,
    bounded,
    read_offsets_file,
    verdict,
)
from ledger.state_hash import StateHash

pytestmark = pytest.mark.unit

TOPIC = "ledger.commands"


def records(partition: int, *offsets: int) -> list[ConsumerRecord[Any, Any]]:
    return [ConsumerRecord(TOPIC, partition, o, 0, 0, b"k", b"v", None, 1, 1, ()) for o in offsets]


def test_records_at_or_past_the_stop_offset_are_not_replayed() -> None:
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)

    kept, reached = bounded({p0: records(0, 3, 4, 5, 6), p1: records(1, 0, 1)}, {0: 5, 1: 9})

    assert [m.offset for m in kept[p0]] == [3, 4]
    assert [m.offset for m in kept[p1]] == [0, 1]
    assert reached == {p0}


def test_a_partition_that_stops_at_zero_replays_nothing() -> None:
    p2 = TopicPartition(TOPIC, 2)

    kept, reached = bounded({p2: records(2, 0)}, {})

    assert kept == {} and reached == {p2}


def test_the_rate_limit_lets_a_tenth_of_a_second_through_at_once() -> None:
    limit = RateLimit(1000.0)

    assert limit.delay(2000, now=0.0) == pytest.approx(0.1)  # empty at the start
    assert limit.grant(2000, now=0.1) == 100  # the burst: a tenth of a second's worth
    limit.spend(100)
    assert limit.delay(2000, now=0.1) == pytest.approx(0.1)
    assert limit.grant(2000, now=5.0) == 100  # idle time does not pile up


def test_the_rate_limit_averages_its_rate() -> None:
    limit, now, read = RateLimit(500.0), 0.0, 0
    while now < 10.0:
        now += limit.delay(2000, now)
        granted = limit.grant(2000, now)
        limit.spend(granted)
        read += granted

    assert 4900 <= read <= 5100


def test_an_offsets_file_maps_partitions_to_offsets(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"0": 12, "3": 0}')
    bad.write_text('{"0": -1}')

    assert read_offsets_file(good) == {0: 12, 3: 0}
    with pytest.raises(Refused):
        read_offsets_file(bad)


def run_with(live: str, fresh: str, live_offsets: dict[int, int]) -> ReplayRun:
    run = ReplayRun({0: 5, 1: 0}, commands=5, seconds=1.0)
    run.fresh = StateHash(fresh, {"customers": 1}, {0: 5, 1: 0})
    run.live = StateHash(live, {"customers": 1}, live_offsets)
    return run


def test_equal_hashes_at_the_same_offsets_match() -> None:
    code, lines = verdict(run_with("a" * 64, "a" * 64, {0: 5}), compare=True)

    assert code == EXIT_MATCH
    assert lines[-1] == "MATCH: same commands, same ledger"


def test_different_hashes_at_the_same_offsets_are_a_mismatch() -> None:
    code, lines = verdict(run_with("a" * 64, "b" * 64, {0: 5, 1: 0}), compare=True)

    assert code == EXIT_MISMATCH
    assert lines[-1].startswith("MISMATCH")


def test_a_live_ledger_at_other_offsets_is_not_compared() -> None:
    code, lines = verdict(run_with("a" * 64, "a" * 64, {0: 7}), compare=True)

    assert code == EXIT_NOT_COMPARED
    assert lines[-1].startswith("NOT COMPARED")
