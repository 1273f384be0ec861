"""The pure parts of dead letters, operator jobs and the projection rebuild's comparison."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from ledger_core.commands import Envelope, MoneyCommand, encode
from ledger_core.requests import RequestError
from operator_api.dead_letter_store import OperatorAction, ParkedRecord
from operator_api.dead_letters import (
    DeadLetter,
    Source,
    action_refusal,
    letter_view,
    parse_list_query,
    parse_reason,
    redrive_refusal,
)
from operator_api.jobs import JobProgress, parse_job_request, replay_dsn
from projection.model import BalanceRow, ReadModel
from projection.rebuild import LedgerPoint, behind, compare

pytestmark = pytest.mark.unit


def parked(value: bytes, reason: str = "refused") -> ParkedRecord:
    headers = (
        ("reason", reason.encode()),
        ("error", b"why"),
        ("source", b"p.ledger.commands:3:41"),
    )
    return ParkedRecord(0, 7, 1_700_000_000_000, b"cust-1", value, headers)


def command_bytes() -> bytes:
    cmd = MoneyCommand("deposit", "cust-1", "cust-1_USD", "r-1", "5.00", "USD", "late")
    return encode(cmd, Envelope("cmd-1", 2))


def action(state: str) -> OperatorAction:
    return OperatorAction(state, uuid.uuid4(), datetime.now(UTC), "why", "src", None)


def test_a_dead_letter_that_decodes_shows_its_command_and_key() -> None:
    letter = DeadLetter.read(parked(command_bytes()))
    assert letter.decodes and letter.key == ("cust-1", "deposit:cust-1_USD", "r-1")
    view = letter_view(letter, None, full=True)
    assert view["status"] == "new" and view["requestId"] == "r-1"
    assert view["source"] == {"topic": "p.ledger.commands", "partition": 3, "offset": 41}
    assert view["raw"] and view["command"]["type"] == "deposit"


def test_undecodable_bytes_are_shown_with_why_and_no_command() -> None:
    letter = DeadLetter.read(parked(b"\xff not json", "undecodable"))
    view = letter_view(letter, None, full=True)
    assert (view["decodes"], view["command"]) == (False, None)
    assert view["decodeError"].startswith("not JSON")


def test_a_redrive_is_refused_when_it_could_change_nothing() -> None:
    decodes = DeadLetter.read(parked(command_bytes()))
    undecodable = DeadLetter.read(parked(b"{}", "undecodable"))
    assert redrive_refusal(undecodable, None) == "dead_letter_undecodable"
    assert redrive_refusal(decodes, (400, b"{}")) == "dead_letter_outcome_stored"
    assert redrive_refusal(decodes, None) is None


def test_a_second_action_is_refused_with_the_first_ones_code() -> None:
    assert action_refusal(None) is None
    assert action_refusal(action("redriven")) == "dead_letter_redriven"
    assert action_refusal(action("discarded")) == "dead_letter_discarded"


def test_the_source_header_is_read_from_the_right() -> None:
    assert Source.parse("a:b.ledger.commands:2:9") == Source("a:b.ledger.commands", 2, 9)
    assert Source.parse("ledger.commands:x:9") is None


def test_the_list_query_is_checked() -> None:
    query = parse_list_query({"status": ["new"], "limit": ["10"], "after": ["4"]})
    assert (query.status, query.limit, query.after, query.partition) == ("new", 10, 4, 0)
    for bad in ({"status": ["lost"]}, {"limit": ["0"]}, {"limit": ["1", "2"]}, {"x": ["1"]}):
        with pytest.raises(RequestError):
            parse_list_query(bad)


def test_a_discard_needs_a_reason_and_a_redrive_may_have_one() -> None:
    assert parse_reason(b'{"reason": "fixed"}', required=True) == "fixed"
    assert parse_reason(b"", required=False) is None
    for bad in (b"", b"{}", b'{"reason": ""}', b'{"reason": "a\\u0000"}', b'{"why": "x"}'):
        with pytest.raises(RequestError):
            parse_reason(bad, required=True)


def test_job_requests_are_checked_per_type() -> None:
    assert parse_job_request(b'{"type": "projection_rebuild"}').params == {}
    replay = parse_job_request(b'{"type": "replay", "params": {"intoDatabase": "fresh_1"}}')
    assert replay.params == {"intoDatabase": "fresh_1"}
    body = {"type": "republish", "params": {"partitions": [3, 1, 3], "fromSeq": 5}}
    assert parse_job_request(orjson.dumps(body)).params == {"partitions": [1, 3], "fromSeq": 5}
    since = {"type": "republish", "params": {"since": "2026-12-01T00:00:00+00:00"}}
    assert parse_job_request(orjson.dumps(since)).params["since"].startswith("2026-12-01")
    for bad in (
        {"type": "rebuild"},
        {"type": "projection_rebuild", "params": {"x": 1}},
        {"type": "replay", "params": {"intoDatabase": "x; DROP"}},
        {"type": "republish", "params": {"fromSeq": 1}},  # no partitions
        {"type": "republish", "params": {"partitions": [1], "fromSeq": 1, "since": "x"}},
        {"type": "republish", "params": {"since": "2026-12-01T00:00:00"}},  # no zone
        {"type": "republish", "params": {"partitions": [True], "fromSeq": 1}},
    ):
        with pytest.raises(RequestError):
            parse_job_request(orjson.dumps(bad))


def test_a_replay_goes_to_another_database_of_the_live_server_only() -> None:
    live = "postgresql://wallet:pw@db:5432/wallet?sslmode=require"
    assert replay_dsn(live, "fresh") == "postgresql://wallet:pw@db:5432/fresh?sslmode=require"
    with pytest.raises(RequestError):
        replay_dsn(live, "wallet")


def test_job_progress_is_shown_as_reported() -> None:
    progress = JobProgress()
    progress.report(5, 10, "half", 2.345)
    assert progress.view() == {"done": 5, "total": 10, "rate": 2.3, "line": "half"}


def model(**rows: BalanceRow) -> ReadModel:
    built = ReadModel()
    for name, row in rows.items():
        built.balances[("c", name)] = row
    return built


def test_a_rebuilt_balance_is_compared_with_the_ledger_at_the_same_sequence() -> None:
    rebuilt = model(a=BalanceRow("USD", 500, 3), b=BalanceRow("USD", 0, 0))
    seqs = {("c", "a"): 3, ("c", "b"): 0}
    points = {("c", "a"): LedgerPoint("USD", 500), ("c", "b"): LedgerPoint("USD", None)}
    result = compare(rebuilt, seqs, points)
    assert (result.ok, result.balances) == (True, 2)
    # The ledger moved on after the snapshot: the same sequence still agrees.
    assert compare(rebuilt, {("c", "a"): 2, ("c", "b"): 0}, points).ok


def test_every_kind_of_difference_is_found_and_the_first_is_named() -> None:
    rebuilt = model(
        amount=BalanceRow("USD", 501, 3),
        lagging=BalanceRow("USD", 100, 1),
        currency=BalanceRow("EUR", 100, 1),
        stranger=BalanceRow("USD", 100, 1),
    )
    seqs = {("c", "amount"): 3, ("c", "lagging"): 2, ("c", "currency"): 1, ("c", "lost"): 4}
    points = {
        ("c", "amount"): LedgerPoint("USD", 500),
        ("c", "lagging"): LedgerPoint("USD", 100),
        ("c", "currency"): LedgerPoint("USD", 100),
        ("c", "stranger"): LedgerPoint(None, None),
    }
    result = compare(rebuilt, seqs, points)
    assert result.differing == 5
    lines = [d.line() for d in result.differences]
    assert lines[0] == (
        "customer c balance amount: at seq 3 the rebuilt read model has 5.01, the ledger 5.00 USD"
    )
    assert any("currency EUR" in line for line in lines)
    assert any("at seq 1, the ledger at seq 2" in line for line in lines)
    assert any("lost: missing from the rebuilt read model" in line for line in lines)
    assert any("stranger: not in the ledger" in line for line in lines)
    assert behind(rebuilt, seqs) == {("c", "lagging"), ("c", "lost")}
