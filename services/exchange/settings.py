"""Settings of the exchange orchestration (environment prefix ``WALLET_``), read by the operator
API and by ``python -m exchange``. Exchanges are off until ``WALLET_SWAPGATE_BASE_URL`` is set."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from swapgate import ApiCredentials, Backoff, Instrument, MarkupPolicy
from wallet_platform.config import ENV_PREFIX, CommonSettings, ConfigError, read_secret


def _pairs(text: str, name: str) -> dict[str, str]:
    """``"BTC:value,USDT:value"`` as a dict keyed by currency code."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        code, sep, value = item.partition(":")
        if not sep or not code.strip() or not value.strip():
            raise ConfigError(f"configuration error: {name}: expected CODE:value, got {item!r}")
        out[code.strip().upper()] = value.strip()
    return out


class ExchangeSettings(CommonSettings):
    """How to reach Swapgate, where it pays out, and how exchanges are driven."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    swapgate_base_url: str = Field(
        default="", description="Swapgate's base URL; empty turns exchanges off."
    )
    swapgate_public_key: str = Field(default="", description="Our Swapgate API key (public part).")
    swapgate_secret_key_file: str = Field(
        default="", description="File holding our Swapgate API secret key."
    )
    swapgate_secret_key: str = Field(
        default="", repr=False, description="Alternatively, the Swapgate secret key itself."
    )
    swapgate_markup: Decimal = Field(
        default=Decimal(0), ge=0, lt=100, description="Our markup K (percent) on every exchange."
    )
    swapgate_request_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds per call to Swapgate."
    )
    swapgate_instruments: str = Field(
        default="BTC:BTC,ETH:ETH,USDT:TRC20",
        description="Ledger currency to Swapgate network, CODE:NETWORK comma separated.",
    )
    swapgate_payout_addresses: str = Field(
        default="",
        description="Our (treasury) address per currency where Swapgate pays out, CODE:ADDRESS.",
    )
    swapgate_refund_addresses: str = Field(
        default="",
        description="Our address per currency for Swapgate's refunds, CODE:ADDRESS (optional).",
    )
    exchange_reply_partition: int = Field(
        default=6, ge=0, description="This process's partition of ledger.replies."
    )
    exchange_ledger_timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to wait for one ledger answer (retried)."
    )
    exchange_poll_initial: float = Field(
        default=0.5, gt=0, description="First wait between two polls of an order, seconds."
    )
    exchange_poll_max: float = Field(
        default=30.0, gt=0, description="Longest wait between two polls of an order, seconds."
    )
    exchange_poll_timeout: float = Field(
        default=900.0, gt=0, description="How long one run polls an order before handing it back."
    )
    exchange_resume_interval: float = Field(
        default=30.0, gt=0, description="How often unfinished exchanges are picked up again."
    )
    exchange_order_unknown_after: float = Field(
        default=120.0,
        gt=0,
        description="An order creation with no answer for this long is left to a person.",
    )

    @property
    def exchanges_enabled(self) -> bool:
        return bool(self.swapgate_base_url.strip())

    def swapgate_credentials(self) -> ApiCredentials:
        secret = read_secret(
            self.swapgate_secret_key_file or None,
            self.swapgate_secret_key or None,
            "the Swapgate secret key "
            "(WALLET_SWAPGATE_SECRET_KEY_FILE or WALLET_SWAPGATE_SECRET_KEY)",
        )
        if not self.swapgate_public_key:
            raise ConfigError("configuration error: WALLET_SWAPGATE_PUBLIC_KEY is required")
        return ApiCredentials(self.swapgate_public_key, secret.decode().strip())

    def instruments(self) -> dict[str, Instrument]:
        networks = _pairs(self.swapgate_instruments, "WALLET_SWAPGATE_INSTRUMENTS")
        return {code: Instrument(code, network) for code, network in networks.items()}

    def payout_addresses(self) -> dict[str, str]:
        return _pairs(self.swapgate_payout_addresses, "WALLET_SWAPGATE_PAYOUT_ADDRESSES")

    def refund_addresses(self) -> dict[str, str]:
        return _pairs(self.swapgate_refund_addresses, "WALLET_SWAPGATE_REFUND_ADDRESSES")

    def markup_policy(self) -> MarkupPolicy:
        return MarkupPolicy(default=self.swapgate_markup)

    def backoff(self) -> Backoff:
        return Backoff(
            initial_s=self.exchange_poll_initial,
            max_delay_s=max(self.exchange_poll_max, self.exchange_poll_initial),
        )

    def check(self) -> None:
        """Read everything now, so a bad setting stops start-up (not the first exchange)."""
        if self.exchanges_enabled:
            self.swapgate_credentials()
            self.instruments()
            self.payout_addresses()
            self.refund_addresses()
