"""Settings of the projection service (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.http import CallbackAuthSettings


class ProjectionSettings(CallbackAuthSettings):
    projection_port: int = Field(
        default=18081, ge=1, le=65535, description="Port of the balance reads."
    )
    projection_ops_port: int = Field(
        default=18085, ge=1, le=65535, description="Port of /health, /ready, /metrics."
    )
    projection_flush_ms: int = Field(
        default=200,
        ge=0,
        le=60_000,
        description="Most time between checkpoints of the read model to Postgres.",
    )
    projection_fetch_min_bytes: int = Field(
        # 1: a fetch returns as soon as a fact arrives. Larger chunks (65536 was the default)
        # cost less CPU under load, but a balance read waits for the read model, so they add up
        # to the fetch wait to every read after a write (measured in docs/projection.md).
        default=1,
        ge=1,
        le=1_048_576,
        description="Bytes of facts a fetch waits for (up to the fetch wait below): fewer, larger "
        "fetches cost less CPU and add at most that wait to the read model's lag, and so to "
        "balance reads, which wait for the read model.",
    )
    projection_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Longest a fetch of facts waits at the broker for its minimum bytes.",
    )
    projection_read_wait_ms: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="Longest a balance read waits for the read model to apply every fact Kafka "
        "held for its customer's partition when the read arrived; past it the read is a 503 "
        "unavailable, never a stale balance. 0 answers at once from memory (may lag).",
    )
    projection_checkpoint_backoff_max_ms: int = Field(
        default=5000,
        ge=100,
        le=60_000,
        description="Longest pause between attempts to reconnect the read model's Postgres "
        "checkpoint connection (the pause doubles from 100 ms up to this).",
    )
    projection_group: str = Field(default="projection", description="Consumer group name.")
    projection_trusted_proxies: str = Field(
        default="127.0.0.1/32,::1/128",
        description="CIDRs of proxies (the edge) whose X-Forwarded-For is believed.",
    )
