"""Settings of the projection service (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.http import CallbackAuthSettings


class ProjectionSettings(CallbackAuthSettings):
    projection_port: int = Field(
        default=18081, ge=1, le=65535, description="Port of the balance reads."
    )
    projection_flush_ms: int = Field(
        default=200,
        ge=0,
        le=60_000,
        description="Most time between checkpoints of the read model to Postgres.",
    )
    projection_fetch_min_bytes: int = Field(
        default=65_536,
        ge=1,
        le=1_048_576,
        description="Bytes of facts a fetch waits for (up to the fetch wait below): fewer, larger "
        "fetches cost less CPU and add at most that wait to the read model's lag.",
    )
    projection_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Longest a fetch of facts waits at the broker for its minimum bytes.",
    )
    projection_group: str = Field(default="projection", description="Consumer group name.")
    projection_trusted_proxies: str = Field(
        default="127.0.0.1/32,::1/128",
        description="CIDRs of proxies (the edge) whose X-Forwarded-For is believed.",
    )
