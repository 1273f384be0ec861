"""Quadcode's balance callbacks against the running edge, ledger and projection: every status
code with its body, replays and conflicts, races, and crash recovery."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest

from ledger_core.commands import OpenBalance
from wallet_clients import Operator, Wallet
from wallet_stack import Stack, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    # The ledger trusts its memory at once (no lookup window after takeover), so these tests
    # exercise the optimistic path and its fallback when a request was decided before.
    return {"WALLET_LEDGER_VERIFY_SECONDS": "0"}


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


# -- 201 ------------------------------------------------------------------------------------------


async def test_debit_and_credit_answer_201_with_the_new_balance(
    operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "50.00")

    debit = await wallet.debit(customer, balance, "20.5")
    credit = await wallet.credit(customer, balance, "41")

    assert (debit.status, debit.json["amount"], debit.json["balance_current_amount"]) == (
        201,
        "20.50",
        "29.50",
    )
    assert (credit.status, credit.json["amount"], credit.json["balance_current_amount"]) == (
        201,
        "41.00",
        "70.50",
    )
    read = await wallet.read_eventually(customer, balance, "70.50")
    assert read.json == {
        "customer_id": customer,
        "balance_id": balance,
        "amount": "70.50",
        "currency_code": "USD",
    }


async def test_crypto_amounts_keep_every_digit(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("ETH", "1.000000000000000001")

    answer = await wallet.debit(customer, balance, "0.000000000000000001", currency="ETH")

    assert answer.status == 201
    assert answer.json["balance_current_amount"] == "1.000000000000000000"


# -- 400 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        ({"amount": "1.00", "currency_code": "USD", "comment": "x"}, "invalid_field"),
        ({"request_id": "r", "amount": 1, "currency_code": "USD", "comment": "x"}, "invalid_field"),
        ({"request_id": "r", "amount": "1.00", "currency_code": "USD"}, "invalid_field"),
        (
            {"request_id": 5, "amount": "1.00", "currency_code": "USD", "comment": "x"},
            "invalid_field",
        ),
        (
            {"request_id": "", "amount": "1.00", "currency_code": "USD", "comment": "x"},
            "invalid_id",
        ),
        (
            {"request_id": "r", "amount": "-1.00", "currency_code": "USD", "comment": "x"},
            "invalid_amount",
        ),
        (
            {"request_id": "r", "amount": "0", "currency_code": "USD", "comment": "x"},
            "invalid_amount",
        ),
        (
            {"request_id": "r", "amount": "1.001", "currency_code": "USD", "comment": "x"},
            "invalid_amount",
        ),
        (
            {"request_id": "r", "amount": "1e3", "currency_code": "USD", "comment": "x"},
            "invalid_amount",
        ),
        (
            {"request_id": "r", "amount": " 1.00", "currency_code": "USD", "comment": "x"},
            "invalid_amount",
        ),
        (
            {"request_id": "r", "amount": "1" * 16, "currency_code": "USD", "comment": "x"},
            "amount_too_large",
        ),
        (
            {"request_id": "r", "amount": "1.00", "currency_code": "XYZ", "comment": "x"},
            "unknown_currency",
        ),
    ],
)
async def test_malformed_request_is_400_and_changes_nothing(
    operator: Operator, wallet: Wallet, stack: Stack, body: dict[str, object] | bytes, code: str
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    answer = await wallet.post("debit", customer, balance, body)

    assert answer.status == 400
    assert answer.json["error"] == code and answer.json["message"]
    assert (await wallet.read_eventually(customer, balance, "10.00")).json["amount"] == "10.00"


async def test_currency_other_than_the_balances_is_400(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    answer = await wallet.debit(customer, balance, "1.00", currency="EUR")

    assert (answer.status, answer.json["error"]) == (400, "currency_mismatch")


async def test_body_too_large_is_400(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    body = {"request_id": "big", "amount": "1.00", "currency_code": "USD", "comment": "x" * 20_000}

    answer = await wallet.post("debit", customer, balance, body)

    assert (answer.status, answer.json["error"]) == (400, "body_too_large")


# -- 402 ------------------------------------------------------------------------------------------


async def test_debit_beyond_the_balance_is_402(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("USD", "5.00")

    answer = await wallet.debit(customer, balance, "5.01")

    assert (answer.status, answer.json["error"]) == (402, "insufficient_funds")


async def test_replayed_debit_returns_original_402_after_a_deposit(
    operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "1.00")
    first = await wallet.debit(customer, balance, "2.00", request_id="poor-1")
    await operator.deposit(customer, balance, "100.00")

    again = await wallet.debit(customer, balance, "2.00", request_id="poor-1")

    assert first.status == 402
    assert (again.status, again.body) == (first.status, first.body)


# -- 404 ------------------------------------------------------------------------------------------


async def test_unknown_customer_is_404(wallet: Wallet, unique: str) -> None:
    answer = await wallet.debit(f"nobody-{unique}", "b", "1.00")
    assert (answer.status, answer.json["error"]) == (404, "customer_not_found")


async def test_unknown_balance_is_404(operator: Operator, wallet: Wallet) -> None:
    customer, _ = await operator.customer_with_balance()
    answer = await wallet.debit(customer, "no-such-balance", "1.00")
    assert (answer.status, answer.json["error"]) == (404, "balance_not_found")


async def test_balance_of_another_customer_is_404(operator: Operator, wallet: Wallet) -> None:
    customer, _ = await operator.customer_with_balance()
    _, other_balance = await operator.customer_with_balance()

    debit = await wallet.debit(customer, other_balance, "1.00")
    read = await wallet.get(customer, other_balance)

    assert (debit.status, debit.json["error"]) == (404, "balance_not_found")
    assert (read.status, read.json["error"]) == (404, "balance_not_found")


async def test_replayed_404_stays_404_after_the_customer_exists(
    operator: Operator, wallet: Wallet, unique: str
) -> None:
    customer = f"late-{unique}"
    first = await wallet.debit(customer, f"{customer}_USD", "1.00", request_id="early")
    await operator.customer_with_balance("USD", "10.00", customer_id=customer)

    again = await wallet.debit(customer, f"{customer}_USD", "1.00", request_id="early")

    assert first.status == 404
    assert (again.status, again.body) == (404, first.body)


async def test_get_unknown_customer_is_404(wallet: Wallet, unique: str) -> None:
    answer = await wallet.get(f"ghost-{unique}", "x")
    assert (answer.status, answer.json["error"]) == (404, "customer_not_found")


# -- 409 ------------------------------------------------------------------------------------------


async def test_same_request_id_with_another_body_is_409_and_writes_nothing(
    operator: Operator, wallet: Wallet, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    request_id = uuid.uuid4().hex
    first = await wallet.debit(customer, balance, "1.00", request_id=request_id)

    conflict = await wallet.debit(customer, balance, "2.00", request_id=request_id)

    assert first.status == 201
    assert (conflict.status, conflict.json["error"]) == (409, "request_id_reused")
    assert await entries_for(stack, request_id) == 1
    assert (await wallet.read_eventually(customer, balance, "9.00")).json["amount"] == "9.00"


async def test_identical_retry_returns_the_original_bytes(
    operator: Operator, wallet: Wallet, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    request_id = uuid.uuid4().hex
    first = await wallet.debit(customer, balance, "1.00", request_id=request_id)
    await wallet.debit(customer, balance, "3.00")  # the balance moves on

    again = await wallet.debit(customer, balance, "1.00", request_id=request_id)

    assert (again.status, again.body) == (201, first.body)
    assert await entries_for(stack, request_id) == 1


async def test_request_id_is_scoped_to_the_operation(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    debit = await wallet.debit(customer, balance, "4.00", request_id="position-7")
    credit = await wallet.credit(customer, balance, "8.00", request_id="position-7")

    assert (debit.status, credit.status) == (201, 201)
    assert credit.json["balance_current_amount"] == "14.00"


# -- 451 ------------------------------------------------------------------------------------------


async def test_blocked_customer_is_451_for_every_callback(
    operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    assert (await operator.block(customer)).status == 200

    debit = await wallet.debit(customer, balance, "1.00")
    credit = await wallet.credit(customer, balance, "1.00")
    read = await wallet.get(customer, balance)
    for _ in range(100):
        if read.status == 451:
            break
        await asyncio.sleep(0.05)
        read = await wallet.get(customer, balance)

    assert (debit.status, debit.json["error"]) == (451, "customer_blocked")
    assert (credit.status, credit.json["error"]) == (451, "customer_blocked")
    assert (read.status, read.json["error"]) == (451, "customer_blocked")


async def test_unblocked_customer_can_trade_again(operator: Operator, wallet: Wallet) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    await operator.block(customer)
    await operator.block(customer, blocked=False)

    assert (await wallet.debit(customer, balance, "1.00")).status == 201


# -- routing --------------------------------------------------------------------------------------


async def test_unknown_route_is_a_json_404(wallet: Wallet) -> None:
    async with wallet.http.get(wallet.base_url + "/v2/nothing", headers=wallet.headers()) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "route_not_found"


# -- races ----------------------------------------------------------------------------------------


async def test_200_concurrent_debits_spend_exactly_the_balance(
    operator: Operator, wallet: Wallet, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")

    answers = await asyncio.gather(*(wallet.debit(customer, balance, "1.00") for _ in range(200)))

    statuses = sorted(a.status for a in answers)
    assert statuses.count(201) == 100 and statuses.count(402) == 100
    remaining = sorted(a.json["balance_current_amount"] for a in answers if a.status == 201)
    assert remaining[0] == "0.00"
    assert len(set(remaining)) == 100  # every success saw its own balance, none twice
    assert (await wallet.read_eventually(customer, balance, "0.00")).json["amount"] == "0.00"


async def test_racing_retries_of_one_request_id_make_one_entry(
    operator: Operator, wallet: Wallet, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")
    request_id = uuid.uuid4().hex

    answers = await asyncio.gather(
        *(wallet.debit(customer, balance, "7.00", request_id=request_id) for _ in range(25))
    )

    assert {(a.status, a.body) for a in answers} == {(201, answers[0].body)}
    assert await entries_for(stack, request_id) == 1
    assert (await wallet.read_eventually(customer, balance, "93.00")).json["amount"] == "93.00"


# -- restarts -------------------------------------------------------------------------------------


async def test_retries_after_a_ledger_restart_get_the_stored_outcomes(
    operator: Operator, wallet: Wallet, stack: Stack, unique: str
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    paid = await wallet.debit(customer, balance, "3.00", request_id=f"paid-{unique}")
    ghost = f"ghost-{unique}"
    missing = await wallet.debit(ghost, f"{ghost}_USD", "1.00", request_id=f"miss-{unique}")
    stack.ledger.signal(signal.SIGTERM)
    assert stack.ledger.wait(30) == 0
    stack.ledger.start()
    await wait_ready(stack.ledger)
    # The ghost now exists, in another currency: decided afresh, the retry would be a 400.
    await operator.customer_with_balance("EUR", None, customer_id=ghost)
    await operator.send(OpenBalance(ghost, f"{ghost}_USD", "EUR", uuid.uuid4().hex))

    paid_again = await wallet.debit(customer, balance, "3.00", request_id=f"paid-{unique}")
    missing_again = await wallet.debit(ghost, f"{ghost}_USD", "1.00", request_id=f"miss-{unique}")

    assert (paid_again.status, paid_again.body) == (201, paid.body)
    assert (missing_again.status, missing_again.body) == (404, missing.body)
    assert await entries_for(stack, f"paid-{unique}") == 1
    assert (await wallet.read_eventually(customer, balance, "7.00")).json["amount"] == "7.00"
