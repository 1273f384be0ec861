"""The trading-room player calls the wallet as Quadcode does: qc tokens, same request_id retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import jwt
import pytest
import pytest_asyncio

from quadcode_gateway.tokens import load_public_key
from quadcode_harness import AUDIENCE, FakeWallet, Keys, RecordingSleep
from simulators.quadcode.__main__ import render_text
from simulators.quadcode.trader import TradePlan, TradingRoomPlayer, quadcode_signer

PLAN = TradePlan(
    customer_id="c-1", balance_id="b-1", currency_code="USD", trades=2, stake=Decimal("1.00")
)


@pytest_asyncio.fixture
async def player_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_player(
    keys: Keys, wallet: FakeWallet, session: aiohttp.ClientSession, **options: object
) -> TradingRoomPlayer:
    return TradingRoomPlayer(
        wallet_base_url=wallet.base_url,
        signer=quadcode_signer(str(keys.qc_private), AUDIENCE),
        session=session,
        timeout=float(options.get("timeout", 0.4)),  # type: ignore[arg-type]
        max_attempts=int(options.get("max_attempts", 4)),  # type: ignore[call-overload]
        sleep=RecordingSleep(),
    )


@pytest.mark.unit
def test_payout_keeps_the_stake_precision() -> None:
    assert PLAN.payout() == Decimal("1.80")
    odd = TradePlan(
        customer_id="c",
        balance_id="b",
        currency_code="BTC",
        trades=1,
        stake=Decimal("0.00012345"),
        payout_ratio=Decimal("1.85"),
    )
    assert odd.payout() == Decimal("0.00022838")
    with pytest.raises(ValueError):
        TradePlan(customer_id="c", balance_id="b", currency_code="USD", trades=0, stake=Decimal(1))


@pytest.mark.integration
async def test_quadcode_token_is_es256_qc_and_ten_minutes(
    keys: Keys, fake_wallet: FakeWallet, player_session: aiohttp.ClientSession
) -> None:
    fake_wallet.balances[("c-1", "b-1")] = ("USD", Decimal("10.00"))
    await make_player(keys, fake_wallet, player_session).play(PLAN)
    assert len(set(fake_wallet.tokens)) == 1
    token = fake_wallet.tokens[0]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(
        token, load_public_key(keys.qc_public), algorithms=["ES256"], audience=AUDIENCE
    )
    assert claims["iss"] == "qc"
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.integration
async def test_unanswered_debit_is_retried_with_the_same_request_id(
    keys: Keys, fake_wallet: FakeWallet, player_session: aiohttp.ClientSession
) -> None:
    fake_wallet.balances[("c-1", "b-1")] = ("USD", Decimal("10.00"))
    fake_wallet.drop_first = {"debit", "credit"}
    report = await make_player(keys, fake_wallet, player_session).play(PLAN)
    first = report.trades[0]
    assert first.debit.attempts == ["timeout", 201]
    assert first.credit is not None and first.credit.attempts == ["timeout", 201]
    seen_debits = [s for s in fake_wallet.seen if s["operation"] == "debit"]
    assert seen_debits[0] == seen_debits[1]  # same body, same request_id
    # Applied once each despite the repeats: 10 - 1 + 1.80 - 1 = 9.80.
    assert report.balance_after == "9.80"


@pytest.mark.integration
async def test_5xx_is_retried_with_the_same_request_id(
    keys: Keys, fake_wallet: FakeWallet, player_session: aiohttp.ClientSession
) -> None:
    fake_wallet.balances[("c-1", "b-1")] = ("USD", Decimal("10.00"))
    fake_wallet.fail_first = {"debit"}
    report = await make_player(keys, fake_wallet, player_session).play(PLAN)
    assert report.trades[0].debit.attempts == [503, 201]
    ids = [s["request_id"] for s in fake_wallet.seen if s["operation"] == "debit"]
    assert ids[0] == ids[1]


@pytest.mark.integration
async def test_retries_are_bounded_and_an_unanswered_trade_is_not_closed(
    keys: Keys, fake_wallet: FakeWallet, player_session: aiohttp.ClientSession
) -> None:
    fake_wallet.balances[("c-1", "b-1")] = ("USD", Decimal("10.00"))
    fake_wallet.always_fail = True
    report = await make_player(keys, fake_wallet, player_session, max_attempts=3).play(PLAN)
    assert [t.outcome for t in report.trades] == ["unknown", "unknown"]
    assert all(t.debit.attempts == [503, 503, 503] for t in report.trades)
    assert all(t.credit is None for t in report.trades)


@pytest.mark.integration
async def test_insufficient_funds_is_not_retried_and_opens_nothing(
    keys: Keys, fake_wallet: FakeWallet, player_session: aiohttp.ClientSession
) -> None:
    fake_wallet.balances[("c-1", "b-1")] = ("USD", Decimal("0.50"))
    report = await make_player(keys, fake_wallet, player_session).play(PLAN)
    assert [t.outcome for t in report.trades] == ["not_opened", "not_opened"]
    assert report.trades[0].debit.attempts == [402]
    assert report.balance_before == report.balance_after == "0.50"


@pytest.mark.unit
def test_text_report_shows_every_attempt_and_each_answer() -> None:
    def call(
        operation: str, amount: str, attempts: list[object], body: object
    ) -> dict[str, object]:
        status = attempts[-1] if isinstance(attempts[-1], int) else None
        return {
            "operation": operation,
            "amount": amount,
            "attempts": attempts,
            "status": status,
            "body": body,
        }

    report = {
        "currency_code": "USD",
        "balance_before": "10.00",
        "balance_after": "8.80",
        "trades": [
            {
                "number": 1,
                "outcome": "win",
                "debit": call(
                    "debit", "5.00", ["connection_error", 201], {"balance_current_amount": "5.00"}
                ),
                "credit": call("credit", "9.00", [201], {"balance_current_amount": "14.00"}),
            },
            {
                "number": 2,
                "outcome": "not_opened",
                "debit": call("debit", "50.00", [402], {"error": "insufficient_funds"}),
                "credit": None,
            },
            {
                "number": 3,
                "outcome": "unknown",
                "debit": call("debit", "1.00", ["timeout"] * 2, None),
            },
        ],
    }

    assert render_text(report).splitlines() == [
        "balance before (GET): 10.00 USD",
        "option 1 win   debit 5.00: connection_error -> 201, balance 5.00; credit 9.00: 201, balance 14.00",
        "option 2 not_opened  debit 50.00: 402 (insufficient_funds)",
        "option 3 unknown  debit 1.00: timeout -> timeout",
        "balance after (GET):  8.80 USD",
    ]
