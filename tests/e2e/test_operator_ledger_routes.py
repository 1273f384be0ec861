"""The operator API's ledger routes against a real ledger process, Postgres and Kafka.

The routes run on an app built here with ``add_ledger_routes`` alone (no authentication
middleware: signed operator keys are tested on their own), pointed at the stack's database and
topics; writes go through ``ledger.commands`` to the stack's ledger like every other write.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ledger_core.commands import ExchangeReserve, ExchangeSettle
from operator_api.ledger_routes import add_ledger_routes
from operator_api.ledger_settings import OperatorLedgerSettings
from wallet_clients import Operator, Wallet
from wallet_platform.http import json_errors_middleware
from wallet_stack import Stack

pytestmark = pytest.mark.e2e

Api = TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[Api]:
    settings = OperatorLedgerSettings(
        pg_dsn=stack.dsn,
        kafka_bootstrap=stack.kafka,
        topic_prefix=stack.prefix,
        operator_api_reply_partition=5,
        operator_api_ledger_timeout=15.0,
    )
    app = web.Application(middlewares=[json_errors_middleware])
    add_ledger_routes(app, settings)
    async with TestClient(TestServer(app)) as client:
        yield client


async def post(api: Api, path: str, body: dict[str, Any] | bytes) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with api.post(path, data=data) as resp:
        return resp.status, orjson.loads(await resp.read())


async def get(api: Api, path: str, **query: str) -> tuple[int, Any]:
    async with api.get(path, params=query) as resp:
        return resp.status, orjson.loads(await resp.read())


async def customer_with_balance(api: Api, currency: str = "USD") -> tuple[str, str]:
    customer = "op-" + uuid.uuid4().hex[:10]
    balance = f"{customer}_{currency}"
    assert (await post(api, "/v1/customers", {"customerId": customer}))[0] == 201
    status, _ = await post(
        api,
        f"/v1/customers/{customer}/balances",
        {"balanceId": balance, "currency": currency, "requestId": "open-" + balance},
    )
    assert status == 201
    return customer, balance


async def deposit(api: Api, customer: str, balance: str, amount: str, rid: str = "") -> Any:
    status, body = await post(
        api,
        f"/v1/customers/{customer}/balances/{balance}/deposits",
        {"requestId": rid or uuid.uuid4().hex, "amount": amount},
    )
    assert status == 201, body
    return body


async def test_create_open_deposit_withdraw_block_and_read_back(api: Api) -> None:
    customer, balance = await customer_with_balance(api)
    # Creating it again without a requestId replays the stored 201, it does not answer 409.
    assert await post(api, "/v1/customers", {"customerId": customer}) == (
        201,
        {"customer_id": customer, "blocked": False},
    )
    await deposit(api, customer, balance, "150.00")
    status, body = await post(
        api,
        f"/v1/customers/{customer}/balances/{balance}/withdrawals",
        {"requestId": "w-1", "amount": "20", "comment": "paid out"},
    )
    assert (status, body["balance_current_amount"]) == (201, "130.00")
    status, view = await get(api, f"/v1/customers/{customer}/balances/{balance}")
    assert status == 200
    assert (view["total"], view["held"], view["available"], view["seq"]) == (
        "130.00",
        "0.00",
        "130.00",
        2,
    )
    assert (await post(api, f"/v1/customers/{customer}/block", {"requestId": "b-1"}))[0] == 200
    status, found = await get(api, f"/v1/customers/{customer}")
    assert (status, found["blocked"], [b["balanceId"] for b in found["balances"]]) == (
        200,
        True,
        [balance],
    )
    assert (await post(api, f"/v1/customers/{customer}/unblock", {"requestId": "u-1"}))[0] == 200
    assert (await get(api, f"/v1/customers/{customer}"))[1]["blocked"] is False
    assert (await get(api, f"/v1/customers/{customer}/balances"))[1]["balances"] == [view]


async def test_replayed_deposit_answers_the_same_and_makes_one_entry(api: Api) -> None:
    customer, balance = await customer_with_balance(api)
    first = await deposit(api, customer, balance, "10.5", rid="dep-1")
    assert await deposit(api, customer, balance, "10.50", rid="dep-1") == first
    status, body = await post(
        api,
        f"/v1/customers/{customer}/balances/{balance}/deposits",
        {"requestId": "dep-1", "amount": "11.00"},
    )
    assert (status, body["error"]) == (409, "request_id_reused")
    status, found = await get(api, "/v1/entries", customerId=customer, requestId="dep-1")
    assert status == 200 and len(found["entries"]) == 1
    entry = found["entries"][0]
    assert (entry["kind"], entry["amount"], entry["requestId"]) == ("deposit", "10.50", "dep-1")
    kinds = sorted(p["kind"] for p in entry["postings"])
    assert kinds == ["customer", "settlement"]
    assert (await get(api, f"/v1/entries/{entry['entryId']}")) == (200, entry)
    lines = (await get(api, f"/v1/customers/{customer}/balances/{balance}/statement"))[1]
    assert [line["seq"] for line in lines["lines"]] == [1]


async def test_statement_pages_by_seq_without_gaps_or_repeats_in_json_and_csv(api: Api) -> None:
    customer, balance = await customer_with_balance(api)
    for i in range(23):
        await deposit(api, customer, balance, f"{i + 1}.00", rid=f"d-{i:02d}")
    path = f"/v1/customers/{customer}/balances/{balance}/statement"
    seen: list[dict[str, Any]] = []
    after = "0"
    while True:
        status, page = await get(api, path, afterSeq=after, limit="5")
        assert status == 200 and len(page["lines"]) <= 5
        seen += page["lines"]
        if page["nextAfterSeq"] is None:
            break
        after = str(page["nextAfterSeq"])
    assert [line["seq"] for line in seen] == list(range(1, 24))
    running = 0
    for i, line in enumerate(seen):
        running += (i + 1) * 100
        assert line["balanceAfter"] == f"{running // 100}.00"
    # The last full page ends at the last line: no cursor to an empty page.
    assert (await get(api, path, afterSeq="18", limit="5"))[1]["nextAfterSeq"] is None
    async with api.get(path, params={"format": "csv", "limit": "5", "afterSeq": "5"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert resp.headers["Next-After-Seq"] == "10"
        rows = list(csv.reader(io.StringIO((await resp.read()).decode(), newline="")))
    assert rows[0][:4] == ["seq", "time", "kind", "amount"]
    assert [(r[0], r[3], r[7]) for r in rows[1:]] == [
        (str(line["seq"]), line["amount"], line["requestId"]) for line in seen[5:10]
    ]


async def test_statement_window_and_balance_at_a_time_cut_at_the_same_postings(api: Api) -> None:
    customer, balance = await customer_with_balance(api)
    before_all = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for rid in ("a", "b", "c"):
        await deposit(api, customer, balance, "1.00", rid=rid)
    await asyncio.sleep(0.05)  # entry times are Kafka timestamps (milliseconds)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for rid in ("d", "e"):
        await deposit(api, customer, balance, "10.00", rid=rid)
    base = f"/v1/customers/{customer}/balances/{balance}"
    status, at = await get(api, base + "/at", time=middle.isoformat())
    assert (status, at["balance"], at["seq"]) == (200, "3.00", 3)
    assert (await get(api, base + "/at", time=before_all.isoformat()))[1]["balance"] == "0.00"
    assert (await get(api, base + "/at", time="2999-01-01T00:00:00Z"))[1]["seq"] == 5
    later = await get(api, base + "/statement", **{"from": middle.isoformat()})
    assert [line["requestId"] for line in later[1]["lines"]] == ["d", "e"]
    earlier = await get(api, base + "/statement", to=middle.isoformat(), limit="2")
    assert [line["requestId"] for line in earlier[1]["lines"]] == ["a", "b"]
    rest = await get(
        api, base + "/statement", to=middle.isoformat(), afterSeq=str(earlier[1]["nextAfterSeq"])
    )
    assert ([line["requestId"] for line in rest[1]["lines"]], rest[1]["nextAfterSeq"]) == (
        ["c"],
        None,
    )


async def test_exchange_hold_settlement_entries_by_order_and_a_zero_trial_balance(
    api: Api, operator: Operator, wallet: Wallet
) -> None:
    customer, usdt = await customer_with_balance(api, "USDT")
    btc = f"{customer}_BTC"
    assert (
        await post(
            api,
            f"/v1/customers/{customer}/balances",
            {"balanceId": btc, "currency": "BTC", "requestId": "open-btc"},
        )
    )[0] == 201
    await deposit(api, customer, usdt, "250")
    reserve = ExchangeReserve(customer, "ex-1", usdt, btc, "100", "USDT", "BTC", "test")
    assert (await operator.send(reserve)).status == 201
    held = (await get(api, f"/v1/customers/{customer}/balances/{usdt}"))[1]
    assert (held["total"], held["held"], held["available"]) == (
        "250.000000",
        "100.000000",
        "150.000000",
    )
    order = "order-" + uuid.uuid4().hex
    settle = ExchangeSettle(
        customer, "ex-1", order, "BTC", "0.00193459", "0.00000005", "0.00000396", "0.00000001"
    )
    assert (await operator.send(settle)).status == 201
    status, found = await get(api, "/v1/entries", orderId=order)
    assert status == 200 and len(found["entries"]) == 1
    entry = found["entries"][0]
    assert entry["kind"] == "exchange" and entry["orderId"] == order
    assert {(p["kind"], p["currency"]) for p in entry["postings"]} >= {
        ("customer", "USDT"),
        ("customer", "BTC"),
        ("exchange_clearing", "USDT"),
        ("exchange_clearing", "BTC"),
        ("markup_revenue", "BTC"),
    }
    by_request = await get(api, "/v1/entries", customerId=customer, requestId="ex-1")
    assert by_request[1]["entries"] == [entry]
    # The target balance's history: the settlement is filed under the source balance's entry.
    now = datetime.now(UTC).isoformat()
    at = (await get(api, f"/v1/customers/{customer}/balances/{btc}/at", time=now))[1]
    assert (at["balance"], at["seq"]) == ("0.00193459", 1)
    source = (await get(api, f"/v1/customers/{customer}/balances/{usdt}"))[1]
    assert (source["total"], source["held"]) == ("150.000000", "0.000000")

    # Callbacks move money between customers and the trading shards.
    qc_customer, qc_balance = await operator.customer_with_balance("USD", "50.00")
    assert (await wallet.debit(qc_customer, qc_balance, "7.25")).status == 201
    assert (await wallet.credit(qc_customer, qc_balance, "3.00")).status == 201
    status, trial = await get(api, "/v1/trial-balance")
    assert status == 200 and trial["balanced"] is True
    per = {c["currency"]: c for c in trial["currencies"]}
    assert {"USD", "USDT", "BTC"} <= set(per)
    assert all(c["balanced"] and float(c["total"]) == 0 for c in per.values())
    assert "trading" in per["USD"]["system"] and "exchange_clearing" in per["BTC"]["system"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/v1/customers", b"{", 400, "malformed_json"),
        ("post", "/v1/customers", {"customerId": "x/y"}, 400, "invalid_id"),
        (
            "post",
            "/v1/customers/{c}/balances",
            {"balanceId": "b", "currency": "EUR"},
            400,
            "invalid_field",
        ),
        (
            "post",
            "/v1/customers/{c}/balances",
            {"balanceId": "b", "currency": "XYZ", "requestId": "r"},
            400,
            "unknown_currency",
        ),
        (
            "post",
            "/v1/customers/{c}/balances/{b}/deposits",
            {"requestId": "r", "amount": "1.001"},
            400,
            "invalid_amount",
        ),
        (
            "post",
            "/v1/customers/{c}/balances/{b}/deposits",
            {"requestId": "r", "amount": "-1"},
            400,
            "invalid_amount",
        ),
        (
            "post",
            "/v1/customers/{c}/balances/{b}/withdrawals",
            {"requestId": "r", "amount": "1", "currency": "USD"},
            400,
            "invalid_field",
        ),
        (
            "post",
            "/v1/customers/{c}/balances/nope/deposits",
            {"requestId": "r", "amount": "1"},
            404,
            "balance_not_found",
        ),
        (
            "post",
            "/v1/customers/nobody-{c}/balances/{b}/deposits",
            {"requestId": "r", "amount": "1"},
            404,
            "customer_not_found",
        ),
        ("get", "/v1/customers/{c}/balances/{b}/statement?limit=5000", None, 400, "invalid_field"),
        ("get", "/v1/customers/{c}/balances/{b}/statement?offset=5", None, 400, "invalid_field"),
        ("get", "/v1/customers/{c}/balances/{b}/at?time=yesterday", None, 400, "invalid_field"),
        ("get", "/v1/customers/{c}/balances/nope", None, 404, "balance_not_found"),
        ("get", "/v1/customers/nobody-{c}", None, 404, "customer_not_found"),
        ("get", "/v1/entries/not-a-uuid", None, 400, "invalid_id"),
        ("get", f"/v1/entries/{uuid.UUID(int=1)}", None, 404, "entry_not_found"),
        ("get", "/v1/entries?requestId=r", None, 400, "invalid_field"),
    ],
)
async def test_bad_input_is_a_json_4xx_and_changes_nothing(
    api: Api, method: str, path: str, body: dict[str, Any] | bytes | None, status: int, code: str
) -> None:
    customer, balance = await customer_with_balance(api)
    await deposit(api, customer, balance, "5.00")
    before = await get(api, f"/v1/customers/{customer}")
    url = path.replace("{c}", customer).replace("{b}", balance)
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    async with api.request(method.upper(), url, data=data) as resp:
        answer = orjson.loads(await resp.read())
        assert (resp.status, answer["error"]) == (status, code), answer
    assert await get(api, f"/v1/customers/{customer}") == before
    statement = await get(api, f"/v1/customers/{customer}/balances/{balance}/statement")
    assert [line["seq"] for line in statement[1]["lines"]] == [1]
