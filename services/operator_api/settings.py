"""Settings of the operator API (environment prefix ``WALLET_``).

The Quadcode gateway settings (``WALLET_QUADCODE_BASE_URL``, ``..._ISSUER``, ``..._ENVIRONMENT``,
``..._PRIVATE_KEY_PATH`` and the timeouts) come from :class:`QuadcodeGatewaySettings`; the
exchange settings (``WALLET_SWAPGATE_*``, ``WALLET_EXCHANGE_*``) from :class:`ExchangeSettings`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from exchange.settings import ExchangeSettings
from operator_api.four_eyes import FourEyesSettings
from operator_api.job_settings import OperatorJobSettings
from operator_api.key_settings import OperatorKeySettings
from operator_api.ledger_settings import OperatorLedgerSettings
from operator_api.reconciliation import OperatorReconciliationSettings
from quadcode_gateway.settings import QuadcodeGatewaySettings
from quadcode_gateway.tokens import KeyFileError, TokenSigner
from wallet_platform.config import ENV_PREFIX, ConfigError


class OperatorApiSettings(
    OperatorKeySettings,
    OperatorLedgerSettings,
    FourEyesSettings,
    OperatorJobSettings,
    OperatorReconciliationSettings,
    ExchangeSettings,
    QuadcodeGatewaySettings,
):
    """Where the operator API listens, how callers prove who they are, how to reach Quadcode, and
    (when ``WALLET_SWAPGATE_BASE_URL`` is set) how exchanges run: see
    :class:`exchange.settings.ExchangeSettings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_api_port: int = Field(
        default=18083, ge=1, le=65535, description="Port of the operator API."
    )
    operator_api_ops_port: int = Field(
        default=18086, ge=1, le=65535, description="Port of /health, /ready, /metrics."
    )
    operator_api_max_body_bytes: int = Field(
        default=8192, ge=1024, le=1_048_576, description="Larger bodies are refused (400)."
    )
    operator_api_timeout: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="Longest a trading-room or exchange request may take, retries included.",
    )

    def checked_signer(self) -> TokenSigner:
        """Our Quadcode signer, with an unreadable key reported as a configuration error."""
        try:
            return self.signer()
        except KeyFileError as exc:
            raise ConfigError(
                f"configuration error: WALLET_QUADCODE_PRIVATE_KEY_PATH: {exc}"
            ) from None
        except ValueError as exc:  # e.g. a renew margin longer than the token lifetime
            raise ConfigError(f"configuration error: WALLET_QUADCODE_TOKEN_*: {exc}") from None
