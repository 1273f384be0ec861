"""Every Kafka topic the product uses, with its partition count and configuration.

One place for these facts: services, the local scripts and the tests all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMANDS = "ledger.commands"
EVENTS = "ledger.events"
REPLIES = "ledger.replies"
DEAD_LETTER = "ledger.commands.dlq"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the project wants it to exist."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# Partition counts are fixed for the life of a deployment: the ledger keys every command by
# customer id, and a customer's state lives with the writer of that customer's partition.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(COMMANDS, 8, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
    # Facts are the system of record for downstream consumers and projection rebuilds: kept forever.
    TopicSpec(EVENTS, 8, {"retention.ms": "-1"}),
    # Replies are only hints for a waiting HTTP request; an hour is plenty.
    TopicSpec(REPLIES, 8, {"retention.ms": str(3600 * 1000)}),
    TopicSpec(DEAD_LETTER, 1, {"retention.ms": "-1"}),
)


def topic_name(base: str, prefix: str = "") -> str:
    """The real topic name for ``base`` under an optional namespace prefix (used by tests)."""
    return f"{prefix}{base}"


def topics(prefix: str = "") -> tuple[TopicSpec, ...]:
    """All topic specs under ``prefix``."""
    return tuple(TopicSpec(topic_name(t.name, prefix), t.partitions, t.config) for t in TOPICS)
