"""Settings of the Quadcode gateway client, read by the project's one settings loader.

Environment variables (prefix ``WALLET_``), for example::

    WALLET_QUADCODE_BASE_URL=https://<gateway host Quadcode gave us for this environment>
    WALLET_QUADCODE_ISSUER=<iss value Quadcode assigned us>
    WALLET_QUADCODE_ENVIRONMENT=sandbox            # production | integration | sandbox
    WALLET_QUADCODE_PRIVATE_KEY_PATH=/run/secrets/quadcode/private.pem

A service that talks to Quadcode mixes :class:`QuadcodeGatewaySettings` into its own settings
class and loads it with ``wallet_platform.config.load_settings``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from quadcode_gateway.client import QuadcodeGatewayClient
from quadcode_gateway.internal import InternalBalanceClient
from quadcode_gateway.tokens import MAX_LIFETIME_SECONDS, Environment, TokenSigner
from quadcode_gateway.transport import RetryPolicy
from wallet_platform.config import ENV_PREFIX


class QuadcodeGatewaySettings(BaseSettings):
    """Where Quadcode's gateway is and how we sign for it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    quadcode_base_url: str = Field(
        pattern=r"^https?://", description="Gateway base URL of the environment, no path."
    )
    quadcode_issuer: str = Field(min_length=1, description="The iss Quadcode assigned us.")
    quadcode_environment: Environment = Field(description="Also the aud claim.")
    quadcode_private_key_path: str = Field(
        min_length=1, description="PEM EC P-256 private key; Quadcode holds the public half."
    )
    quadcode_request_timeout: float = Field(default=5.0, gt=0, le=60)
    quadcode_connect_timeout: float = Field(default=2.0, gt=0, le=60)
    quadcode_token_lifetime: int = Field(default=300, gt=0, le=MAX_LIFETIME_SECONDS)
    quadcode_token_renew_margin: int = Field(default=30, ge=0)
    quadcode_max_attempts: int = Field(default=3, ge=1, le=10)
    quadcode_max_retry_after: float = Field(default=5.0, ge=0, le=60)

    def signer(self) -> TokenSigner:
        """The token signer these settings describe (reads the key file)."""
        return TokenSigner.from_pem_file(
            self.quadcode_private_key_path,
            issuer=self.quadcode_issuer,
            audience=self.quadcode_environment,
            lifetime=self.quadcode_token_lifetime,
            renew_margin=self.quadcode_token_renew_margin,
        )

    def retry_policy(self) -> RetryPolicy:
        """The retry bounds these settings describe."""
        return RetryPolicy(
            max_attempts=self.quadcode_max_attempts,
            max_retry_after=self.quadcode_max_retry_after,
        )

    def external_client(self) -> QuadcodeGatewayClient:
        """A client of the external-balance API (create inside the running event loop's task)."""
        return QuadcodeGatewayClient.create(
            base_url=self.quadcode_base_url,
            signer=self.signer(),
            request_timeout=self.quadcode_request_timeout,
            connect_timeout=self.quadcode_connect_timeout,
            retry=self.retry_policy(),
        )

    def internal_client(self) -> InternalBalanceClient:
        """A client of the internal-balance API, sharing nothing with the external one."""
        return InternalBalanceClient.create(
            base_url=self.quadcode_base_url,
            signer=self.signer(),
            request_timeout=self.quadcode_request_timeout,
            connect_timeout=self.quadcode_connect_timeout,
            retry=self.retry_policy(),
        )
