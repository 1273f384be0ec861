"""The reconciler's comparisons, pure: given the rows the queries read, find the first thing that
differs (or say that nothing does). No I/O here; ``reconciler.readings`` reads the rows, and
``reconciler.rounds`` runs the checks and reports them.

Amounts are integers in minor units; a :class:`Difference` shows them as strings, because a
ledger amount (``NUMERIC(40,0)``) may not fit the 64 bits a JSON integer is read into.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

OK: Final = "ok"
FAILED: Final = "failed"
ABSENT: Final = "absent"  # the thing to check is not installed (the accounting books)
ERROR: Final = "error"  # the check could not run (Postgres or Kafka did not answer)


@dataclass(frozen=True, slots=True)
class Difference:
    """The first thing a check found different: why, where (an account, a partition), and the
    value expected against the value found."""

    reason: str
    where: dict[str, str | int]
    expected: str
    found: str

    def as_dict(self) -> dict[str, str | int]:
        """Flat, for a log line or a /ready detail."""
        return {"reason": self.reason, **self.where, "expected": self.expected, "found": self.found}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's result in one round; ``figures`` are what it measured besides (a lag, how
    many rows it compared)."""

    status: str
    difference: Difference | None = None
    figures: dict[str, int | float | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Healthy: nothing differs, or there is nothing to compare (no books installed)."""
        return self.status in (OK, ABSENT)


# --- trial balance -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindTotal:
    """The sum of the last balances of every account of one kind in one currency."""

    currency: str
    kind: str
    total: int


def trial_balance_difference(totals: Iterable[KindTotal]) -> Difference | None:
    """The first currency (in code order) whose accounts do not sum to zero, with what each
    kind of account holds in it."""
    by_currency: dict[str, dict[str, int]] = {}
    for t in totals:
        kinds = by_currency.setdefault(t.currency, {})
        kinds[t.kind] = kinds.get(t.kind, 0) + t.total
    for currency in sorted(by_currency):
        kinds = by_currency[currency]
        total = sum(kinds.values())
        if total != 0:
            where: dict[str, str | int] = {"currency": currency}
            where.update({f"kind_{k}": str(v) for k, v in sorted(kinds.items())})
            return Difference("currency_does_not_sum_to_zero", where, "0", str(total))
    return None


# --- projection ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProjectedBalance:
    """A customer balance as the projection and the ledger hold it, read in one snapshot.

    The projection side (``projected`` False: it has no row yet): ``currency``, ``amount`` and
    ``reserved`` as of its ``seq`` and ``hold_seq``. The ledger side (``account_id`` None: the
    ledger has no such balance): its last posting's ``ledger_seq`` (0: none), the balance after
    its posting number ``seq`` (None: it has no such posting), and, when the projection has seen
    a hold, its count of holds made and released and what open ones hold.
    """

    customer_id: str
    balance_id: str
    projected: bool
    currency: str
    amount: int
    seq: int
    reserved: int
    hold_seq: int
    account_id: str | None
    ledger_currency: str | None
    ledger_seq: int
    ledger_amount_at_seq: int | None
    ledger_holds: int
    ledger_held: int


BalanceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ProjectionComparison:
    """The first difference, the largest lag (postings the ledger has that the projection has
    not applied, over every balance), and each lagging balance's projection ``seq`` (-1: the
    projection has not seen the balance at all)."""

    difference: Difference | None
    max_lag: int
    behind: dict[BalanceKey, int]


def compare_projection(rows: Iterable[ProjectedBalance]) -> ProjectionComparison:
    """Compare the projection with the ledger as of what the projection has applied: a balance
    at its ``seq`` must equal the ledger's balance after that posting. A projection behind the
    ledger is a lag, not a difference; one ahead of it, or holding a balance the ledger does not
    have, is a difference."""
    first: tuple[BalanceKey, Difference] | None = None
    max_lag = 0
    behind: dict[BalanceKey, int] = {}
    for row in rows:
        key = (row.customer_id, row.balance_id)
        if row.account_id is not None and (not row.projected or row.seq < row.ledger_seq):
            lag = row.ledger_seq - (row.seq if row.projected else 0)
            max_lag = max(max_lag, lag)
            behind[key] = row.seq if row.projected else -1
        difference = _projected_balance_difference(row)
        if difference is not None and (first is None or key < first[0]):
            first = (key, difference)
    return ProjectionComparison(first[1] if first else None, max_lag, behind)


def _projected_balance_difference(row: ProjectedBalance) -> Difference | None:
    if not row.projected:
        return None  # the projection has not applied the balance's opening yet: a lag
    where: dict[str, str | int] = {"customer_id": row.customer_id, "balance_id": row.balance_id}
    if row.account_id is None:
        return Difference("balance_not_in_ledger", where, "no balance", f"seq {row.seq}")
    where["account_id"] = row.account_id
    if row.currency != row.ledger_currency:
        return Difference("currency_differs", where, str(row.ledger_currency), row.currency)
    if row.seq > row.ledger_seq:
        return Difference(
            "projection_ahead_of_ledger", where, f"seq <= {row.ledger_seq}", f"seq {row.seq}"
        )
    expected = 0 if row.seq == 0 else row.ledger_amount_at_seq
    if expected is None:  # a gap in the ledger's postings: the audit's business, but say so
        return Difference("ledger_posting_missing", where, f"posting seq {row.seq}", "none")
    if row.amount != expected:
        where["seq"] = row.seq
        return Difference("amount_differs", where, str(expected), str(row.amount))
    if row.hold_seq > row.ledger_holds and row.hold_seq > 0:
        return Difference(
            "holds_ahead_of_ledger",
            where,
            f"hold_seq <= {row.ledger_holds}",
            f"hold_seq {row.hold_seq}",
        )
    # Reserved amounts are comparable when the projection has applied every hold the ledger
    # made and released (a projection that never saw a hold must hold nothing).
    comparable = row.hold_seq == row.ledger_holds or row.hold_seq == 0
    expected_reserved = row.ledger_held if row.hold_seq else 0
    if comparable and row.reserved != expected_reserved:
        where["hold_seq"] = row.hold_seq
        return Difference("reserved_differs", where, str(expected_reserved), str(row.reserved))
    return None


class StallWatch:
    """Remembers, across rounds, since when each lagging balance's projection ``seq`` has not
    moved. A lag is normal (the projection checkpoints every few hundred milliseconds); a lag
    whose projection side stands still for longer than ``bound`` seconds is a stalled projection.
    """

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._since: dict[BalanceKey, tuple[int, float]] = {}

    def observe(self, behind: Mapping[BalanceKey, int], now: float) -> tuple[BalanceKey, float]:
        """Record this round's lagging balances; returns the balance stalled longest and for how
        many seconds (``(("", ""), 0.0)`` when none lags)."""
        since = {}
        for key, seq in behind.items():
            known = self._since.get(key)
            since[key] = known if known is not None and known[0] == seq else (seq, now)
        self._since = since  # balances that caught up are forgotten
        if not since:
            return ("", ""), 0.0
        key = min(since, key=lambda k: (since[k][1], k))
        return key, now - since[key][1]


# --- the accounting books ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookedAccount:
    """An account as the reference consumer's books hold it, with the ledger's side.

    ``booked_seq`` is how far the books have booked the account: a customer balance's last
    ``balance_seq`` (its stored position), a system shard's number of lines (its postings arrive
    in ``seq`` order, so n lines are its postings 1..n while the books have no gap open; None:
    the books hold no position for it). The ledger's side: whether it knows the account, its last
    posting's ``seq`` (0: none) and its balance after posting ``booked_seq``.
    """

    account_id: str
    account: str
    customer_id: str
    balance_id: str
    currency: str
    balance: int
    booked_seq: int | None
    ledger_known: bool
    ledger_seq: int
    ledger_amount_at_seq: int | None


def books_difference(rows: Iterable[BookedAccount]) -> Difference | None:
    """The first account (by kind, customer, balance, currency, id) whose booked balance is not
    the ledger's balance as of what the books booked for it."""
    for row in sorted(
        rows, key=lambda r: (r.account, r.customer_id, r.balance_id, r.currency, r.account_id)
    ):
        where: dict[str, str | int] = {"account_id": row.account_id, "account": row.account}
        if row.customer_id:
            where |= {"customer_id": row.customer_id, "balance_id": row.balance_id}
        where["currency"] = row.currency
        if not row.ledger_known:
            return Difference("account_not_in_ledger", where, "no account", str(row.balance))
        if row.booked_seq is None:
            return Difference("no_booked_position", where, "a position", "none")
        if row.booked_seq > row.ledger_seq:
            return Difference(
                "books_ahead_of_ledger",
                where,
                f"seq <= {row.ledger_seq}",
                f"seq {row.booked_seq}",
            )
        expected = 0 if row.booked_seq == 0 else row.ledger_amount_at_seq
        if expected is None:
            return Difference("ledger_posting_missing", where, f"seq {row.booked_seq}", "none")
        if row.balance != expected:
            where["seq"] = row.booked_seq
            return Difference("balance_differs", where, str(expected), str(row.balance))
    return None


# --- unpublished facts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxPosition:
    """A ledger partition's last fact committed (``outbox_seq``) and the last one the ledger
    recorded as acknowledged by Kafka (``published_seq``)."""

    partition: int
    outbox_seq: int
    published_seq: int


@dataclass(frozen=True, slots=True)
class Overdue:
    """A partition whose first unpublished fact has not been recorded published for longer than
    the bound: facts ``first_seq``..``last_seq`` must be looked for on the topic."""

    partition: int
    first_seq: int
    last_seq: int
    age: float


class UnpublishedWatch:
    """Remembers, across rounds, since when each partition's first unpublished fact has been
    unpublished, and which gaps were already found on the topic.

    The ledger records ``published_seq`` with its next batch (or when it stops), so an idle
    ledger's last facts stay "unpublished" in Postgres although Kafka acknowledged them long
    ago. A gap older than the bound is therefore only a suspicion: the caller looks for its facts
    on ``ledger.events`` and tells the watch what it found (:meth:`found_on_topic`).
    """

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._first: dict[int, tuple[int, float]] = {}  # partition -> (first unpublished, since)
        self._on_topic: dict[int, int] = {}  # partition -> facts up to here found on the topic

    def observe(self, positions: Iterable[OutboxPosition], now: float) -> list[Overdue]:
        """Record this round's positions; returns the gaps older than the bound whose facts were
        not yet found on the topic."""
        overdue = []
        first: dict[int, tuple[int, float]] = {}
        for p in sorted(positions, key=lambda p: p.partition):
            # Facts already found on the topic need not be looked for again.
            start = max(p.published_seq, self._on_topic.get(p.partition, 0)) + 1
            if p.outbox_seq < start:
                continue
            known = self._first.get(p.partition)
            # The gap's age runs from when its first fact was first seen unpublished: a ledger
            # under load moves published_seq with every batch, and its gap starts anew.
            seq, since = known if known is not None and known[0] == start else (start, now)
            first[p.partition] = (seq, since)
            if now - since > self.bound:
                overdue.append(Overdue(p.partition, seq, p.outbox_seq, now - since))
        self._first = first
        return overdue

    def found_on_topic(self, partition: int, through_seq: int) -> None:
        """Facts of ``partition`` up to ``through_seq`` are on the topic: do not look again."""
        self._on_topic[partition] = max(self._on_topic.get(partition, 0), through_seq)


def first_missing_fact(
    gap: Sequence[tuple[int, bytes]], on_topic: frozenset[bytes] | set[bytes]
) -> int | None:
    """The outbox seq of the first fact of ``gap`` (``(seq, payload)`` in seq order) whose bytes
    are not among the records read from the topic (a republish sends the same bytes)."""
    for seq, payload in gap:
        if payload not in on_topic:
            return seq
    return None


# --- Kafka offsets -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredOffset:
    """An offset a reader stored in Postgres (the next one it will read), and the end offset of
    that partition in Kafka now (None: the topic has no such partition)."""

    reader: str
    topic: str
    partition: int
    stored: int
    end: int | None


def offsets_difference(offsets: Iterable[StoredOffset]) -> Difference | None:
    """The first stored offset (by reader, topic, partition) beyond its partition's end in Kafka:
    the topic was recreated, or the database restored from another cluster, and the reader would
    skip (or wait for) records that are not there."""
    for o in sorted(offsets, key=lambda o: (o.reader, o.topic, o.partition)):
        where: dict[str, str | int] = {
            "reader": o.reader,
            "topic": o.topic,
            "partition": o.partition,
        }
        if o.end is None:
            return Difference("partition_not_in_kafka", where, "a partition", "none")
        if o.stored > o.end:
            return Difference("stored_offset_beyond_log_end", where, f"<= {o.end}", str(o.stored))
    return None
