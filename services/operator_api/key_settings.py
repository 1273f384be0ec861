"""Settings of operator API keys (environment prefix ``WALLET_``): the master keys that encrypt
secrets at rest, the signature window, the key cache, and trusted proxies.

A base of :class:`operator_api.settings.OperatorApiSettings`; on its own it is what the key
CLI (``python -m operator_api keys|master|audit``) needs: the database and the master keys.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from operator_api.master_keys import MasterKeys, parse_master_keys
from wallet_platform.config import ENV_PREFIX, CommonSettings, ConfigError, read_secret
from wallet_platform.http import cidrs


class OperatorKeySettings(CommonSettings):
    """How operator API keys are kept and checked."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_master_keys_file: str = Field(
        default="",
        description="File of Fernet master keys that encrypt API key secrets at rest, one a "
        "line; the first encrypts, all decrypt (rotation).",
    )
    operator_master_keys: str = Field(
        default="",
        repr=False,
        description="Alternatively, the master keys themselves, comma-separated.",
    )
    operator_signature_window_ms: int = Field(
        default=30_000,
        ge=1000,
        le=300_000,
        description="A signed request's x-api-timestamp may be this far from our clock, either "
        "way; a signature is refused as a replay within it.",
    )
    operator_key_cache_ttl_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="How long a key read from the database is trusted in memory: a "
        "deactivation or whitelist change takes effect within it.",
    )
    operator_api_trusted_proxies: str = Field(
        default="",
        description="Comma-separated CIDRs of proxies whose X-Forwarded-For names the caller "
        "(whose IP a key's whitelist must hold).",
    )

    def master_keys(self) -> MasterKeys:
        """The configured master keys; a :class:`ConfigError` when none or a bad one is set."""
        if self.operator_master_keys_file:
            text = read_secret(self.operator_master_keys_file, None, "the master keys file")
            return parse_master_keys(
                text.decode("ascii", "replace"),
                separator="\n",
                where="WALLET_OPERATOR_MASTER_KEYS_FILE",
            )
        if self.operator_master_keys.strip():
            return parse_master_keys(
                self.operator_master_keys, separator=",", where="WALLET_OPERATOR_MASTER_KEYS"
            )
        raise ConfigError(
            "configuration error: the operator API master keys are required "
            "(WALLET_OPERATOR_MASTER_KEYS_FILE or WALLET_OPERATOR_MASTER_KEYS; make one with "
            "python -m operator_api master new)"
        )

    def trusted_proxies(self) -> list[str]:
        """The trusted proxies' CIDRs."""
        return cidrs(self.operator_api_trusted_proxies)
