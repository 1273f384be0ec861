"""The ledger's deterministic ids and stored-text checks, built for speed, equal the plain ones.

``stable_id`` skips ``uuid.UUID.__init__`` and ``id_text`` remembers texts: every id a ledger
ever wrote (accounts, entries, facts) must still come out the same, or a replay, a republish and
downstream de-duplication would see new ids.
"""

from __future__ import annotations

import random
import uuid

import orjson
import pytest

from ledger_core import state
from ledger_core.commands import MoneyCommand
from ledger_core.state import LEDGER_NAMESPACE, balance_account_id, id_text, stable_id
from ledger_core.storable import unstorable_text

pytestmark = pytest.mark.unit


def _uuid5(*parts: object) -> uuid.UUID:
    return uuid.uuid5(LEDGER_NAMESPACE, orjson.dumps(parts).decode())


def test_stable_id_is_uuid5_of_the_json_parts() -> None:
    rng = random.Random(14)
    cases: list[tuple[object, ...]] = [
        ("entry", "ann", "debit", "r-1"),
        ("balance", "ann", "usd"),
        ("system", "trading", "USD", 7),
        ("fact", "entry.posted", str(uuid.UUID(int=0))),
        ("fact", "customer.created", "Zoë ☃ \u00e9"),
        (),
    ]
    for _ in range(2000):
        cases.append(
            (
                "fact",
                "".join(rng.choice("ab-é☃0") for _ in range(rng.randint(0, 12))),
                rng.randint(-(10**12), 10**12),
            )
        )
    for parts in cases:
        made, expected = stable_id(*parts), _uuid5(*parts)
        assert made == expected
        assert (str(made), made.bytes, hash(made)) == (
            str(expected),
            expected.bytes,
            hash(expected),
        )
        assert (made.version, made.variant, made.is_safe) == (
            5,
            uuid.RFC_4122,
            uuid.SafeUUID.unknown,
        )


def test_the_ids_the_ledger_has_written_are_unchanged() -> None:
    """Pinned values: a change to the derivation would give every account a new id."""
    assert str(balance_account_id("ann", "usd")) == str(_uuid5("balance", "ann", "usd"))
    assert stable_id("balance", "ann", "usd") == uuid.uuid5(
        LEDGER_NAMESPACE, '["balance","ann","usd"]'
    )


def test_id_text_is_str_and_forgets_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "_ID_TEXTS_KEPT", 3)
    monkeypatch.setattr(state, "_ID_TEXTS", {})
    ids = [uuid.UUID(int=i) for i in range(10)]
    for value in ids + ids:
        assert id_text(value) == str(value)
        assert len(state._ID_TEXTS) <= 3


@pytest.mark.parametrize(
    ("comment", "refusal"),
    [
        ("stake", None),
        ("Zoë's stake ☃", None),
        ("a\x00b", "comment holds a NUL character"),
        ("lone \ud800 surrogate", "comment is not valid UTF-8 (a lone surrogate)"),
    ],
)
def test_unstorable_text_checks_ascii_and_unicode_alike(comment: str, refusal: str | None) -> None:
    cmd = MoneyCommand("debit", "ann", "usd", "r-1", "1.00", "USD", comment)
    assert unstorable_text(cmd) == refusal
