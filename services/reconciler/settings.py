"""Settings of the reconciler (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.config import CommonSettings


class ReconcilerSettings(CommonSettings):
    reconciler_port: int = Field(
        default=18093,
        ge=1,
        le=65535,
        description="Port of the reconciler's /health, /ready, /metrics.",
    )
    reconciler_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between the start of one round of checks and the next.",
    )
    reconciler_stall_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A balance whose projection sequence has not moved for this long while the "
        "ledger's is ahead fails the projection check (a lag alone does not).",
    )
    reconciler_unpublished_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A committed fact missing from ledger.events for this long fails the "
        "unpublished check.",
    )
    accounting_pg_dsn: str = Field(
        default="",
        description="Postgres connection string of the accounting books (schema `accounting`); "
        "empty: WALLET_PG_DSN, the ledger's database.",
    )

    @property
    def books_dsn(self) -> str:
        """Where the reference consumer's books are: their own DSN, or the ledger's database."""
        return self.accounting_pg_dsn or self.pg_dsn
