"""What the ledger's Postgres columns can hold, checked before a command reaches them (pure).

A command that Postgres would refuse whatever the state (text with NUL, which ``text`` can not
hold; a lone surrogate, which is not UTF-8; an amount beyond ``NUMERIC(40,0)``) must get a final
answer from the writer, not a failed batch that is retried forever. The edge refuses such input
already; this is the ledger's own guard, for commands from any producer.
"""

from __future__ import annotations

import dataclasses

from ledger_core.commands import Command
from ledger_core.decide import Decision, JournalEntry, ReservationMade, ReservationReleased

# NUMERIC(40,0): at most 40 digits.
NUMERIC_LIMIT = 10**40


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def unstorable_text(cmd: Command) -> str | None:
    """Why a text field of ``cmd`` can not be stored in Postgres, or None if all can."""
    names = _FIELD_NAMES.get(type(cmd))
    if names is None:
        names = _FIELD_NAMES[type(cmd)] = tuple(f.name for f in dataclasses.fields(cmd))
    for name in names:
        value = getattr(cmd, name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            return f"{name} holds a NUL character"
        if value.isascii():
            continue  # ASCII is UTF-8 as it stands: the common case needs no encoding
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not valid UTF-8 (a lone surrogate)"
    return None


def out_of_range(decision: Decision) -> str | None:
    """Why an amount the decision writes would not fit its column, or None if all fit."""
    for effect in decision.effects:
        amounts: list[int] = []
        entry = effect.entry if isinstance(effect, ReservationReleased) else effect
        if isinstance(entry, JournalEntry):
            amounts.append(entry.amount)
            for p in entry.postings:
                amounts += (p.amount, p.balance_after)
        elif isinstance(effect, ReservationMade):
            amounts.append(effect.amount)
        if any(abs(a) >= NUMERIC_LIMIT for a in amounts):
            return "an amount or balance would exceed NUMERIC(40,0)"
    return None
