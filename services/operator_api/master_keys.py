"""The master keys that encrypt operator API secrets at rest (Fernet, several for rotation).

The server verifies HMACs, so it needs each key's secret in clear; the database holds only a
Fernet token of it. Master keys come from ``WALLET_OPERATOR_MASTER_KEYS_FILE`` (one key per
line, ``#`` comments allowed) or ``WALLET_OPERATOR_MASTER_KEYS`` (comma-separated), never from
the repository. The first key encrypts; every key decrypts. Rotation: put a new key first, run
``python -m operator_api master rotate`` (re-encrypts every secret with it), then drop the old.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from wallet_platform.config import ConfigError


class MasterKeyError(Exception):
    """A stored secret could not be decrypted with any configured master key."""


class MasterKeys:
    """Encrypts and decrypts API key secrets; the first key encrypts, all decrypt."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one master key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, secret: str) -> bytes:
        """The token stored for ``secret``."""
        return self._fernet.encrypt(secret.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        """The secret a stored token holds."""
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise MasterKeyError("no configured master key decrypts this secret") from None

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-encrypted with the first master key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise MasterKeyError("no configured master key decrypts this secret") from None


def parse_master_keys(text: str, *, separator: str, where: str) -> MasterKeys:
    """Master keys from a file's text (one a line) or the environment (comma-separated).

    Raises :class:`ConfigError` naming ``where`` (never a key) when one is not a Fernet key.
    """
    parts = [part.strip() for part in text.split(separator)]
    keys = [part.encode("ascii", "replace") for part in parts if part and not part.startswith("#")]
    if not keys:
        raise ConfigError(f"configuration error: {where} holds no master key")
    try:
        return MasterKeys(keys)
    except ValueError:
        raise ConfigError(
            f"configuration error: {where}: every master key must be a Fernet key "
            "(32 url-safe base64 bytes; make one with: python -m operator_api master new)"
        ) from None


def new_master_key() -> str:
    """A new master key (for a keys file or the environment)."""
    return Fernet.generate_key().decode("ascii")
