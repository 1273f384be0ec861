"""Input the ledger can not store, and paths that try to address something else, against the
running edge: a 400 (or 404) that changes nothing and reveals nothing, and every id the edge
accepts stays addressable."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest
from yarl import URL

from ledger_core.commands import OpenBalance
from wallet_clients import Answer, Operator, Wallet

pytestmark = pytest.mark.e2e


async def send(
    wallet: Wallet, method: str, raw_path: str, body: dict[str, object] | None = None
) -> Answer:
    """A request whose path goes on the wire exactly as written (already percent-encoded)."""
    url = URL(wallet.base_url + raw_path, encoded=True)
    data = None if body is None else orjson.dumps(body)
    async with wallet.http.request(method, url, data=data, headers=wallet.headers()) as resp:
        return Answer(resp.status, await resp.read())


def segment(value: str) -> str:
    return quote(value, safe="")


def move(request_id: str, comment: str = "option closed") -> dict[str, object]:
    return {"request_id": request_id, "amount": "1.00", "currency_code": "USD", "comment": comment}


# The path's ids are written percent-encoded; "{b}" stands for the real balance id.
HOSTILE = {
    "nul_in_comment": ("{b}", move("nul", "a\u0000b"), "invalid_field"),
    "ansi_escape_in_comment": ("{b}", move("ansi", "\x1b[2J\x1b[31mPAID\x1b[0m"), "invalid_field"),
    "bidi_override_in_comment": ("{b}", move("bidi", "\u202edeggol"), "invalid_field"),
    "line_separator_in_comment": ("{b}", move("ls", "a\u2028b"), "invalid_field"),
    "control_character_in_request_id": ("{b}", move("r\u0001x"), "invalid_id"),
    "nul_in_request_id": ("{b}", move("r\u0000"), "invalid_id"),
    "control_character_in_balance_id": ("{b}%01", move("path-ctl"), "invalid_id"),
    "escape_in_balance_id": ("{b}%1B%5B31m", move("path-esc"), "invalid_id"),
    "question_mark_in_balance_id": ("{b}%3Fx", move("path-q"), "invalid_id"),
    "slash_in_balance_id": ("{b}%2Fx", move("path-slash"), "invalid_id"),
    "space_in_balance_id": ("{b}%20", move("path-space"), "invalid_id"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("kind", ["credit", "debit"])
async def test_input_the_ledger_can_not_store_is_400_and_changes_nothing(
    case: str, kind: str, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    path_balance, body, code = HOSTILE[case]
    raw_balance = path_balance.replace("{b}", segment(balance))

    answer = await send(
        wallet, "POST", f"/v1/customers/{segment(customer)}/balances/{raw_balance}/{kind}", body
    )

    assert (answer.status, answer.json["error"]) == (400, code)
    assert (await wallet.read_eventually(customer, balance, "10.00")).json["amount"] == "10.00"
    # Nothing was applied and nothing is stuck: the next good request is the first to move money.
    follow = await wallet.credit(customer, balance, "0.01")
    assert (follow.status, follow.json["balance_current_amount"]) == (201, "10.01")


async def test_a_get_can_not_walk_to_another_customers_balance(
    operator: Operator, wallet: Wallet
) -> None:
    customer, _ = await operator.customer_with_balance("USD", "10.00")
    other, other_balance = await operator.customer_with_balance("USD", "77.00")
    await wallet.read_eventually(other, other_balance, "77.00")
    c, o, ob = segment(customer), segment(other), segment(other_balance)
    walks = [
        f"/v1/customers/{c}/balances/..%2F..%2F{o}%2Fbalances%2F{ob}",
        f"/v1/customers/{c}/balances/..%2f..%2f{o}%2fbalances%2f{ob}",
        f"/v1/customers/{c}/balances/%2E%2E%2F%2E%2E%2F{o}%2Fbalances%2F{ob}",
        f"/v1/customers/{c}/balances/..%5C..%5C{o}%5Cbalances%5C{ob}",
        f"/v1/customers/{c}/balances/%2E%2E",
        f"/v1/customers/%2E/balances/{ob}",
        f"/v1/customers/{c}/balances/..%2F..%2F..%2F..%2Fmetrics",
        f"/v1/customers/{c}/balances/..%2F..%2F..%2F..%2Fready",
    ]
    for walk in walks:
        answer = await send(wallet, "GET", walk)
        assert answer.status in (400, 404), (walk, answer)
        assert set(answer.json) == {"error", "message"}, walk
        assert other.encode() not in answer.body and b"77.00" not in answer.body, walk


async def test_every_id_the_edge_accepts_on_debit_is_readable_by_get(
    operator: Operator, wallet: Wallet, unique: str
) -> None:
    # Every punctuation mark an id may hold, ids that look like path steps without being one,
    # and Quadcode's own shapes.
    for customer, balance in [
        (f"c{unique}-._~!$&'()*+,=:@", f"b{unique}!$&'()*+,=:@-._~"),
        (f"...{unique}", f".{unique}"),
        (f"{int(unique, 16) % 10**9}", f"{int(unique, 16) % 10**9 + 1}_USD"),
    ]:
        # customer_with_balance names the balance after the customer; open ours as well.
        await operator.customer_with_balance("USD", None, customer_id=customer)
        opened = await operator.send(OpenBalance(customer, balance, "USD", f"open-{unique}"))
        assert opened.status == 201
        await operator.deposit(customer, balance, "10.00")
        path = f"/v1/customers/{segment(customer)}/balances/{segment(balance)}"

        debit = await send(wallet, "POST", path + "/debit", move(f"{balance}:{customer}"))
        assert debit.status == 201, debit
        assert (debit.json["customer_id"], debit.json["balance_id"]) == (customer, balance)

        read = await wallet.read_eventually(customer, balance, "9.00")
        assert (read.status, read.json["amount"]) == (200, "9.00"), read
        # The same ids written literally (sub-delimiters need no encoding) address the same.
        literal = await send(wallet, "GET", f"/v1/customers/{customer}/balances/{balance}")
        assert (
            literal.json
            == read.json
            == {
                "customer_id": customer,
                "balance_id": balance,
                "amount": "9.00",
                "currency_code": "USD",
            }
        )
