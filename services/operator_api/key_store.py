"""Operator API keys in Postgres (``operator_api_keys``): create, read, change, rotate.

Secrets are stored as Fernet tokens (:mod:`operator_api.master_keys`); nothing here returns a
secret in clear except :meth:`StoredKey.secret`, which the authentication path calls.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from operator_api.api_keys import (
    KeyChanges,
    KeySettings,
    Network,
    NewKey,
    new_key_material,
    whitelist_json,
)
from operator_api.master_keys import MasterKeys

_COLUMNS = """api_id, name, public_key, secret, is_active, white_list_ip,
    settings::text AS settings, created_at, updated_at, created_by"""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One key as stored (its secret still encrypted)."""

    api_id: uuid.UUID
    name: str
    public_key: str
    secret_token: bytes
    is_active: bool
    white_list: tuple[Network, ...]
    settings: KeySettings
    created_at: datetime
    updated_at: datetime
    created_by: str

    def secret(self, master: MasterKeys) -> str:
        """The secret key in clear (for HMAC verification only)."""
        return master.decrypt(self.secret_token)

    def allows_address(self, address: object) -> bool:
        """Whether ``address`` (an ``ipaddress`` address) is inside the key's whitelist."""
        return any(address in network for network in self.white_list)

    def view(self) -> dict[str, Any]:
        """The key as the API lists it: never the secret."""
        return {
            "apiId": str(self.api_id),
            "name": self.name,
            "isActive": self.is_active,
            "publicKey": self.public_key,
            "whiteListIp": whitelist_json(self.white_list),
            "settings": self.settings.to_json(),
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "createdBy": self.created_by,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key(row: asyncpg.Record) -> StoredKey:
    return StoredKey(
        api_id=row["api_id"],
        name=row["name"],
        public_key=row["public_key"],
        secret_token=bytes(row["secret"]),
        is_active=row["is_active"],
        white_list=tuple(row["white_list_ip"]),
        settings=KeySettings.parse(orjson.loads(row["settings"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by=row["created_by"],
    )


async def create_key(
    conn: asyncpg.Connection, new: NewKey, master: MasterKeys, created_by: str
) -> tuple[StoredKey, str]:
    """Store a new key; returns it and its secret key, which is never shown again."""
    public_key, secret_key = new_key_material()
    moment = datetime.now(UTC)
    row = await conn.fetchrow(
        f"""INSERT INTO operator_api_keys (api_id, name, public_key, secret, is_active,
               white_list_ip, settings, created_at, updated_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $8, $9)
           RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        new.name,
        public_key,
        master.encrypt(secret_key),
        new.is_active,
        list(new.white_list),
        orjson.dumps(new.settings.to_json()).decode(),
        moment,
        created_by,
    )
    assert row is not None
    return _key(row), secret_key


async def key_by_public_key(
    conn: asyncpg.Connection | asyncpg.Pool, public_key: str
) -> StoredKey | None:
    """The key with this public key, active or not."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM operator_api_keys WHERE public_key = $1", public_key
    )
    return None if row is None else _key(row)


async def key_by_id(conn: asyncpg.Connection | asyncpg.Pool, api_id: uuid.UUID) -> StoredKey | None:
    """The key with this id."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM operator_api_keys WHERE api_id = $1", api_id)
    return None if row is None else _key(row)


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[StoredKey]:
    """Every key, oldest first."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM operator_api_keys ORDER BY created_at, api_id")
    return [_key(row) for row in rows]


def changed_fields(before: StoredKey, after: StoredKey) -> dict[str, Any]:
    """What a change changed, for the audit: ``{field: {"from": ..., "to": ...}}`` in the API's
    names. Never a secret (a change can not touch one)."""
    out: dict[str, Any] = {}
    for name, old, new in (
        ("name", before.name, after.name),
        ("isActive", before.is_active, after.is_active),
        ("whiteListIp", whitelist_json(before.white_list), whitelist_json(after.white_list)),
        ("settings", before.settings.to_json(), after.settings.to_json()),
    ):
        if old != new:
            out[name] = {"from": old, "to": new}
    return out


async def change_key(
    conn: asyncpg.Connection, api_id: uuid.UUID, changes: KeyChanges
) -> tuple[StoredKey, StoredKey] | None:
    """Apply ``changes``; returns the key before and after, or None for an unknown key."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM operator_api_keys WHERE api_id = $1 FOR UPDATE", api_id
        )
        if row is None:
            return None
        before = _key(row)
        settings = changes.settings or before.settings
        white_list = before.white_list if changes.white_list is None else changes.white_list
        updated = await conn.fetchrow(
            f"""UPDATE operator_api_keys
                SET name = $2, is_active = $3, white_list_ip = $4, settings = $5::jsonb,
                    updated_at = $6
                WHERE api_id = $1 RETURNING {_COLUMNS}""",
            api_id,
            before.name if changes.name is None else changes.name,
            before.is_active if changes.is_active is None else changes.is_active,
            list(white_list),
            orjson.dumps(settings.to_json()).decode(),
            datetime.now(UTC),
        )
        assert updated is not None
        return before, _key(updated)


async def rotate_secrets(conn: asyncpg.Connection, master: MasterKeys) -> int:
    """Re-encrypt every stored secret with the first master key, in one transaction (all or
    nothing: a secret no configured key decrypts stops the rotation). Returns how many."""
    async with conn.transaction():
        rows = await conn.fetch("SELECT api_id, secret FROM operator_api_keys FOR UPDATE")
        for row in rows:
            await conn.execute(
                "UPDATE operator_api_keys SET secret = $2 WHERE api_id = $1",
                row["api_id"],
                master.rotate(bytes(row["secret"])),
            )
    return len(rows)
