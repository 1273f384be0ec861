"""Settings of the accounting consumer (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.config import CommonSettings


class AccountingSettings(CommonSettings):
    accounting_pg_dsn: str = Field(
        default="",
        description="Postgres connection string of the accounting books (schema `accounting`); "
        "empty: WALLET_PG_DSN, the ledger's database.",
    )
    accounting_group: str = Field(
        default="accounting", description="Consumer group of the accounting consumer."
    )
    accounting_port: int = Field(
        default=18092,
        ge=1,
        le=65535,
        description="Port of the accounting consumer's /health, /ready, /metrics.",
    )
    accounting_max_batch: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Most facts the accounting consumer books in one Postgres transaction.",
    )

    @property
    def books_dsn(self) -> str:
        """Where the books are: their own DSN, or the ledger's database."""
        return self.accounting_pg_dsn or self.pg_dsn
