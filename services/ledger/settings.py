"""Settings of the ledger service (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.config import CommonSettings


class LedgerSettings(CommonSettings):
    ledger_port: int = Field(
        default=18082, ge=1, le=65535, description="Port of /health, /ready, /metrics."
    )
    ledger_group: str = Field(default="ledger-writer", description="Consumer group of the writers.")
    ledger_max_batch: int = Field(
        default=2000, ge=1, le=50_000, description="Most commands applied in one transaction."
    )
    ledger_pipeline_depth: int = Field(
        default=2,
        ge=1,
        le=2,
        description="Batches in flight at once: 2 decides the next batch while the previous one "
        "is written (writes stay in order); 1 decides only after the previous write landed.",
    )
    ledger_outcome_cache: int = Field(
        default=10_000,
        ge=0,
        description="Recent outcomes kept in memory per partition (older ones are looked up).",
    )
    ledger_verify_seconds: float = Field(
        default=10.0,
        ge=0,
        description="After a takeover, look every unknown request up in Postgres for this long.",
    )
    ledger_producer_linger_ms: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Kafka producer linger for replies and facts.",
    )
