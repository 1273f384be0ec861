"""An exchange request, validated before anything is quoted, reserved or ordered (pure)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import orjson

from ledger_core.currencies import EXPONENTS
from ledger_core.money import AmountError, parse_amount
from ledger_core.requests import RequestError, check_id

REQUIRED = (
    "exchange_id",
    "source_balance_id",
    "target_balance_id",
    "amount",
    "currency_code",
    "target_currency_code",
)


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """Exchange ``amount`` of the source balance (in ``currency``) into the target balance.

    ``exchange_id`` is the caller's idempotency key: the same id with the same request is the
    same exchange; with another request it is refused (409 ``request_id_reused``).
    """

    customer_id: str
    exchange_id: str
    source_balance_id: str
    target_balance_id: str
    amount: str
    currency: str
    target_currency: str

    @property
    def minor_amount(self) -> int:
        return parse_amount(self.amount, self.currency)

    def fingerprint(self) -> bytes:
        """Equal requests have equal fingerprints; the amount counts by value."""
        parts = asdict(self)
        parts["amount"] = str(self.minor_amount)  # as text: wei amounts exceed 64 bits
        return hashlib.blake2b(orjson.dumps(parts), digest_size=16).digest()

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ExchangeRequest:
        return cls(**data)


def build_request(
    customer_id: str,
    exchange_id: str,
    source_balance_id: str,
    target_balance_id: str,
    amount: str,
    currency: str,
    target_currency: str,
) -> ExchangeRequest:
    """Check every field; raises :class:`RequestError` (a 400 code) naming the first bad one."""
    for value, name in (
        (customer_id, "customer_id"),
        (exchange_id, "exchange_id"),
        (source_balance_id, "source_balance_id"),
        (target_balance_id, "target_balance_id"),
    ):
        check_id(value, name)
    for code, name in ((currency, "currency_code"), (target_currency, "target_currency_code")):
        if code not in EXPONENTS:
            raise RequestError("unknown_currency", f"{name} {code!r} is not supported")
    if source_balance_id == target_balance_id:
        raise RequestError("invalid_field", "source and target must be different balances")
    if currency == target_currency:
        raise RequestError("exchange_not_supported", "an exchange needs two currencies")
    try:
        parse_amount(amount, currency)
    except AmountError as exc:
        raise RequestError(exc.code, exc.message) from None
    return ExchangeRequest(
        customer_id,
        exchange_id,
        source_balance_id,
        target_balance_id,
        amount,
        currency,
        target_currency,
    )


def parse_request(customer_id: str, body: bytes) -> ExchangeRequest:
    """The JSON body of ``POST /v1/customers/{customer_id}/exchanges``, validated."""
    check_id(customer_id, "customer_id")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("malformed_json", "the body must be a JSON object")
    unexpected = sorted(set(data) - set(REQUIRED))
    if unexpected:
        raise RequestError("invalid_field", f"unexpected fields: {', '.join(unexpected)}")
    for name in REQUIRED:
        if name not in data:
            raise RequestError("invalid_field", f"{name} is required")
        if not isinstance(data[name], str):
            raise RequestError("invalid_field", f"{name} must be a string")
    return build_request(customer_id, *(data[name] for name in REQUIRED))
