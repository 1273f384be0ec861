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
    projection_group: str = Field(default="projection", description="Consumer group name.")
    projection_trusted_proxies: str = Field(
        default="127.0.0.1/32,::1/128",
        description="CIDRs of proxies (the edge) whose X-Forwarded-For is believed.",
    )
