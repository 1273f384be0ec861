"""Operator API keys, the pure part: roles and what each may do, per-key settings, the bodies of
the key-management routes, and new key material (Swapgate API v2's formats).

A key has a role (``read_only``, ``operator`` or ``admin``) and, as in Swapgate, optional
``minMarkup``/``maxMarkup`` bounds (decimal strings, percent) for exchanges started with it.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from ledger_core.requests import RequestError
from swapgate import InvalidMarkup, MarkupPolicy
from swapgate.markup import SETTING_MAX_MARKUP, SETTING_MIN_MARKUP

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

READ_ONLY: Final = "read_only"
OPERATOR: Final = "operator"
ADMIN: Final = "admin"
ROLES: Final = (READ_ONLY, OPERATOR, ADMIN)

KEY_ROUTES: Final = "/v1/api-keys"
"""Key management: every method under it is for admins only (a key list is no read-only data)."""

READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

MAX_NAME_LENGTH: Final = 128
MAX_WHITELIST: Final = 64
SETTING_ROLE: Final = "role"
_SETTINGS_FIELDS: Final = frozenset({SETTING_ROLE, SETTING_MIN_MARKUP, SETTING_MAX_MARKUP})
_NOT_TEXT: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def role_allows(role: str, method: str, path: str) -> bool:
    """Whether a key of ``role`` may send ``method`` to ``path`` (a path under ``/v1/``).

    ``read_only`` reads; ``operator`` also writes, except keys; ``admin`` does everything.
    """
    if role == ADMIN:
        return True
    if path == KEY_ROUTES or path.startswith(KEY_ROUTES + "/"):
        return False
    if role == OPERATOR:
        return True
    return role == READ_ONLY and method.upper() in READ_METHODS


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's settings: its role and the markup bounds of exchanges it starts."""

    role: str = READ_ONLY
    min_markup: Decimal | None = None
    max_markup: Decimal | None = None

    def to_json(self) -> dict[str, str]:
        """The settings as the API shows and stores them (bounds as decimal strings)."""
        out = {SETTING_ROLE: self.role}
        if self.min_markup is not None:
            out[SETTING_MIN_MARKUP] = str(self.min_markup)
        if self.max_markup is not None:
            out[SETTING_MAX_MARKUP] = str(self.max_markup)
        return out

    def markup_policy(self, default: Decimal) -> MarkupPolicy:
        """The policy an exchange started with this key obeys; raises ``InvalidMarkup``
        (``MarkupOutOfBounds``) when ``default`` (the markup exchanges use) is outside it."""
        return MarkupPolicy(default=default, minimum=self.min_markup, maximum=self.max_markup)

    @classmethod
    def parse(cls, value: object) -> KeySettings:
        """Settings from a request body or the database; ``invalid_field`` when wrong."""
        if not isinstance(value, dict):
            raise RequestError("invalid_field", "settings must be an object")
        unexpected = sorted(set(value) - _SETTINGS_FIELDS)
        if unexpected:
            raise RequestError("invalid_field", f"unexpected settings: {', '.join(unexpected)}")
        role = value.get(SETTING_ROLE, READ_ONLY)
        if role not in ROLES:
            raise RequestError("invalid_field", f"settings.role must be one of {', '.join(ROLES)}")
        try:
            # Checks each bound is a decimal string in [0, 100) and that min <= max.
            policy = MarkupPolicy.from_key_settings(value)
        except InvalidMarkup as exc:
            raise RequestError("invalid_field", f"settings: {exc}") from None
        return cls(role, policy.minimum, policy.maximum)


def parse_name(value: object) -> str:
    """A key's name: 1 to 128 characters of printable text."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise RequestError("invalid_field", f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if not value.isprintable() and any(unicodedata.category(c) in _NOT_TEXT for c in value):
        raise RequestError("invalid_field", "name may hold no control or format characters")
    return value


def parse_network(text: str) -> Network:
    """One whitelist entry: an address (``127.0.0.1``, one host) or a CIDR without host bits
    (``10.0.0.0/8``; ``10.0.0.5/8`` is refused rather than silently widened)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        raise RequestError(
            "invalid_field", f"whiteListIp: {text[:64]!r} is not an IP address or CIDR"
        ) from None


def parse_whitelist(value: object) -> tuple[Network, ...]:
    """``whiteListIp``: 1 to 64 addresses or CIDRs (IPv4 or IPv6)."""
    if not isinstance(value, list) or not value or len(value) > MAX_WHITELIST:
        raise RequestError(
            "invalid_field", f"whiteListIp must be a list of 1 to {MAX_WHITELIST} addresses"
        )
    if not all(isinstance(item, str) for item in value):
        raise RequestError("invalid_field", "whiteListIp entries must be strings")
    networks: list[Network] = []
    for item in value:
        network = parse_network(item)
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def whitelist_json(networks: tuple[Network, ...]) -> list[str]:
    """The whitelist as the API shows it: CIDRs (``127.0.0.1/32``)."""
    return [str(network) for network in networks]


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("malformed_json", "the body must be a JSON object")
    return data


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError("invalid_field", f"{name} must be true or false")
    return value


@dataclass(frozen=True, slots=True)
class NewKey:
    """What ``POST /v1/api-keys`` asks for."""

    name: str
    white_list: tuple[Network, ...]
    is_active: bool
    settings: KeySettings


NEW_KEY_FIELDS: Final = ("name", "whiteListIp", "isActive", "settings")


def parse_new_key(body: bytes) -> NewKey:
    """The body ``{name, whiteListIp, isActive?, settings?}``: ``isActive`` defaults to true and
    ``settings`` to ``{"role": "read_only"}`` (least privilege)."""
    data = _object(body)
    unexpected = sorted(set(data) - set(NEW_KEY_FIELDS))
    if unexpected:
        raise RequestError("invalid_field", f"unexpected fields: {', '.join(unexpected)}")
    for required in ("name", "whiteListIp"):
        if required not in data:
            raise RequestError("invalid_field", f"{required} is required")
    return NewKey(
        name=parse_name(data["name"]),
        white_list=parse_whitelist(data["whiteListIp"]),
        is_active=_flag(data.get("isActive", True), "isActive"),
        settings=KeySettings.parse(data.get("settings", {})),
    )


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """What ``PATCH /v1/api-keys/{apiId}`` changes; ``None`` leaves a field as it is."""

    name: str | None = None
    white_list: tuple[Network, ...] | None = None
    is_active: bool | None = None
    settings: KeySettings | None = None


def parse_key_changes(body: bytes) -> KeyChanges:
    """The body of a PATCH: any of ``name``, ``whiteListIp``, ``isActive``, ``settings`` (whole
    settings, replacing the old ones), at least one."""
    data = _object(body)
    unexpected = sorted(set(data) - set(NEW_KEY_FIELDS))
    if unexpected:
        raise RequestError("invalid_field", f"unexpected fields: {', '.join(unexpected)}")
    if not data:
        raise RequestError("invalid_field", f"give at least one of {', '.join(NEW_KEY_FIELDS)}")
    return KeyChanges(
        name=parse_name(data["name"]) if "name" in data else None,
        white_list=parse_whitelist(data["whiteListIp"]) if "whiteListIp" in data else None,
        is_active=_flag(data["isActive"], "isActive") if "isActive" in data else None,
        settings=KeySettings.parse(data["settings"]) if "settings" in data else None,
    )


def new_key_material() -> tuple[str, str]:
    """A new ``(publicKey, secretKey)``: base64 of 32 random bytes and hex of 32 random bytes,
    Swapgate's formats. The HMAC key is the secret's *text* (as in Swapgate's example code)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii"), secrets.token_hex(32)
