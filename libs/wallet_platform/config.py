"""The one settings loader shared by every service.

Settings come from environment variables prefixed ``WALLET_`` (for example ``WALLET_PG_DSN``) and,
optionally, from a dotenv-style file named by ``WALLET_ENV_FILE``; the environment wins over the
file. Each service declares what it needs as a subclass of :class:`CommonSettings` and loads it
with :func:`load_settings`, which validates everything up front and fails with one clear message
naming each missing or bad setting.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "WALLET_"


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    pg_dsn: str = Field(
        default="postgresql://wallet@127.0.0.1:25432/wallet",
        description="Postgres connection string of the ledger database.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:29092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="Longest a consumer fetch waits at the broker when it has no data.",
    )
    kafka_producer: Literal["aiokafka", "librdkafka"] = Field(
        default="aiokafka",
        description="The Kafka client the edge's commands and the ledger's facts and replies "
        "are produced with (same guarantees; docs/edge-performance.md has the A/B).",
    )
    topic_prefix: str = Field(
        default="", description="Namespace prefix for every topic (tests use one per run)."
    )
    log_level: str = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level."
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    ops_host: str = Field(
        default="",
        description="Interface the operational port (/health, /ready, /metrics) binds to; "
        "empty: WALLET_HOST.",
    )
    http_head_timeout_ms: int = Field(
        default=5000,
        ge=50,
        le=300_000,
        description="A connection is closed when a complete request head has not arrived this "
        "long after it opened, or after the first byte of its next request.",
    )
    http_max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Most open connections per listening port; more are answered 503 "
        "unavailable and closed.",
    )
    http_keepalive_timeout_ms: int = Field(
        default=75_000,
        ge=100,
        le=3_630_000,
        description="An idle kept-alive connection is closed after this long (longer than a "
        "proxy's idle timeout, so the proxy closes first).",
    )


class ConfigError(SystemExit):
    """Raised (as a clean process exit) when settings are missing or invalid."""


S = TypeVar("S", bound=BaseSettings)


def _env_name(prefix: str, loc: tuple[Any, ...]) -> str:
    return prefix + "_".join(str(part) for part in loc).upper()


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Load and validate ``cls`` from the environment (and ``WALLET_ENV_FILE`` if set).

    Raises :class:`ConfigError` with a message that names every bad or missing variable.
    """
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE")
    if env_file and not os.path.isfile(env_file):
        raise ConfigError(f"configuration error: {ENV_PREFIX}ENV_FILE={env_file!r} does not exist")
    try:
        return cls(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
            lines.append(f"  {_env_name(prefix, err['loc'])}: {err['msg']}{shown}")
        raise ConfigError("configuration error:\n" + "\n".join(lines)) from None


def read_secret(path: str | None, inline: str | None, what: str) -> bytes:
    """A secret from a file path (preferred) or from an inline environment value."""
    if path:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError(
                f"configuration error: cannot read {what} at {path!r}: {exc}"
            ) from None
    if inline:
        return inline.encode()
    raise ConfigError(f"configuration error: {what} is required (set a file path or a value)")


def die(message: str) -> None:
    """Print a start-up failure and exit non-zero (used for checks outside settings)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)
