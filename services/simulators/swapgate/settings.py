"""The simulator's settings: environment variables ``WALLET_SWAPGATE_SIM_*`` or the command line."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "WALLET_SWAPGATE_SIM_"


class SimulatorSettings(BaseSettings):
    """Everything the simulator can be told; defaults suit local runs and tests."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8090, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    market_file: str | None = Field(
        default=None, description="JSON market table replacing the built-in one."
    )
    spread_pct: Decimal = Field(default=Decimal("0.5"), ge=0, lt=100)
    platform_pct: Decimal = Field(
        default=Decimal("1"), ge=0, lt=100, description="Swapgate's commission C."
    )
    affiliate_pct: Decimal = Field(
        default=Decimal("20"), ge=0, le=100, description="The partner's commission percentage."
    )
    timestamp_window_s: int = Field(
        default=30, gt=0, description="Accepted |server time - x-api-timestamp|, seconds."
    )
    step_s: float = Field(
        default=2.0, gt=0, description="Time an order spends in each lifecycle stage."
    )
    operator_session: str = Field(
        default="simulator-operator",
        description="Value of the 'session' cookie the /api/v1/users/* calls require.",
    )
    api_public_key: str | None = Field(
        default=None, description="An API key known from the start (public part)."
    )
    api_secret_key_file: str | None = Field(
        default=None, description="File holding that key's secret (with --api-public-key)."
    )
    api_key_name: str = Field(default="wallet", min_length=1, description="That key's name.")
    api_key_white_list_ip: str = Field(
        default="127.0.0.1,::1",
        description="That key's whitelist: addresses or CIDR ranges, comma separated.",
    )
