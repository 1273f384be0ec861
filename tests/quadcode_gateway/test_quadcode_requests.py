"""Inputs are checked before anything is sent: a clear InvalidRequest names every bad field."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from quadcode_gateway import (
    BalanceType,
    InvalidRequest,
    MoneyTransfer,
    NewCustomer,
    NewUser,
    QuadcodeGatewayClient,
    SessionRequest,
    TokenSigner,
    TradingBalance,
    Visit,
)
from quadcode_gateway.internal import InternalBalanceClient
from quadcode_gateway.tokens import generate_keypair

GOOD_CUSTOMER: dict[str, Any] = {
    "customer_id": "cust-42",
    "country_code": "DE",
    "ip": "203.0.113.7",
    "email": "anna@example.com",
}
GOOD_VISIT: dict[str, Any] = {
    "country_code": "DE",
    "ip": "2001:db8::1",
    "locale": "en_US",
    "site_domain": "trade.brand-domain.com",
}


def problems(excinfo: pytest.ExceptionInfo[InvalidRequest]) -> dict[str, str]:
    return excinfo.value.field_errors


@pytest.mark.unit
def test_valid_customer_serialises_only_given_fields() -> None:
    customer = NewCustomer(**GOOD_CUSTOMER, last_name="Ng", date_of_birth=date(1990, 5, 17))
    assert customer.to_json() == {**GOOD_CUSTOMER, "last_name": "Ng", "date_of_birth": "1990-05-17"}


@pytest.mark.unit
@pytest.mark.parametrize(
    "customer_id",
    ["", "a" * 65, "a/b", "..", "../admin", "a b", "ünï", "id?x=1", "#frag", None, 42],
)
def test_malformed_customer_id_is_refused(customer_id: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(**{**GOOD_CUSTOMER, "customer_id": customer_id})
    assert set(problems(excinfo)) == {"customer_id"}


@pytest.mark.unit
@pytest.mark.parametrize("country_code", ["de", "XX", "DEU", "", "D", None])
def test_country_must_be_iso_alpha_2(country_code: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(**{**GOOD_CUSTOMER, "country_code": country_code})
    assert set(problems(excinfo)) == {"country_code"}


@pytest.mark.unit
@pytest.mark.parametrize("ip", ["1.2.3", "256.1.1.1", "::g", "localhost", "", " 1.2.3.4"])
def test_ip_must_parse(ip: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(**{**GOOD_CUSTOMER, "ip": ip})
    assert set(problems(excinfo)) == {"ip"}


@pytest.mark.unit
@pytest.mark.parametrize(
    "email", ["anna", "anna@", "@example.com", "an na@example.com", "a@b@c.d", "a" * 65 + "@x.io"]
)
def test_email_must_have_address_shape(email: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(**{**GOOD_CUSTOMER, "email": email})
    assert set(problems(excinfo)) == {"email"}


@pytest.mark.unit
def test_oversized_and_control_character_fields_are_refused() -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(
            **GOOD_CUSTOMER,
            first_name="x" * 256,
            last_name="Ng\x00",
            phone_number="12",
            account_timezone="Mars Base/Alpha!",
            date_of_birth=date.today() + timedelta(days=1),
        )
    assert set(problems(excinfo)) == {
        "first_name",
        "last_name",
        "phone_number",
        "account_timezone",
        "date_of_birth",
    }


@pytest.mark.unit
def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        NewCustomer(customer_id="", country_code="xx", ip="nope", email="nope")
    assert set(problems(excinfo)) == {"customer_id", "country_code", "ip", "email"}
    assert "nothing sent" in str(excinfo.value)


@pytest.mark.unit
def test_balance_type_must_be_real_or_demo() -> None:
    assert TradingBalance(balance_id="1234_USD", currency_code="USD").balance_type == "real"
    TradingBalance(balance_id="1", currency_code="USDT", balance_type=BalanceType.DEMO)
    with pytest.raises(InvalidRequest) as excinfo:
        TradingBalance(balance_id="1", currency_code="usd", balance_type="fake")  # type: ignore[arg-type]
    assert set(problems(excinfo)) == {"balance_currency_code", "balance_type"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("locale", "english"),
        ("locale", "en-US"),
        ("site_domain", "https://trade.example.com"),
        ("site_domain", "trade.example.com/path"),
        ("site_domain", "-bad-.example.com"),
        ("site_domain", ""),
    ],
)
def test_visit_locale_and_site_domain_are_checked(field: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        Visit(**{**GOOD_VISIT, field: value})
    assert set(problems(excinfo)) == {field}


@pytest.mark.unit
@pytest.mark.parametrize("platform_id", [0, -1, True, "1", 2**31])
def test_platform_id_must_be_a_positive_int32(platform_id: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        SessionRequest(country_code="DE", ip="1.2.3.4", user_agent="bot/1", platform_id=platform_id)  # type: ignore[arg-type]
    assert set(problems(excinfo)) == {"platform_id"}


@pytest.mark.unit
def test_user_agent_is_bounded() -> None:
    with pytest.raises(InvalidRequest):
        SessionRequest(country_code="DE", ip="1.2.3.4", user_agent="x" * 513, platform_id=1)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("amount", "wire"),
    [
        (Decimal("2.01"), "2.01"),
        ("2.01", "2.01"),
        (Decimal("1E+2"), "100"),
        ("0.00000001", "0.00000001"),
    ],
)
def test_money_amounts_go_out_as_decimal_strings(amount: Decimal | str, wire: str) -> None:
    transfer = MoneyTransfer(request_id="dep-1", amount=amount, currency_code="USD")
    assert transfer.to_json() == {
        "request_id": "dep-1",
        "amount": wire,
        "amount_currency_code": "USD",
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    "amount", [2.01, 2, "-1", "0", "0.00", "1e5", "1,00", "NaN", Decimal("Infinity"), Decimal("-3")]
)
def test_bad_or_float_amounts_are_refused(amount: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        MoneyTransfer(request_id="dep-1", amount=amount, currency_code="USD")  # type: ignore[arg-type]
    assert set(problems(excinfo)) == {"amount"}


@pytest.mark.unit
def test_new_user_repr_hides_the_password() -> None:
    user = NewUser(
        email="anna@example.com",
        password="s3cret-pass",
        country_code="DE",
        ip="1.2.3.4",
        balance_currency_code="EUR",
    )
    assert "s3cret" not in repr(user)
    assert user.to_json()["password"] == "s3cret-pass"


@pytest.fixture
def offline_signer(tmp_path: Any) -> TokenSigner:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    return TokenSigner.from_pem_file(tmp_path / "k.pem", issuer="acme", audience="sandbox")


@pytest.mark.unit
async def test_client_refuses_bad_path_ids_before_opening_a_connection(
    offline_signer: TokenSigner,
) -> None:
    # Port 9 (discard) on a reserved address: if anything were sent the test would fail with a
    # connection error, not InvalidRequest; and no session is ever created.
    client = QuadcodeGatewayClient.create(base_url="http://192.0.2.1:9", signer=offline_signer)
    balance = TradingBalance(balance_id="1", currency_code="USD")
    visit = Visit(**GOOD_VISIT)
    with pytest.raises(InvalidRequest):
        await client.block_customer("../../admin")
    with pytest.raises(InvalidRequest):
        await client.create_login_url("x" * 65, balance, visit)
    internal = InternalBalanceClient.create(base_url="http://192.0.2.1:9", signer=offline_signer)
    for bad_user_id in (0, -5, True):
        with pytest.raises(InvalidRequest):
            await internal.balances(bad_user_id)
    with pytest.raises(InvalidRequest):
        await internal.update_password(7, "")
    assert client.transport.session is None and internal.transport.session is None
