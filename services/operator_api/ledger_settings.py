"""Settings of the operator API's ledger routes (environment prefix ``WALLET_``).

A base of :class:`operator_api.settings.OperatorApiSettings`; on its own it is what
:func:`operator_api.ledger_routes.add_ledger_routes` needs (Postgres, Kafka, the reply partition),
so a test can build the ledger routes without Quadcode or Swapgate settings.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wallet_platform import topics
from wallet_platform.config import ENV_PREFIX, CommonSettings

REPLY_PARTITIONS = next(t.partitions for t in topics.TOPICS if t.name == topics.REPLIES)


class OperatorLedgerSettings(CommonSettings):
    """Where the ledger routes read (``WALLET_PG_DSN``) and how they send commands."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_api_reply_partition: int = Field(
        default=6,
        ge=0,
        le=REPLY_PARTITIONS - 1,
        description="This process's partition of ledger.replies for its ledger writes (the same "
        "as WALLET_EXCHANGE_REPLY_PARTITION by default: one partition per operator API process).",
    )
    operator_api_ledger_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a write waits for the ledger's outcome before 503 ledger_timeout "
        "(the command is still applied once; the same requestId gets the stored outcome).",
    )
