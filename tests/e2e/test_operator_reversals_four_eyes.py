"""Reversals and four eyes end to end: the operator API as a process (signed keys, four eyes on
USD at 1000.00) in front of a real ledger process, Postgres and Kafka.

A reversal is applied once and refused twice (the balance moves once), a reversal of a reversal
is refused, the two entries are linked both ways; a deposit over the threshold waits for a
second key, is refused for its maker, applied once however often it is approved, a rejected one
is never applied, and deposits below the threshold are applied at once. The ledger audit passes
at the end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import asyncpg
import pytest

from ledger.audit import audit
from operator_client import OperatorClient
from operator_keys_stack import client_for, create_key, write_master_keys
from quadcode_gateway import generate_keypair
from wallet_stack import Stack, wait_ready

pytestmark = pytest.mark.e2e


@dataclass
class Operators:
    """Two operator keys (maker and checker) and the admin that made them."""

    admin: OperatorClient
    maker: OperatorClient
    checker: OperatorClient
    maker_id: str
    checker_id: str


@pytest.fixture(scope="module")
async def operators(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Operators]:
    directory = tmp_path_factory.mktemp("four-eyes")
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    service = stack.add(
        "operator_api",
        "WALLET_OPERATOR_API_PORT",
        WALLET_OPERATOR_MASTER_KEYS_FILE=str(write_master_keys(directory)),
        WALLET_QUADCODE_BASE_URL="http://127.0.0.1:9",
        WALLET_QUADCODE_ISSUER="test",
        WALLET_QUADCODE_ENVIRONMENT="sandbox",
        WALLET_QUADCODE_PRIVATE_KEY_PATH=str(directory / "ours-private.pem"),
        WALLET_OPERATOR_API_LEDGER_TIMEOUT="15",
        WALLET_OPERATOR_FOUR_EYES_THRESHOLDS="USD=1000.00",
    )
    create_key(service.env, directory / "admin.json", base_url=service.url)
    service.start()
    await wait_ready(service, timeout=60)
    admin = client_for(directory / "admin.json")
    made = []
    for name in ("maker", "checker"):
        body = {"name": name, "whiteListIp": ["127.0.0.1"], "settings": {"role": "operator"}}
        status, key = await admin.post("/v1/api-keys", body)
        assert status == 201, key
        made.append((OperatorClient(service.url, key["publicKey"], key["secretKey"]), key))
    (maker, maker_key), (checker, checker_key) = made
    try:
        yield Operators(admin, maker, checker, maker_key["apiId"], checker_key["apiId"])
    finally:
        for client in (admin, maker, checker):
            await client.close()
        service.stop()


async def funded(api: OperatorClient, amount: str = "") -> tuple[str, str, str]:
    """A new customer with a USD balance, and the entry id of its deposit of ``amount``."""
    customer = "fe-" + uuid.uuid4().hex[:10]
    balance = f"{customer}_USD"
    assert (await api.post("/v1/customers", {"customerId": customer}))[0] == 201
    opened = {"balanceId": balance, "currency": "USD", "requestId": "open"}
    assert (await api.post(f"/v1/customers/{customer}/balances", opened))[0] == 201
    entry = ""
    if amount:
        status, body = await api.post(
            money_path(customer, balance), {"requestId": "fund", "amount": amount}
        )
        assert status == 201, body
        entry = await entry_of(api, customer, "fund")
    return customer, balance, entry


def money_path(customer: str, balance: str, kind: str = "deposits") -> str:
    return f"/v1/customers/{customer}/balances/{balance}/{kind}"


async def entry_of(api: OperatorClient, customer: str, request_id: str) -> str:
    status, found = await api.get(f"/v1/entries?customerId={customer}&requestId={request_id}")
    assert status == 200 and len(found["entries"]) == 1, found
    entry_id: str = found["entries"][0]["entryId"]
    return entry_id


async def total(api: OperatorClient, customer: str, balance: str) -> str:
    status, view = await api.get(f"/v1/customers/{customer}/balances/{balance}")
    assert status == 200, view
    amount: str = view["total"]
    return amount


async def test_a_reversal_is_applied_once_and_refused_twice(operators: Operators) -> None:
    api = operators.maker
    customer, balance, original = await funded(api, "150.00")
    reverse = f"/v1/entries/{original}/reversal"
    first = {"requestId": "fix-1", "comment": "deposited to the wrong customer"}
    status, body = await api.post(reverse, first)
    assert status == 201, body
    assert (body["kind"], body["reverses"], body["amount"]) == (
        "deposit_reversal",
        original,
        "150.00",
    )
    reversal = body["entry_id"]
    # The same request again replays the stored answer: nothing moves again.
    assert await api.post(reverse, first) == (201, body)
    # A second and a third reversal of the same entry are refused, by either key.
    for client, attempt in (
        (api, {"requestId": "fix-2", "comment": "again"}),
        (operators.checker, {"comment": "deposited to the wrong customer"}),
    ):
        status, refused = await client.post(reverse, attempt)
        assert (status, refused["error"], refused["reversedBy"]) == (
            409,
            "entry_already_reversed",
            reversal,
        )
    assert await total(api, customer, balance) == "0.00"
    # Linked both ways, and both lines are on the statement.
    status, entry = await api.get(f"/v1/entries/{original}")
    assert (status, entry["reversedBy"], entry["reverses"]) == (200, reversal, None)
    status, entry = await api.get(f"/v1/entries/{reversal}")
    assert (entry["kind"], entry["reverses"], entry["requestId"], entry["reversedBy"]) == (
        "deposit_reversal",
        original,
        original,
        None,
    )
    status, statement = await api.get(money_path(customer, balance, "statement"))
    assert [(line["kind"], line["amount"]) for line in statement["lines"]] == [
        ("deposit", "150.00"),
        ("deposit_reversal", "-150.00"),
    ]
    # A reversal is not reversible, nor is a trade; an unknown entry is a 404.
    status, refused = await api.post(f"/v1/entries/{reversal}/reversal", {"comment": "undo"})
    assert (status, refused["error"]) == (409, "entry_not_reversible")
    status, refused = await api.post(f"/v1/entries/{uuid.uuid4()}/reversal", {"comment": "x"})
    assert (status, refused["error"]) == (404, "entry_not_found")


async def test_a_deposits_reversal_the_balance_can_not_cover_is_402_and_stays_possible(
    operators: Operators,
) -> None:
    api = operators.maker
    customer, balance, original = await funded(api, "100.00")
    status, _ = await api.post(
        money_path(customer, balance, "withdrawals"), {"requestId": "w", "amount": "60"}
    )
    assert status == 201
    reverse = f"/v1/entries/{original}/reversal"
    status, refused = await api.post(reverse, {"comment": "wrong customer"})
    assert (status, refused["error"]) == (402, "insufficient_funds")
    assert (await api.post(money_path(customer, balance), {"requestId": "top-up", "amount": "60"}))[
        0
    ] == 201
    status, body = await api.post(reverse, {"comment": "wrong customer"})
    assert (status, body["balance_current_amount"]) == (201, "0.00")


async def test_a_withdrawals_reversal_puts_the_money_back(operators: Operators) -> None:
    api = operators.maker
    customer, balance, _ = await funded(api, "100.00")
    status, _ = await api.post(
        money_path(customer, balance, "withdrawals"), {"requestId": "w", "amount": "30"}
    )
    assert status == 201
    withdrawal = await entry_of(api, customer, "w")
    status, body = await api.post(f"/v1/entries/{withdrawal}/reversal", {"comment": "bounced"})
    assert (status, body["kind"]) == (201, "withdrawal_reversal")
    assert await total(api, customer, balance) == "100.00"


async def test_a_deposit_below_the_threshold_is_applied_at_once(operators: Operators) -> None:
    api = operators.maker
    customer, balance, _ = await funded(api)
    status, body = await api.post(
        money_path(customer, balance), {"requestId": "d", "amount": "999.99"}
    )
    assert (status, body["balance_current_amount"]) == (201, "999.99")


async def test_a_deposit_over_the_threshold_waits_for_a_second_key(operators: Operators) -> None:
    maker, checker = operators.maker, operators.checker
    customer, balance, _ = await funded(maker)
    asked = {"requestId": "big-1", "amount": "1000", "comment": "wire 7781"}
    status, held = await maker.post(money_path(customer, balance), asked)
    assert (status, held["status"], held["kind"], held["amount"]) == (
        202,
        "pending",
        "deposit",
        "1000.00",
    )
    assert (held["maker"], held["outcome"]) == (operators.maker_id, None)
    adjustment = held["adjustmentId"]
    # The same request again is the same adjustment; another under its requestId is refused.
    assert (await maker.post(money_path(customer, balance), asked))[1]["adjustmentId"] == adjustment
    status, refused = await maker.post(money_path(customer, balance), asked | {"amount": "2000"})
    assert (status, refused["error"]) == (409, "request_id_reused")
    assert await total(maker, customer, balance) == "0.00"
    status, listed = await checker.get("/v1/adjustments?status=pending&limit=1000")
    assert status == 200 and adjustment in [a["adjustmentId"] for a in listed["adjustments"]]
    # Its maker can not approve it.
    status, refused = await maker.post(f"/v1/adjustments/{adjustment}/approve", {})
    assert (status, refused["error"]) == (403, "maker_cannot_approve")
    assert await total(maker, customer, balance) == "0.00"
    # The checker approves it twice at once: one sends, the other finds it decided.
    answers = await asyncio.gather(
        checker.post(f"/v1/adjustments/{adjustment}/approve", {}),
        checker.post(f"/v1/adjustments/{adjustment}/approve", {}),
    )
    assert sorted(status for status, _ in answers) == [200, 409]
    done = next(body for status, body in answers if status == 200)
    assert (done["status"], done["checker"], done["outcome"]["status"]) == (
        "approved",
        operators.checker_id,
        201,
    )
    assert done["outcome"]["body"]["balance_current_amount"] == "1000.00"
    status, again = await operators.admin.post(f"/v1/adjustments/{adjustment}/approve", {})
    assert (status, again["error"], again["adjustment"]["status"]) == (
        409,
        "adjustment_not_pending",
        "approved",
    )
    assert await total(maker, customer, balance) == "1000.00"
    assert await operators.admin.get(f"/v1/adjustments/{adjustment}") == (200, done)
    # One entry, made with the maker's requestId.
    status, found = await maker.get(f"/v1/entries?customerId={customer}&requestId=big-1")
    assert len(found["entries"]) == 1 and found["entries"][0]["amount"] == "1000.00"


async def test_a_rejected_adjustment_is_never_applied(operators: Operators) -> None:
    maker, checker = operators.maker, operators.checker
    customer, balance, _ = await funded(maker)
    asked = {"requestId": "big-2", "amount": "5000.00"}
    status, held = await maker.post(money_path(customer, balance), asked)
    assert status == 202
    adjustment = held["adjustmentId"]
    status, rejected = await checker.post(
        f"/v1/adjustments/{adjustment}/reject", {"reason": "no wire"}
    )
    assert (status, rejected["status"], rejected["reason"]) == (200, "rejected", "no wire")
    status, refused = await checker.post(f"/v1/adjustments/{adjustment}/approve", {})
    assert (status, refused["error"]) == (409, "adjustment_not_pending")
    # The maker's retry finds the rejected adjustment; nothing reaches the ledger.
    status, again = await maker.post(money_path(customer, balance), asked)
    assert (status, again["status"]) == (202, "rejected")
    assert await total(maker, customer, balance) == "0.00"
    status, found = await maker.get(f"/v1/entries?customerId={customer}&requestId=big-2")
    assert found["entries"] == []


async def test_a_large_reversal_waits_for_a_second_key_too(
    operators: Operators, stack: Stack
) -> None:
    maker, checker = operators.maker, operators.checker
    customer, balance, _ = await funded(maker)
    status, held = await maker.post(
        money_path(customer, balance), {"requestId": "big-3", "amount": "1200"}
    )
    assert status == 202
    status, done = await checker.post(f"/v1/adjustments/{held['adjustmentId']}/approve", {})
    assert (status, done["status"]) == (200, "approved")
    original = await entry_of(maker, customer, "big-3")
    status, pending = await maker.post(
        f"/v1/entries/{original}/reversal", {"comment": "duplicate wire"}
    )
    assert (status, pending["kind"], pending["reverses"]) == (202, "reversal", original)
    assert await total(maker, customer, balance) == "1200.00"
    approve = f"/v1/adjustments/{pending['adjustmentId']}/approve"
    status, done = await checker.request("POST", approve, raw=b"")  # an empty body
    assert (status, done["status"], done["outcome"]["body"]["kind"]) == (
        200,
        "approved",
        "deposit_reversal",
    )
    assert await total(maker, customer, balance) == "0.00"
    status, entry = await maker.get(f"/v1/entries/{original}")
    assert entry["reversedBy"] == done["outcome"]["body"]["entry_id"]
    # A second reversal of it is refused before anything is held.
    status, refused = await checker.post(f"/v1/entries/{original}/reversal", {"comment": "again"})
    assert (status, refused["error"]) == (409, "entry_already_reversed")
    conn = await asyncpg.connect(stack.dsn)
    try:
        # The projection follows facts asynchronously; its check belongs to its own tests.
        result = await audit(conn, include_projection=False)
    finally:
        await conn.close()
    assert result.ok, result.failures


async def test_signed_balance_reads_and_block_unblock_go_through_the_operator_api(
    operators: Operators,
) -> None:
    api = operators.maker
    customer, balance, _ = await funded(api, "150.00")
    after_deposit = quote(datetime.now(UTC).isoformat())
    status, listed = await api.get(f"/v1/customers/{customer}/balances")
    assert status == 200, listed
    assert [(b["balanceId"], b["total"]) for b in listed["balances"]] == [(balance, "150.00")]
    base = f"/v1/customers/{customer}/balances/{balance}"
    status, at = await api.get(f"{base}/at?time={after_deposit}")
    assert (status, at["balance"], at["seq"]) == (200, "150.00", 1), at
    status, before = await api.get(f"{base}/at?time={quote('2000-01-01T00:00:00+00:00')}")
    assert (status, before["balance"]) == (200, "0.00"), before

    status, body = await api.post(f"/v1/customers/{customer}/block", {"requestId": "b-1"})
    assert status == 200, body
    assert (await api.get(f"/v1/customers/{customer}"))[1]["blocked"] is True
    # Blocking stops Quadcode only: an operator's withdrawal still applies.
    status, paid = await api.post(
        money_path(customer, balance, "withdrawals"), {"requestId": "w-1", "amount": "1.00"}
    )
    assert status == 201, paid
    status, body = await api.post(f"/v1/customers/{customer}/unblock", {"requestId": "u-1"})
    assert status == 200, body
    assert (await api.get(f"/v1/customers/{customer}"))[1]["blocked"] is False
    status, paid = await api.post(
        money_path(customer, balance, "withdrawals"), {"requestId": "w-2", "amount": "1.00"}
    )
    assert status == 201, paid
    assert await total(api, customer, balance) == "148.00"
