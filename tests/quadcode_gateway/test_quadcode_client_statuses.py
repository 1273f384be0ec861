"""The external-balance client against the simulator process: every documented status."""

from __future__ import annotations

import asyncio
import time

import pytest

from quadcode_gateway import (
    AllowedCountry,
    BadRequest,
    BalanceCurrencyMismatch,
    CountryRestricted,
    CurrencyRestricted,
    CustomerAlreadyExists,
    CustomerBlocked,
    CustomerNotFound,
    FieldError,
    Forbidden,
    GatewayUnavailable,
    InvalidRequest,
    NewCustomer,
    RateLimited,
    RetryPolicy,
    ServerError,
    SessionRequest,
    TradingBalance,
    Unauthorized,
    UnprocessableEntity,
    Visit,
)
from quadcode_harness import ClientFactory, RecordingSleep, SimulatorHooks

pytestmark = pytest.mark.integration

ANNA = NewCustomer(customer_id="anna-1", country_code="DE", ip="203.0.113.7", email="anna@ex.com")
USD = TradingBalance(balance_id="1234_USD", currency_code="USD")
VISIT = Visit(country_code="DE", ip="203.0.113.7", locale="en_US", site_domain="trade.example.com")
SESSION = SessionRequest(country_code="DE", ip="203.0.113.7", user_agent="test/1", platform_id=9)


async def test_create_customer_then_login_url_and_session(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    assert await client.create_customer(ANNA) is None
    login = await client.create_login_url("anna-1", USD, VISIT)
    assert login.url.startswith(f"{sim.base_url}/traderoom?token=")
    session = await client.create_session("anna-1", SESSION)
    assert len(session.ssid) >= 16
    assert (await sim.customer("anna-1") or {})["balances"] == {"1234_USD": "USD"}


async def test_existing_customer_raises_customer_already_exists(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    with pytest.raises(CustomerAlreadyExists) as excinfo:
        await client.create_customer(ANNA)
    assert excinfo.value.status == 409


async def test_unknown_customer_raises_customer_not_found(make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(CustomerNotFound):
        await client.create_login_url("nobody", USD, VISIT)
    with pytest.raises(CustomerNotFound):
        await client.create_session("nobody", SESSION)
    with pytest.raises(CustomerNotFound):
        await client.block_customer("nobody")


async def test_balance_id_with_another_currency_raises_balance_currency_mismatch(
    make_client: ClientFactory,
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    await client.create_login_url("anna-1", USD, VISIT)
    eur_on_same_id = TradingBalance(balance_id="1234_USD", currency_code="EUR")
    with pytest.raises(BalanceCurrencyMismatch) as excinfo:
        await client.create_login_url("anna-1", eur_on_same_id, VISIT)
    assert excinfo.value.status == 409


async def test_blocked_customer_gets_418_on_later_sessions(make_client: ClientFactory) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    await client.block_customer("anna-1")
    await client.block_customer("anna-1")  # idempotent
    with pytest.raises(CustomerBlocked) as excinfo:
        await client.create_login_url("anna-1", USD, VISIT)
    assert excinfo.value.status == 418
    with pytest.raises(CustomerBlocked):
        await client.create_session("anna-1", SESSION)


async def test_restricted_country_raises_country_restricted(make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(CountryRestricted) as excinfo:
        await client.create_customer(
            NewCustomer(customer_id="sam", country_code="US", ip="198.51.100.1", email="s@x.us")
        )
    assert excinfo.value.reason == "customer_country_restriction"
    await client.create_customer(ANNA)
    from_us = Visit(country_code="US", ip="198.51.100.1", locale="en_US", site_domain="t.ex.com")
    with pytest.raises(CountryRestricted):
        await client.create_login_url("anna-1", USD, from_us)
    with pytest.raises(CountryRestricted):
        await client.create_session(
            "anna-1",
            SessionRequest(country_code="US", ip="198.51.100.1", user_agent="t", platform_id=1),
        )


async def test_restricted_currency_raises_currency_restricted(make_client: ClientFactory) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    with pytest.raises(CurrencyRestricted) as excinfo:
        await client.create_login_url(
            "anna-1", TradingBalance(balance_id="9_JPY", currency_code="JPY"), VISIT
        )
    assert excinfo.value.reason == "customer_currency_restriction"
    assert not isinstance(excinfo.value, CountryRestricted)


async def test_allowed_countries_lists_the_configured_ones(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.configure(allowed_countries=["GB", "DE"])
    assert await make_client().allowed_countries() == [
        AllowedCountry("Germany", "DE", "DEU"),
        AllowedCountry("United Kingdom", "GB", "GBR"),
    ]


async def test_400_raises_bad_request_without_retry(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=400, path="/customers")
    with pytest.raises(BadRequest):
        await make_client().create_customer(ANNA)
    assert len(await sim.exchanges()) == 1


async def test_422_raises_unprocessable_entity_with_field_errors(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    body = {
        "country_code": {"code": "unknown_country_code", "message": "Unknown country."},
        "site_domain": {"code": "is_required", "message": "Required."},
    }
    await sim.force(status=422, body=body, path="/session")
    client = make_client()
    await client.create_customer(ANNA)
    with pytest.raises(UnprocessableEntity) as excinfo:
        await client.create_login_url("anna-1", USD, VISIT)
    assert excinfo.value.field_errors == {
        "country_code": FieldError("unknown_country_code", "Unknown country."),
        "site_domain": FieldError("is_required", "Required."),
    }


@pytest.mark.parametrize(
    "signer_options",
    [
        {"issuer": "someone-else"},
        {"audience": "production"},
        {"private_key": "stranger"},
    ],
    ids=["wrong-issuer", "wrong-audience", "unregistered-key"],
)
async def test_refused_token_raises_unauthorized_and_is_not_reused(
    sim: SimulatorHooks, make_client: ClientFactory, signer_options: dict[str, str]
) -> None:
    options: dict[str, object] = dict(signer_options)
    if options.get("private_key") == "stranger":
        options["private_key"] = make_client.keys.stranger_private
    client = make_client(signer=make_client.signer(**options))
    for _ in range(2):
        with pytest.raises(Unauthorized) as excinfo:
            await client.allowed_countries()
        assert excinfo.value.status == 401
    # ECDSA signatures are randomised: an identical header would mean the refused token was
    # reused; a different one proves it was dropped and a fresh one signed.
    first, second = (e["request_headers"]["Authorization"] for e in await sim.exchanges())
    assert first != second


async def test_caller_outside_ip_allowlist_raises_forbidden(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.configure(allowed_ips=["10.0.0.0/8"])
    with pytest.raises(Forbidden) as excinfo:
        await make_client().allowed_countries()
    assert excinfo.value.status == 403


async def test_429_is_retried_after_retry_after(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=429, headers={"Retry-After": "2"}, path="/allowed-countries")
    sleep = RecordingSleep()
    countries = await make_client(sleep=sleep).allowed_countries()
    assert countries
    assert sleep.delays == [2.0]
    assert [e["status"] for e in await sim.exchanges()] == [429, 200]


async def test_429_with_long_retry_after_is_raised_at_once(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=429, headers={"Retry-After": "120"}, path="/allowed-countries")
    sleep = RecordingSleep()
    with pytest.raises(RateLimited) as excinfo:
        await make_client(sleep=sleep).allowed_countries()
    assert excinfo.value.retry_after == 120.0
    assert sleep.delays == []
    assert len(await sim.exchanges()) == 1


async def test_429_without_retry_after_backs_off_with_jitter_and_gives_up(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=429, times=10, path="/allowed-countries")
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.3)
    jitters = iter([0.0, 1.0, 0.5])
    client = make_client(sleep=sleep, retry=policy, jitter=lambda: next(jitters))
    with pytest.raises(RateLimited) as excinfo:
        await client.allowed_countries()
    assert excinfo.value.attempts == 4
    assert sleep.delays == pytest.approx([0.05, 0.2, 0.225])
    assert len(await sim.exchanges()) == 4


async def test_rate_limit_per_ip_is_waited_out(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.configure(rate_limit=2, retry_after=1)
    sleep = RecordingSleep(real=True)
    client = make_client(sleep=sleep)
    await client.create_customer(ANNA)
    started = time.monotonic()
    # Same ip, three customers: the third request in one second is refused, then waited out.
    for name in ("bob-1", "cid-1"):
        await client.create_customer(
            NewCustomer(customer_id=name, country_code="DE", ip="203.0.113.7", email="b@ex.com")
        )
    assert sleep.delays == [1.0]
    assert 0.9 <= time.monotonic() - started < 5
    assert [e["status"] for e in await sim.exchanges()] == [201, 201, 429, 201]


async def test_rate_limit_per_customer_applies_across_ips(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.configure(rate_limit=2)
    client = make_client(retry=RetryPolicy(max_attempts=1))
    await client.create_customer(ANNA)
    await client.create_session("anna-1", SESSION)
    other_ip = SessionRequest(country_code="DE", ip="192.0.2.99", user_agent="t", platform_id=1)
    with pytest.raises(RateLimited):
        await client.create_session("anna-1", other_ip)


async def test_500_on_a_safe_operation_is_retried(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=500, path="/customers")
    await make_client().create_customer(ANNA)
    assert [e["status"] for e in await sim.exchanges()] == [500, 201]


async def test_persistent_5xx_raises_server_error_after_bounded_attempts(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=503, times=10, path="/allowed-countries")
    sleep = RecordingSleep()
    with pytest.raises(ServerError) as excinfo:
        await make_client(sleep=sleep).allowed_countries()
    assert excinfo.value.status == 503
    assert len(await sim.exchanges()) == 3
    assert len(sleep.delays) == 2


async def test_timeout_is_retried_then_succeeds(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(delay=1.0, path="/allowed-countries")
    started = time.monotonic()
    assert await make_client(request_timeout=0.3).allowed_countries()
    assert time.monotonic() - started < 3


async def test_timeouts_exhausted_raise_gateway_unavailable_outcome_unknown(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(delay=1.0, times=3, path="/allowed-countries")
    with pytest.raises(GatewayUnavailable) as excinfo:
        await make_client(request_timeout=0.3).allowed_countries()
    assert excinfo.value.outcome_unknown is True


async def test_a_request_in_flight_across_a_reset_is_not_recorded_after_it(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    # The simulator is shared by the session: a delayed answer whose client gave up finishes
    # after the next test's reset, and must not show up among that test's exchanges.
    await sim.force(delay=0.6, path="/allowed-countries")
    client = make_client(request_timeout=0.1, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(GatewayUnavailable):
        await client.allowed_countries()
    await sim.reset()
    await asyncio.sleep(0.8)  # the held request has been answered by now
    assert await sim.exchanges() == []
    await client.allowed_countries()
    assert [e["status"] for e in await sim.exchanges()] == [200]


async def test_connection_refused_raises_gateway_unavailable_nothing_sent(
    make_client: ClientFactory,
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sleep = RecordingSleep()
    client = make_client(base_url=f"http://127.0.0.1:{closed_port}", sleep=sleep)
    with pytest.raises(GatewayUnavailable) as excinfo:
        await client.create_customer(ANNA)
    assert excinfo.value.outcome_unknown is False
    assert len(sleep.delays) == 2


async def test_bad_input_gives_a_clear_error_and_sends_nothing(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    with pytest.raises(InvalidRequest, match="customer_id"):
        await client.create_session("anna/../../admin", SESSION)
    with pytest.raises(InvalidRequest, match="customer_id"):
        await client.block_customer("c" * 65)
    with pytest.raises(InvalidRequest, match="first_name"):
        NewCustomer(
            customer_id="anna-1",
            country_code="DE",
            ip="203.0.113.7",
            email="a@ex.com",
            first_name="x" * 1000,
        )
    assert await sim.exchanges() == []


async def test_token_is_reused_then_renewed_with_an_injected_clock(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    # Start the fake clock 290 s in the past so the first token (300 s lifetime) is still valid
    # for the simulator's real clock, then move it to "now": the signer must renew.
    fake_now = [time.time() - 290]
    signer = make_client.signer(lifetime=300, renew_margin=30, clock=lambda: fake_now[0])
    client = make_client(signer=signer)
    await client.allowed_countries()
    fake_now[0] += 5
    await client.allowed_countries()
    fake_now[0] = time.time()
    await client.allowed_countries()
    tokens = [e["request_headers"]["Authorization"] for e in await sim.exchanges()]
    assert [e["status"] for e in await sim.exchanges()] == [200, 200, 200]
    assert tokens[0] == tokens[1]
    assert tokens[2] != tokens[1]
