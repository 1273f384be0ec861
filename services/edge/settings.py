"""Settings of the edge service (environment prefix ``WALLET_``)."""

from __future__ import annotations

from pydantic import Field

from wallet_platform.http import CallbackAuthSettings


class EdgeSettings(CallbackAuthSettings):
    edge_port: int = Field(default=18080, ge=1, le=65535, description="Port of the public API.")
    edge_ops_port: int = Field(
        default=18084,
        ge=1,
        le=65535,
        description="Port of /health, /ready, /metrics; each edge process needs its own, also "
        "when they share WALLET_EDGE_PORT.",
    )
    edge_reuse_port: bool = Field(
        default=False, description="Let several edge processes share the port (SO_REUSEPORT)."
    )
    edge_reply_partition: int = Field(
        default=0, ge=0, description="This process's partition of ledger.replies (unique per edge)."
    )
    edge_outcome_timeout_ms: int = Field(
        default=2000, ge=10, le=60_000, description="How long to wait for the ledger before 503."
    )
    edge_max_body_bytes: int = Field(
        default=8192, ge=256, le=1_048_576, description="Larger bodies are refused (400)."
    )
    edge_trusted_proxies: str = Field(
        default="", description="CIDRs of proxies whose X-Forwarded-For is believed."
    )
    edge_producer_linger_ms: int = Field(
        default=0, ge=0, le=100, description="Kafka producer linger for commands."
    )
    projection_url: str = Field(
        default="http://127.0.0.1:18081", description="Where balance reads are forwarded."
    )
    projection_ops_url: str = Field(
        default="http://127.0.0.1:18085",
        description="The projection's operational port, whose /ready the edge's /ready includes.",
    )
