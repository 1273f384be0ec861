"""The Swapgate client against the simulator running as a real process on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import aiohttp
import orjson
import pytest

from exchange_stack import listening_port
from swapgate import (
    AmountAboveMaximum,
    AmountBelowMinimum,
    ApiCredentials,
    AuthRejected,
    Backoff,
    Completed,
    CreateOrderRequest,
    Failed,
    Instrument,
    MarkupOutOfBounds,
    MarkupPolicy,
    OrderOutcomeUnknown,
    OrderStatus,
    Pending,
    RateMode,
    Refunded,
    RequestRejected,
    ServerError,
    SimulatorStatusSource,
    SwapgateClient,
    SwapgateTimeout,
    SwapgateUnavailable,
    affiliate_margin,
    await_final,
    compact_json,
    signed_headers,
    unix_time_ms,
    withdrawal_amount,
)

pytestmark = pytest.mark.integration

# The document's key pair, seeded with a whitelist of loopback and a maximum markup of 2 %.
TRUSTED = ApiCredentials(
    "ZgzycV6Sf78BZKuyIAiz+0Bor002+0/rx1gLKsmYCsY=",
    "a482a8e3a3ff9aeadefb11d3d8c11253e7e8412e05ef2b8599016cc87a64b7d6",
)
# A key whose whitelist does not contain 127.0.0.1.
OUTSIDER = ApiCredentials("outsider-public-key", "outsider-secret-key")
OPERATOR_COOKIE = "session=simulator-operator"
STEP_S = 0.25  # time an order spends in each simulated stage
PLATFORM_PCT, AFFILIATE_PCT = Decimal(1), Decimal(20)
BTC, USDT = Instrument("BTC", "BTC"), Instrument("USDT", "TRC20")
FAST_POLL = Backoff(initial_s=0.05, multiplier=2.0, max_delay_s=0.4)
START_TIMEOUT_S = 20.0


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("swapgate-sim") / "simulator.log"
    command = [
        sys.executable, "-m", "simulators.swapgate", "--host", "127.0.0.1", "--port", "0",
        "--step-s", str(STEP_S), "--timestamp-window-s", "30",
        "--platform-pct", str(PLATFORM_PCT), "--affiliate-pct", str(AFFILIATE_PCT),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        url = f"http://127.0.0.1:{listening_port(log_path, process, START_TIMEOUT_S)}"
        with urllib.request.urlopen(f"{url}/_sim/health", timeout=5) as answer:
            assert answer.status == 200
        _post(
            f"{url}/_sim/keys",
            {
                "name": "trusted",
                "publicKey": TRUSTED.public_key,
                "secretKey": TRUSTED.secret_key,
                "whiteListIp": ["127.0.0.1"],
                "settings": {"maxMarkup": "2"},
            },
        )
        _post(
            f"{url}/_sim/keys",
            {
                "name": "outsider",
                "publicKey": OUTSIDER.public_key,
                "secretKey": OUTSIDER.secret_key,
                "whiteListIp": ["10.0.0.0/8"],
            },
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[SwapgateClient]:
    async with SwapgateClient(
        base_url, credentials=TRUSTED, timeout_s=5, account_cookie=OPERATOR_COOKIE
    ) as swapgate:
        yield swapgate
    # Faults are global to the simulator: none may leak into the next test.
    async with aiohttp.ClientSession() as http, http.delete(f"{base_url}/_sim/faults"):
        pass


async def _sim_post(base_url: str, path: str, body: object) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{base_url}{path}", json=body) as answer:
        assert answer.status in (200, 201), await answer.text()


def btc_to_usdt(markup: Decimal = Decimal("0.3")) -> CreateOrderRequest:
    return CreateOrderRequest(
        rate_mode=RateMode.FLOATING,
        instrument_from=BTC,
        instrument_to=USDT,
        destination_address="TUhw6S1HyXDhycKvTec3x7HNGQfNn3Vhpc",
        claimed_deposit_amount=Decimal(1),
        markup=markup,
        referrer_id="aff_616",
        browser_fingerprint="6b3add86bec11616427d069556a33548",
    )


async def test_quote_is_parsed_into_decimals_with_the_markup_applied(
    client: SwapgateClient,
) -> None:
    plain = await client.quote("BTC", "BTC", "USDT", "TRC20", Decimal(1), markup=Decimal(0))
    marked = await client.quote("BTC", "BTC", "USDT", "TRC20", Decimal(1), markup=Decimal("0.3"))
    assert marked.markup == Decimal("0.3")
    assert marked.market_amount_to_get == Decimal("50243.798064469251204")
    assert marked.amount_to_get < plain.amount_to_get < plain.market_amount_to_get
    assert marked.instrument_to.precision_decimals == 6
    assert marked.deposit_rules.min_amount == Decimal("0.001")
    assert marked.deposit_rules.max_amount is None  # "0" on the wire: no maximum
    fee = marked.quotes_without_network_fee.sell.quote_value - marked.quotes.sell.quote_value
    assert fee == marked.final_network_fee


async def test_quote_refuses_amount_below_deposit_minimum(client: SwapgateClient) -> None:
    with pytest.raises(AmountBelowMinimum) as refused:
        await client.quote("BTC", "BTC", "USDT", "TRC20", Decimal("0.0001"))
    assert refused.value.minimum == Decimal("0.001")
    assert refused.value.quote is not None


async def test_quote_refuses_amount_above_deposit_maximum(client: SwapgateClient) -> None:
    with pytest.raises(AmountAboveMaximum) as refused:
        await client.quote("USDT", "TRC20", "BTC", "BTC", Decimal(2000000))
    assert refused.value.maximum == Decimal(1000000)


async def test_signed_order_is_created(client: SwapgateClient) -> None:
    order = await client.create_order(btc_to_usdt())
    assert order.status == "created"
    assert order.markup == Decimal("0.3")
    assert order.claimed_deposit_amount == Decimal(1)
    assert order.deposit_address


async def test_order_signed_with_the_wrong_secret_is_refused_403(base_url: str) -> None:
    forged = ApiCredentials(TRUSTED.public_key, "not-the-secret")
    async with SwapgateClient(base_url, credentials=forged) as swapgate:
        with pytest.raises(AuthRejected) as refused:
            await swapgate.create_order(btc_to_usdt())
    assert (refused.value.status, refused.value.code) == (403, "bad_signature")


async def test_order_from_an_ip_outside_the_whitelist_is_refused_403(base_url: str) -> None:
    async with SwapgateClient(base_url, credentials=OUTSIDER) as swapgate:
        with pytest.raises(AuthRejected) as refused:
            await swapgate.create_order(btc_to_usdt())
    assert (refused.value.status, refused.value.code) == (403, "ip_not_whitelisted")


async def test_order_with_a_stale_timestamp_is_refused_403(base_url: str) -> None:
    def a_minute_ago() -> int:
        return unix_time_ms() - 60_000

    async with SwapgateClient(base_url, credentials=TRUSTED, clock_ms=a_minute_ago) as swapgate:
        with pytest.raises(AuthRejected) as refused:
            await swapgate.create_order(btc_to_usdt())
    assert refused.value.code == "stale_timestamp"


async def test_replayed_signed_request_is_refused_403(base_url: str) -> None:
    body = compact_json(btc_to_usdt().to_wire())
    headers = signed_headers(TRUSTED.secret_key, TRUSTED.public_key, unix_time_ms(), body)
    headers["content-type"] = "application/json; charset=utf-8"
    url = f"{base_url}/api/v2/orders/public/create"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers) as first:
            assert first.status == 201
        async with http.post(url, data=body, headers=headers) as replay:
            assert replay.status == 403
            assert (await replay.json())["code"] == "replayed_signature"


async def test_markup_above_the_keys_maximum_is_refused_by_swapgate_400(
    client: SwapgateClient,
) -> None:
    with pytest.raises(RequestRejected) as refused:
        await client.create_order(btc_to_usdt(markup=Decimal(5)))
    assert (refused.value.status, refused.value.code) == (400, "markup_out_of_bounds")


async def test_markup_outside_the_client_policy_is_refused_before_sending(
    base_url: str,
) -> None:
    policy = MarkupPolicy(default=Decimal("0.3"), maximum=Decimal(1))
    # The simulator would accept 1.5 % (its key allows up to 2 %): only the client refuses it.
    async with SwapgateClient(base_url, credentials=TRUSTED, markup_policy=policy) as swapgate:
        with pytest.raises(MarkupOutOfBounds):
            await swapgate.create_order(btc_to_usdt(markup=Decimal("1.5")))


async def _run_to_end(
    client: SwapgateClient, base_url: str, ending: str | None
) -> tuple[OrderStatus, list[OrderStatus], list[object]]:
    """Create an order, choose its ending, poll it to the end; return the final status, the
    statuses the poller saw change, and the stages the simulator recorded."""
    order = await client.create_order(btc_to_usdt())
    if ending is not None:
        await _sim_post(base_url, f"/_sim/orders/{order.order_id}/ending", {"ending": ending})
    seen: list[OrderStatus] = []

    async def record(status: OrderStatus) -> None:
        seen.append(status)

    final = await await_final(
        SimulatorStatusSource(client),
        order.order_id,
        timeout_s=15,
        backoff=FAST_POLL,
        on_change=record,
    )
    # Polling may skip a short stage; the order's own history has every one.
    history = (await client.get_order(order.order_id)).raw["events"]
    assert isinstance(history, list)
    return final, seen, [event["status"] for event in history]


async def test_order_completes_and_the_poller_sees_the_amounts(
    client: SwapgateClient, base_url: str
) -> None:
    final, seen, stages = await _run_to_end(client, base_url, None)
    assert isinstance(final, Completed)
    assert seen[0] == Pending("created") and seen[-1] == final
    assert stages == ["created", "deposit_detected", "exchanging", "completed"]
    assert final.exchange_amount is not None
    fee = Decimal(1)  # the simulator's USDT payout network fee
    # The payout follows Swapgate's formula, rounded toward zero with the remainder reported.
    expected_payout = withdrawal_amount(final.exchange_amount, PLATFORM_PCT, Decimal("0.3")) - fee
    assert final.amount_paid_out + final.payout_rounding_remainder == expected_payout
    assert final.amount_paid_out == expected_payout.quantize(Decimal("0.000001"), "ROUND_DOWN")
    assert final.platform_margin == final.exchange_amount * PLATFORM_PCT / 100
    assert final.affiliate_margin == affiliate_margin(
        final.platform_margin, AFFILIATE_PCT, Decimal("0.3")
    )


async def test_order_refunded_through_the_hook_is_seen_refunded(
    client: SwapgateClient, base_url: str
) -> None:
    final, _, stages = await _run_to_end(client, base_url, "refunded")
    assert isinstance(final, Refunded)
    assert stages == ["created", "deposit_detected", "refunded"]
    assert final.amount_refunded == Decimal(1)


async def test_order_failed_through_the_hook_is_seen_failed(
    client: SwapgateClient, base_url: str
) -> None:
    final, _, stages = await _run_to_end(client, base_url, "failed")
    assert isinstance(final, Failed)
    assert stages == ["created", "deposit_detected", "exchanging", "failed"]


async def test_generated_key_shows_its_secret_once_and_works(
    client: SwapgateClient, base_url: str
) -> None:
    generated = await client.generate_api_key("desk", ["127.0.0.1"])
    assert generated.credentials.secret_key
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{base_url}/api/v1/users/list-api-key", headers={"cookie": OPERATOR_COOKIE}
        ) as listing,
    ):
        assert "secretKey" not in await listing.text()
    assert generated.key in await client.list_api_keys()
    async with SwapgateClient(base_url, credentials=generated.credentials) as swapgate:
        assert (await swapgate.create_order(btc_to_usdt())).status == "created"


async def test_deactivated_key_is_refused_403(client: SwapgateClient, base_url: str) -> None:
    generated = await client.generate_api_key("short-lived", ["127.0.0.1"])
    deactivated = await client.deactivate_api_key(generated.key.api_id)
    assert not deactivated.is_active
    async with SwapgateClient(base_url, credentials=generated.credentials) as swapgate:
        with pytest.raises(AuthRejected) as refused:
            await swapgate.create_order(btc_to_usdt())
    assert refused.value.code == "inactive_key"


async def test_key_calls_without_the_account_cookie_are_refused_401(base_url: str) -> None:
    async with SwapgateClient(base_url, account_cookie="session=wrong") as swapgate:
        with pytest.raises(RequestRejected) as refused:
            await swapgate.list_api_keys()
    assert refused.value.status == 401


async def test_server_error_on_a_quote_is_a_retriable_server_error(
    client: SwapgateClient, base_url: str
) -> None:
    await _sim_post(base_url, "/_sim/faults", {"status": 503, "pathPrefix": "/api/v1/rates"})
    with pytest.raises(ServerError) as failed:
        await client.quote("BTC", "BTC", "USDT", "TRC20", Decimal(1))
    assert failed.value.status == 503 and failed.value.retriable


async def test_server_error_on_order_creation_leaves_the_outcome_unknown(
    client: SwapgateClient, base_url: str
) -> None:
    await _sim_post(base_url, "/_sim/faults", {"status": 500, "pathPrefix": "/api/v2/orders"})
    with pytest.raises(OrderOutcomeUnknown) as unknown:
        await client.create_order(btc_to_usdt())
    assert isinstance(unknown.value.cause, ServerError)


async def test_slow_answer_raises_timeout(base_url: str) -> None:
    await _sim_post(base_url, "/_sim/faults", {"delaySeconds": 1.0, "pathPrefix": "/api/v1"})
    async with SwapgateClient(base_url, timeout_s=0.2) as swapgate:
        with pytest.raises(SwapgateTimeout):
            await swapgate.quote("BTC", "BTC", "USDT", "TRC20", Decimal(1))


async def test_unreachable_swapgate_is_unavailable_and_nothing_was_delivered() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with SwapgateClient(f"http://127.0.0.1:{closed_port}", timeout_s=2) as swapgate:
        with pytest.raises(SwapgateUnavailable) as unavailable:
            await swapgate.quote("BTC", "BTC", "USDT", "TRC20", Decimal(1))
    assert unavailable.value.maybe_delivered is False
