"""Quadcode's trading room against the real wallet: the simulator (a process) opens the room through
our gateway client, then plays options by calling the edge's callbacks with Quadcode-signed JWTs.
What the wallet answered, what the ledger holds and the audit must all agree; a debit whose
response is lost on the way back is retried with the same request_id and applied once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest

from ledger.audit import AuditResult, audit
from quadcode_gateway import (
    NewCustomer,
    QuadcodeGatewayClient,
    RetryPolicy,
    TokenSigner,
    TradingBalance,
    TradingRoomStatus,
    Visit,
    generate_keypair,
    open_trading_room,
)
from quadcode_harness import (
    AUDIENCE,
    ISSUER,
    SimulatorHooks,
    SimulatorProcess,
    launch_simulator,
    stop_simulator,
)
from wallet_stack import QuadcodeKey, Stack

if TYPE_CHECKING:
    # Annotations only: at run time "conftest" is whichever conftest pytest imported last, which
    # is tests/quadcode_gateway's when both folders are on the command line.
    from wallet_clients import Operator, Wallet

pytestmark = pytest.mark.e2e

VISIT = Visit(country_code="DE", ip="203.0.113.9", locale="en_US", site_domain="trade.example.com")
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def key_dir(quadcode_key: QuadcodeKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Quadcode's private key (the one the running edge trusts) and our client key pair."""
    directory = tmp_path_factory.mktemp("quadcode-trading")
    qc_private = directory / "qc-private.pem"
    qc_private.write_bytes(quadcode_key.private_pem)
    qc_private.chmod(0o600)
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    return directory


@pytest.fixture(scope="module")
def simulator(stack: Stack, key_dir: Path) -> Iterator[SimulatorProcess]:
    """The simulator as a process: it verifies our client key and signs callbacks with the key
    the running edge trusts as Quadcode's; its trader calls the edge."""
    log_path = key_dir / "simulator.log"
    process, port = launch_simulator(
        log_path,
        client_public_key=key_dir / "ours-public.pem",
        qc_private_key=key_dir / "qc-private.pem",
        extra=("--wallet-base-url", stack.edge.url, "--wallet-timeout", "5"),
    )
    try:
        yield SimulatorProcess(f"http://127.0.0.1:{port}", port, process.pid, log_path)
    finally:
        stop_simulator(process)


@pytest.fixture(scope="module")
def sim(simulator: SimulatorProcess, http: aiohttp.ClientSession) -> SimulatorHooks:
    return SimulatorHooks(simulator, http)


@pytest.fixture(scope="module")
async def gateway(
    simulator: SimulatorProcess, key_dir: Path
) -> AsyncIterator[QuadcodeGatewayClient]:
    """Our side: the gateway client, signing with our key (the simulator holds its public half)."""
    client = QuadcodeGatewayClient.create(
        base_url=simulator.base_url,
        signer=TokenSigner.from_pem_file(
            key_dir / "ours-private.pem", issuer=ISSUER, audience=AUDIENCE
        ),
        retry=RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2),
        request_timeout=5.0,
    )
    yield client
    await client.close()


async def open_room(gateway: QuadcodeGatewayClient, customer: str, balance: str) -> str:
    outcome = await open_trading_room(
        gateway,
        NewCustomer(customer_id=customer, country_code="DE", ip=VISIT.ip, email="t@example.com"),
        TradingBalance(balance_id=balance, currency_code="USD"),
        VISIT,
    )
    assert outcome.status is TradingRoomStatus.URL, outcome
    assert outcome.url is not None
    return outcome.url


async def trade(sim: SimulatorHooks, **plan: Any) -> dict[str, Any]:
    status, report = await sim.trade(hook_timeout=60, currency_code="USD", **plan)
    assert status == 200, report
    assert isinstance(report, dict)
    return report


async def journal(stack: Stack, customer: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT kind, request_id FROM journal_entries WHERE customer_id = $1", customer
            )
        )
    finally:
        await conn.close()


async def entries_for(stack: Stack, request_id: str) -> int:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM journal_entries WHERE request_id = $1", request_id
            )
        )
    finally:
        await conn.close()


async def audit_eventually(stack: Stack, timeout: float = 10.0) -> AuditResult:
    """The ledger's audit; the projection check may need a few polls to catch up."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(stack.dsn)
    try:
        result = await audit(conn)
        while not result.ok and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            result = await audit(conn)
        return result
    finally:
        await conn.close()


def money(value: Decimal) -> str:
    return str(value.quantize(CENT))


# -- trading --------------------------------------------------------------------------------------


async def test_trades_through_the_simulator_move_the_wallet_exactly_as_answered(
    stack: Stack,
    operator: Operator,
    wallet: Wallet,
    sim: SimulatorHooks,
    gateway: QuadcodeGatewayClient,
    http: aiohttp.ClientSession,
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")
    await wallet.read_eventually(customer, balance, "100.00")

    url = await open_room(gateway, customer, balance)
    # First open: Quadcode does not know the customer (404), we register them, then ask again.
    calls = [
        (e["path"], e["status"])
        for e in await sim.exchanges()
        if customer in e["path"] or customer in e["request_body"]
    ]
    session = f"/v1/b2b-gateway/customers/{customer}/session"
    assert calls == [(session, 404), ("/v1/b2b-gateway/customers", 201), (session, 201)]
    assert (await sim.customer(customer) or {}).get("balances") == {balance: "USD"}
    async with http.get(url) as page:
        assert page.status == 200

    stake, payout = Decimal("2.50"), Decimal("4.50")  # the simulator's default ratio is 1.80
    report = await trade(sim, customer_id=customer, balance_id=balance, trades=5, stake="2.50")

    assert report["balance_before"] == "100.00"
    assert [t["outcome"] for t in report["trades"]] == ["win", "loss", "win", "loss", "win"]
    running, seen = Decimal("100.00"), ["100.00"]
    request_ids: dict[str, str] = {}
    for option in report["trades"]:
        calls = [("debit", option["debit"], stake)]
        if option["outcome"] == "win":
            calls.append(("credit", option["credit"], payout))
        for kind, call, amount in calls:
            running += -amount if kind == "debit" else amount
            seen.append(money(running))
            assert call["attempts"] == [201], call
            assert call["body"] == {
                "customer_id": customer,
                "balance_id": balance,
                "amount": money(amount),
                "balance_current_amount": money(running),
                "currency_code": "USD",
            }
            request_ids[call["request_id"]] = kind
    assert running == Decimal("101.00")  # 100 - 5 * 2.50 + 3 * 4.50
    # The trader's closing read goes through the eventually consistent projection: it may lag,
    # but it can only show a balance the wallet actually had.
    assert report["balance_after"] in seen
    assert (await wallet.read_eventually(customer, balance, "101.00")).json["amount"] == "101.00"

    entries = await journal(stack, customer)
    assert sorted(e["kind"] for e in entries) == ["credit"] * 3 + ["debit"] * 5 + ["deposit"]
    assert {e["request_id"]: e["kind"] for e in entries if e["kind"] != "deposit"} == request_ids
    result = await audit_eventually(stack)
    assert result.ok, result.failures


async def test_a_stake_the_balance_cannot_cover_is_refused_and_never_opened(
    stack: Stack,
    operator: Operator,
    wallet: Wallet,
    sim: SimulatorHooks,
    gateway: QuadcodeGatewayClient,
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "3.00")
    await open_room(gateway, customer, balance)

    # 3.00 - 2.00 + 1.00 (win at 0.5) - 2.00 (loss) = 0.00: the third stake cannot be covered.
    report = await trade(
        sim, customer_id=customer, balance_id=balance, trades=3, stake="2.00", payout="0.5"
    )

    assert [t["outcome"] for t in report["trades"]] == ["win", "loss", "not_opened"]
    refused = report["trades"][2]
    assert refused["debit"]["attempts"] == [402]  # an answer, so never retried
    assert refused["debit"]["body"]["error"] == "insufficient_funds"
    assert refused["credit"] is None
    assert await entries_for(stack, refused["debit"]["request_id"]) == 0
    assert (await wallet.read_eventually(customer, balance, "0.00")).json["amount"] == "0.00"


# -- a lost response ------------------------------------------------------------------------------


class DropFirstDebitResponse:
    """A TCP proxy in front of the edge. The first debit request it sees reaches the edge, which
    applies it and answers; the proxy then closes the caller's connection instead of passing the
    answer on, as a network failure would. Everything else is forwarded untouched."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.forwarded = bytearray()  # every byte sent to the edge, for request_id counts
        self.dropped = 0
        self._armed = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> DropFirstDebitResponse:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def _is_first_debit(self, chunk: bytes) -> bool:
        request_line = chunk.split(b"\r\n", 1)[0]
        if self._armed and request_line.startswith(b"POST ") and b"/debit " in request_line:
            self._armed = False
            return True
        return False

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        self._writers.update((client_writer, upstream_writer))
        drop_response = asyncio.Event()

        async def requests() -> None:
            while chunk := await client_reader.read(65536):
                if self._is_first_debit(chunk):
                    drop_response.set()  # before forwarding: the answer cannot overtake it
                self.forwarded += chunk
                upstream_writer.write(chunk)
                await upstream_writer.drain()

        async def responses() -> None:
            while chunk := await upstream_reader.read(65536):
                if drop_response.is_set():
                    # HTTP/1.1 without pipelining: these bytes answer the debit, so the edge has
                    # applied it. The caller never hears of it.
                    self.dropped += 1
                    client_writer.transport.abort()
                    return
                client_writer.write(chunk)
                await client_writer.drain()

        pumps = [asyncio.create_task(requests()), asyncio.create_task(responses())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                writer.close()
                self._writers.discard(writer)


async def test_a_debit_whose_response_is_lost_is_retried_and_applied_once(
    stack: Stack,
    operator: Operator,
    wallet: Wallet,
    sim: SimulatorHooks,
    gateway: QuadcodeGatewayClient,
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")
    await wallet.read_eventually(customer, balance, "100.00")
    await open_room(gateway, customer, balance)

    async with DropFirstDebitResponse(stack.edge.port) as proxy, asyncio.timeout(60):
        report = await trade(
            sim,
            customer_id=customer,
            balance_id=balance,
            trades=2,
            stake="2.50",
            wallet_base_url=proxy.url,
        )

    assert proxy.dropped == 1
    first = report["trades"][0]["debit"]
    # No answer, then the same request again: the wallet replays its stored outcome.
    assert first["attempts"] == ["connection_error", 201], first
    request_id = first["request_id"]
    assert proxy.forwarded.count(f'"request_id":"{request_id}"'.encode()) == 2
    assert first["body"]["balance_current_amount"] == "97.50"
    assert await entries_for(stack, request_id) == 1
    # 100.00 - 2.50 (once) + 4.50 (win) - 2.50 (loss)
    assert [t["outcome"] for t in report["trades"]] == ["win", "loss"]
    assert report["trades"][1]["debit"]["body"]["balance_current_amount"] == "99.50"
    assert (await wallet.read_eventually(customer, balance, "99.50")).json["amount"] == "99.50"
    debits = [e for e in await journal(stack, customer) if e["kind"] == "debit"]
    assert len(debits) == 2
    result = await audit_eventually(stack)
    assert result.ok, result.failures
