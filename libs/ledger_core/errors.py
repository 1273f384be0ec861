"""Every error the wallet answers with: code, HTTP status and meaning. One table, used everywhere.

The error table in docs/errors.md is tested against this module (tests/unit/test_docs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One error: its wire code, its HTTP status, and what it means for the caller."""

    code: str
    status: int
    meaning: str


_TABLE = (
    # 400: the request itself is wrong; nothing was written and nothing will be.
    ErrorCode("malformed_json", 400, "The body is not a JSON object."),
    ErrorCode("invalid_field", 400, "A field is missing, has the wrong type, or is unexpected."),
    ErrorCode(
        "invalid_amount", 400, "Amount is not a positive decimal string the currency allows."
    ),
    ErrorCode(
        "amount_too_large",
        400,
        "Amount, or the balance it would make, is above the currency's ceiling.",
    ),
    ErrorCode("unknown_currency", 400, "The currency code is not supported."),
    ErrorCode("currency_mismatch", 400, "The currency is not the balance's currency."),
    ErrorCode("body_too_large", 400, "The request body exceeds the size limit."),
    ErrorCode(
        "invalid_id",
        400,
        "A customer, balance or request id is empty, too long, or holds a character ids may not"
        " hold.",
    ),
    # 402: a debit the balance cannot cover. Stored: the same request_id answers 402 forever.
    ErrorCode("insufficient_funds", 402, "The balance's available amount is below the debit."),
    # 403: authentication and network policy. Never stored.
    ErrorCode("missing_token", 403, "No Authorization: Bearer token."),
    ErrorCode(
        "invalid_token", 403, "The token is malformed, badly signed or uses another algorithm."
    ),
    ErrorCode("token_expired", 403, "The token's exp is in the past."),
    ErrorCode("token_not_yet_valid", 403, "The token's iat is in the future."),
    ErrorCode("token_lifetime_too_long", 403, "exp - iat is more than 600 seconds."),
    ErrorCode("invalid_issuer", 403, "iss is not the expected issuer."),
    ErrorCode("invalid_audience", 403, "aud is not this deployment's environment."),
    ErrorCode("ip_not_allowed", 403, "The caller's IP address is not in the allowlist."),
    # 404: stored, so a request that once saw 404 keeps seeing it.
    ErrorCode("customer_not_found", 404, "No such customer."),
    ErrorCode("balance_not_found", 404, "No such balance for this customer."),
    ErrorCode("route_not_found", 404, "No such endpoint."),
    ErrorCode("method_not_allowed", 405, "The endpoint does not take this method."),
    # 409: conflicts.
    ErrorCode("request_id_reused", 409, "The request_id was used before with a different body."),
    ErrorCode("customer_exists", 409, "A customer with this id exists already."),
    ErrorCode("balance_exists", 409, "The customer has a balance with this id already."),
    ErrorCode("balance_not_empty", 409, "The operation needs an empty balance."),
    # 451: the customer is blocked. Stored like any outcome.
    ErrorCode("customer_blocked", 451, "The customer is blocked."),
    # 5xx: our side. The command may still be applied (once); retry with the same request_id.
    ErrorCode("internal_error", 500, "Unexpected server error; retry with the same request_id."),
    ErrorCode("ledger_timeout", 503, "The ledger did not answer in time; retry the same request."),
    ErrorCode("unavailable", 503, "A dependency is unavailable; retry the same request later."),
    # Appended (the table only grows): the operator API's static shared secret was wrong.
    ErrorCode("invalid_credentials", 403, "The operator API credentials are wrong."),
    # Exchanges (Swapgate).
    ErrorCode(
        "exchange_not_open",
        409,
        "The exchange has no open reservation (unknown, or already settled or voided).",
    ),
    ErrorCode("exchange_not_found", 404, "No such exchange for this customer."),
    ErrorCode(
        "exchange_not_supported", 400, "The currency pair can not be exchanged here (no route)."
    ),
    ErrorCode("amount_out_of_range", 422, "The amount is outside the exchange's deposit limits."),
    # The ledger refused a command it can never apply (text or an amount Postgres can not hold,
    # or a deterministic database refusal): a final answer, the same on every retry.
    ErrorCode(
        "command_refused",
        400,
        "The ledger can not store this request; retrying it gives the same answer.",
    ),
    # The operator API's ledger reads.
    ErrorCode("entry_not_found", 404, "No such journal entry."),
    # Operator API keys (Swapgate API v2's signed requests): each refusal its own 403.
    ErrorCode(
        "malformed_signature_headers",
        403,
        "x-api-public-key, x-api-timestamp or x-api-signature is missing, repeated or malformed.",
    ),
    ErrorCode("unknown_api_key", 403, "No API key has this public key."),
    ErrorCode("api_key_inactive", 403, "The API key is deactivated."),
    ErrorCode("ip_not_whitelisted", 403, "The caller's IP address is not in the key's whitelist."),
    ErrorCode(
        "timestamp_out_of_window", 403, "x-api-timestamp is too far from the server's clock."
    ),
    ErrorCode("signature_mismatch", 403, "The signature does not match the request's raw body."),
    ErrorCode("signature_replayed", 403, "This signature was used before within the window."),
    ErrorCode("role_forbidden", 403, "The API key's role does not allow this request."),
    ErrorCode(
        "markup_not_allowed", 403, "The exchange markup is outside the key's minMarkup..maxMarkup."
    ),
    ErrorCode("api_key_not_found", 404, "No such API key."),
    # Reversals and four eyes on money moved by hand (docs/operator-api.md).
    ErrorCode(
        "entry_not_reversible",
        409,
        "Only a customer's deposit or withdrawal can be reversed (not a reversal, a trade or an"
        " exchange).",
    ),
    ErrorCode(
        "entry_already_reversed", 409, "The entry was reversed already; it is never reversed twice."
    ),
    ErrorCode("adjustment_not_found", 404, "No such pending adjustment."),
    ErrorCode("adjustment_not_pending", 409, "The adjustment was approved or rejected already."),
    ErrorCode(
        "maker_cannot_approve", 403, "The key that asked for the adjustment can not approve it."
    ),
    ErrorCode("api_key_required", 403, "This request needs an authenticated operator API key."),
    # Dead letters and operator jobs (docs/operator-jobs.md).
    ErrorCode("dead_letter_not_found", 404, "No such record on the dead-letter topic."),
    ErrorCode("dead_letter_redriven", 409, "The dead letter was redriven already."),
    ErrorCode("dead_letter_discarded", 409, "The dead letter was discarded already."),
    ErrorCode(
        "dead_letter_outcome_stored",
        409,
        "The ledger stored an answer for this command's request; a redrive would only repeat it.",
    ),
    ErrorCode(
        "dead_letter_undecodable",
        409,
        "The dead letter still does not decode; a redrive would only park it again.",
    ),
    ErrorCode("job_not_found", 404, "No such operator job."),
    ErrorCode("job_already_active", 409, "A job of this type is queued or running already."),
    ErrorCode("job_finished", 409, "The job has finished; it can not be cancelled."),
    ErrorCode(
        "reconciler_unreachable",
        503,
        "The reconciler did not answer, or answered something that is not its report.",
    ),
)

ERRORS: dict[str, ErrorCode] = {e.code: e for e in _TABLE}


def error_body(code: str, message: str | None = None) -> bytes:
    """The JSON error body ``{"error": code, "message": text}`` for a known ``code``."""
    err = ERRORS[code]
    return orjson.dumps({"error": err.code, "message": message or err.meaning})


def status_of(code: str) -> int:
    """The HTTP status for an error code."""
    return ERRORS[code].status
