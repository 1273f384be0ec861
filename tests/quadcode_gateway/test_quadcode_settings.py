"""The gateway client's settings load through the project's one loader."""

from __future__ import annotations

import pytest

from quadcode_gateway import InternalBalanceClient, QuadcodeGatewayClient
from quadcode_gateway.settings import QuadcodeGatewaySettings
from quadcode_harness import Keys
from wallet_platform.config import ConfigError, load_settings


@pytest.mark.unit
async def test_settings_from_the_environment_build_both_clients(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALLET_QUADCODE_BASE_URL", "https://gateway.example.com")
    monkeypatch.setenv("WALLET_QUADCODE_ISSUER", "acme")
    monkeypatch.setenv("WALLET_QUADCODE_ENVIRONMENT", "integration")
    monkeypatch.setenv("WALLET_QUADCODE_PRIVATE_KEY_PATH", str(keys.ours_private))
    monkeypatch.setenv("WALLET_QUADCODE_MAX_ATTEMPTS", "5")
    settings = load_settings(QuadcodeGatewaySettings)
    signer = settings.signer()
    assert (signer.issuer, signer.audience) == ("acme", "integration")
    external, internal = settings.external_client(), settings.internal_client()
    assert isinstance(external, QuadcodeGatewayClient)
    assert isinstance(internal, InternalBalanceClient)
    assert external.transport.retry.max_attempts == 5
    assert external.transport.base_url == "https://gateway.example.com"
    await external.close()
    await internal.close()


@pytest.mark.unit
def test_bad_settings_name_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_QUADCODE_BASE_URL", "gateway.example.com")
    monkeypatch.setenv("WALLET_QUADCODE_ENVIRONMENT", "staging")
    monkeypatch.setenv("WALLET_QUADCODE_TOKEN_LIFETIME", "900")
    monkeypatch.delenv("WALLET_QUADCODE_ISSUER", raising=False)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(QuadcodeGatewaySettings)
    message = str(excinfo.value)
    for name in (
        "WALLET_QUADCODE_BASE_URL",
        "WALLET_QUADCODE_ENVIRONMENT",
        "WALLET_QUADCODE_TOKEN_LIFETIME",
        "WALLET_QUADCODE_ISSUER",
        "WALLET_QUADCODE_PRIVATE_KEY_PATH",
    ):
        assert name in message
