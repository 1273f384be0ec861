"""Facts for ledger.events: they follow the published schema and apply idempotently to the read
model."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from ledger_core.commands import CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from ledger_core.decide import apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState
from projection.model import ReadModel

pytestmark = pytest.mark.unit

SCHEMA = orjson.loads(
    (Path(__file__).parents[2] / "docs" / "events" / "ledger-event-v1.schema.json").read_bytes()
)

HISTORY = [
    CreateCustomer("c", "1"),
    OpenBalance("c", "b", "BTC", "2"),
    MoneyCommand("deposit", "c", "b", "3", "1.5", "BTC", "in"),
    MoneyCommand("debit", "c", "b", "4", "0.25", "BTC", "option"),
    SetBlocked("c", True, "5"),
]


def all_facts() -> list[bytes]:
    state = PartitionState(3)
    out = []
    for i, cmd in enumerate(HISTORY):
        decision = decide(state, cmd, None)
        apply(state, decision)
        out += [f.payload for f in facts_for(decision, 3, 1_700_000_000_000 + i)]
    return out


def test_every_fact_matches_the_published_schema() -> None:
    facts = all_facts()
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for payload in facts:
        validator.validate(orjson.loads(payload))
    assert [orjson.loads(p)["type"] for p in facts] == [
        "customer.created",
        "balance.opened",
        "entry.posted",
        "entry.posted",
        "customer.blocked",
    ]


def test_fact_ids_are_deterministic() -> None:
    assert all_facts() == all_facts()


def test_read_model_ignores_duplicates_and_older_facts() -> None:
    facts = all_facts()
    once, twice = ReadModel(), ReadModel()
    for payload in facts:
        once.apply(payload)
    for payload in facts + facts[::-1]:
        twice.apply(payload)
    assert once == twice
    assert once.balances[("c", "b")].amount == 125_000_000
    assert once.customers["c"] is True and once.gaps == 0
    assert twice.balance_body("c", "b")[0] == "customer_blocked"


@pytest.mark.parametrize("payload", [b"x", b"{}", b'{"type": "entry.posted"}', b"[]"])
def test_an_unreadable_fact_is_refused_without_changing_the_model(payload: bytes) -> None:
    model = ReadModel()
    with pytest.raises((ValueError, KeyError, TypeError)):
        model.apply(payload)
    assert model == ReadModel()
