"""The operator console in real headless Chromium (Debian's, driven by Playwright), served by a
signed operator API process in front of a real ledger on Kafka and Postgres, with exchanges at
the Swapgate simulator.

Each test signs in by pasting a key made with the bootstrap CLI, then works the pages as an
operator would; what the page shows is checked against what the API answers. A screenshot of
every page is kept in ``tests/artifacts/console/<page>.png``. No page may log a script error or a
Content-Security-Policy violation.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiokafka.partitioner import DefaultPartitioner
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    async_playwright,
    expect,
)

from exchange_stack import (
    Exchanges,
    exchange_request,
    start_operator_api,
    swapgate_simulator,
)
from ledger_core.commands import Envelope, MoneyCommand, encode
from operator_client import Credentials, OperatorClient, load_credentials
from swapgate.signing import sign
from wallet_platform import topics
from wallet_platform.kafka import make_producer
from wallet_stack import REPO, Service, Stack

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "tests" / "artifacts" / "console"
CHROMIUM_SCRIPT = REPO / "deploy" / "local" / "chromium.sh"
TIMEOUT_MS = 20_000


def chromium_path() -> str:
    """Debian's Chromium (installed by ``deploy/local/chromium.sh``, which ``make test`` runs)."""
    found = subprocess.run(
        ["bash", str(CHROMIUM_SCRIPT), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"no Chromium: run `bash {CHROMIUM_SCRIPT} install` ({found.stderr.strip()})")
    return found.stdout.strip()


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Four eyes on USD deposits and withdrawals of 1,000 or more (the other tests move less)."""
    return {"WALLET_OPERATOR_FOUR_EYES_THRESHOLDS": "USD=1000"}


@pytest.fixture(scope="module")
def swapgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with swapgate_simulator(
        tmp_path_factory.mktemp("swapgate") / "simulator.log", step_s=0.3
    ) as url:
        yield url


@pytest.fixture(scope="module")
async def api(
    stack: Stack, swapgate: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    service = await start_operator_api(stack, swapgate, tmp_path_factory.mktemp("console-api"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def credentials(api: Service) -> Credentials:
    """The admin key the bootstrap CLI made for this operator API."""
    return load_credentials(api.env["WALLET_OPERATOR_CREDENTIALS"])


@pytest.fixture(scope="module")
async def client(credentials: Credentials) -> AsyncIterator[OperatorClient]:
    """The same key in the project's signing client: what the page shows is checked with it."""
    async with OperatorClient.from_credentials(credentials) as signed:
        yield signed


@pytest.fixture(scope="module")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    # As root (CI, this machine) Chromium runs only without its sandbox; /dev/shm may be small.
    chromium = await playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )
    yield chromium
    await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context per test (its own sessionStorage: signed out), watched for
    script errors and CSP violations, which fail the test."""
    context: BrowserContext = await browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        # The browser logs a refused fetch (4xx) as an error too: those are the API's answers
        # and the page shows them; only script errors and CSP violations are problems here.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console error: {message.text}")

    tab.on("console", on_console)
    yield tab
    await context.close()
    assert problems == []


async def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the page as it is now: ``tests/artifacts/console/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, api: Service, public_key: str, secret_key: str) -> None:
    await page.goto(f"{api.url}/console/")
    await page.get_by_label("Public key").fill(public_key)
    await page.get_by_label("Secret key").fill(secret_key)
    await page.get_by_role("button", name="Sign in").click()


async def signed_in(page: Page, api: Service, credentials: Credentials) -> None:
    await sign_in(page, api, credentials.public_key, credentials.secret_key)
    await expect(page.get_by_role("heading", name="Find a customer")).to_be_visible()


async def customer_with_balance(
    client: OperatorClient, deposits: list[str], currency: str = "USD"
) -> tuple[str, str]:
    """A customer made through the operator API, with one balance and these deposits."""
    customer = "console-" + uuid.uuid4().hex[:10]
    balance = f"{customer}_{currency}"
    assert (await client.post("/v1/customers", {"customerId": customer}))[0] == 201
    body = {"balanceId": balance, "currency": currency, "requestId": "open-" + balance}
    assert (await client.post(f"/v1/customers/{customer}/balances", body))[0] == 201
    for i, amount in enumerate(deposits):
        status, answer = await client.post(
            f"/v1/customers/{customer}/balances/{balance}/deposits",
            {"requestId": f"seed-{i}", "amount": amount},
        )
        assert status == 201, answer
    return customer, balance


async def balance_of(client: OperatorClient, customer: str, balance: str) -> dict[str, Any]:
    status, view = await client.get(f"/v1/customers/{customer}/balances/{balance}")
    assert status == 200, view
    return dict(view)


async def entries_of(client: OperatorClient, customer: str, request_id: str) -> list[Any]:
    status, found = await client.get(f"/v1/entries?customerId={customer}&requestId={request_id}")
    assert status == 200, found
    return list(found["entries"])


async def test_console_files_are_public_and_sent_with_a_strict_content_security_policy(
    api: Service,
) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/console/") as resp:
        # No signature headers: the console's files are not under /v1/.
        assert resp.status == 200 and resp.content_type == "text/html"
        policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert '<script type="module" src="app.js"></script>' in await resp.text()


async def test_a_wrong_secret_shows_the_apis_403_code_and_keeps_nothing(
    page: Page, api: Service, credentials: Credentials
) -> None:
    await page.goto(f"{api.url}/console/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shot(page, "sign-in")
    await sign_in(page, api, credentials.public_key, "0" * 64)
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("HTTP 403")
    await expect(alert).to_contain_text("signature_mismatch")
    await shot(page, "sign-in-refused")
    assert await page.evaluate("() => sessionStorage.length") == 0
    # The navigation stays hidden: nothing can be reached without a key the API accepted.
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()


async def test_the_pages_signature_is_the_servers_for_any_body(page: Page, api: Service) -> None:
    await page.goto(f"{api.url}/console/")
    vector = {
        "secret": "4f3c2b1a" * 8,
        "publicKey": "cHVibGljLWtleS1mb3ItYS10ZXN0LW9mLXRoZS1zaWduYXR1cmU=",
        "timestamp": 1767225600123,
        "body": '{"comment":"é € 😀","amount":"10.50"}',
    }
    signed = await page.evaluate(
        """async (v) => {
            const m = await import("/console/signing.js");
            const key = await m.importSecret(v.secret);
            return m.signature(key, v.timestamp, v.body, v.publicKey);
        }""",
        vector,
    )
    assert signed == sign(
        vector["secret"], vector["timestamp"], vector["body"].encode(), vector["publicKey"]
    )


async def test_find_a_customer_then_see_balances_and_a_statement_page_by_page(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient
) -> None:
    # 21 postings: a first page of 20 and a second one of one.
    customer, balance = await customer_with_balance(client, ["1.00"] * 20 + ["5.25"])
    await signed_in(page, api, credentials)
    await shot(page, "find-customer")
    await page.get_by_label("Customer id").fill(customer)
    await page.get_by_role("button", name="Find").click()
    await expect(page.get_by_role("heading", name=f"Customer {customer}")).to_be_visible()
    balances = page.get_by_role("table", name="Balances")
    row = balances.get_by_role("row").filter(has_text=balance)
    view = await balance_of(client, customer, balance)
    assert (view["total"], view["held"], view["available"]) == ("25.25", "0.00", "25.25")
    for header, value in (("Total", "25.25"), ("Held", "0.00"), ("Available", "25.25")):
        await expect(balances.get_by_role("columnheader", name=header)).to_be_visible()
        await expect(row).to_contain_text(value)
    await expect(page.get_by_test_id("customer-status")).to_have_text("Active")
    await shot(page, "customer")

    await row.get_by_role("link", name="Statement").click()
    statement = page.get_by_role("table", name="Postings from the first")
    await expect(statement.get_by_role("row")).to_have_count(21)  # the header and 20 lines
    await expect(statement.get_by_role("row").nth(1)).to_contain_text("seed-0")
    await shot(page, "statement")
    await page.get_by_role("link", name="Next page").click()
    second = page.get_by_role("table", name="Postings after seq 20")
    await expect(second.get_by_role("row")).to_have_count(2)
    await expect(second).to_contain_text("5.25")
    await expect(second).to_contain_text("25.25")
    await expect(page.get_by_text("Last page")).to_be_visible()
    await shot(page, "statement-last-page")


async def test_a_double_clicked_deposit_confirmation_pays_once(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient
) -> None:
    customer, balance = await customer_with_balance(client, ["100.00"])
    await signed_in(page, api, credentials)
    await page.goto(f"{api.url}/console/#/customers/{customer}/balances/{balance}/deposit")
    await page.get_by_label("Amount (USD)").fill("10.5")
    await page.get_by_label("Comment (optional)").fill("console test")
    await page.get_by_role("button", name="Review").click()
    confirm = page.get_by_role("button", name="Confirm deposit")
    await expect(page.get_by_role("heading", name="Confirm the deposit")).to_be_visible()
    # Nothing is sent before the confirmation.
    assert (await balance_of(client, customer, balance))["total"] == "100.00"
    await shot(page, "deposit-confirm")
    await confirm.dblclick()
    await expect(page.get_by_test_id("available-after")).to_have_text("110.50")
    await shot(page, "deposit-done")
    request_id = await request_id_shown(page)
    assert len(await entries_of(client, customer, request_id)) == 1
    assert (await balance_of(client, customer, balance))["total"] == "110.50"


async def request_id_shown(page: Page) -> str:
    text = await page.get_by_text(re.compile(r"^Request id console-")).first.inner_text()
    return text.removeprefix("Request id ").strip()


async def test_a_confirmation_retried_after_a_lost_answer_keeps_its_request_id_and_pays_once(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient
) -> None:
    customer, balance = await customer_with_balance(client, ["50.00"])
    await signed_in(page, api, credentials)
    lost: list[int] = []

    async def lose_the_first_answer(route: Route) -> None:
        # The request reaches the API and is applied; the browser never sees the answer.
        if not lost:
            answer = await route.fetch()
            lost.append(answer.status)
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await page.route(re.compile(r".*/withdrawals$"), lose_the_first_answer)
    await page.goto(f"{api.url}/console/#/customers/{customer}/balances/{balance}/withdrawal")
    await page.get_by_label("Amount (USD)").fill("20")
    await page.get_by_role("button", name="Review").click()
    first_id = await request_id_shown(page)
    await page.get_by_role("button", name="Confirm withdrawal").click()
    await expect(page.get_by_role("alert")).to_contain_text("no_answer")
    # Its outcome is unknown to the page: only the same request may follow, not a changed one.
    await expect(page.get_by_role("button", name="Change")).to_be_disabled()
    assert lost == [201]
    assert (await balance_of(client, customer, balance))["total"] == "30.00"
    await shot(page, "withdrawal-answer-lost")
    await page.get_by_role("button", name="Confirm withdrawal").click()
    await expect(page.get_by_test_id("available-after")).to_have_text("30.00")
    assert await request_id_shown(page) == first_id
    assert len(await entries_of(client, customer, first_id)) == 1
    assert (await balance_of(client, customer, balance))["total"] == "30.00"


async def test_block_and_unblock_a_customer(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient
) -> None:
    customer, _ = await customer_with_balance(client, [])
    await signed_in(page, api, credentials)
    await page.goto(f"{api.url}/console/#/customers/{customer}")
    await page.get_by_role("button", name="Block customer").click()
    await expect(page.get_by_test_id("customer-status")).to_have_text("Blocked")
    assert (await client.get(f"/v1/customers/{customer}"))[1]["blocked"] is True
    await shot(page, "customer-blocked")
    await page.get_by_role("button", name="Unblock customer").click()
    await expect(page.get_by_test_id("customer-status")).to_have_text("Active")
    assert (await client.get(f"/v1/customers/{customer}"))[1]["blocked"] is False


async def test_an_unknown_customer_shows_the_apis_404_code(
    page: Page, api: Service, credentials: Credentials
) -> None:
    await signed_in(page, api, credentials)
    await page.goto(f"{api.url}/console/#/customers/nobody-{uuid.uuid4().hex[:8]}")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("HTTP 404")
    await expect(alert).to_contain_text("customer_not_found")
    await shot(page, "customer-not-found")


async def test_the_trial_balance_sums_to_zero_per_currency(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient
) -> None:
    await customer_with_balance(client, ["7.00"])
    await signed_in(page, api, credentials)
    await page.get_by_role("link", name="Trial balance").click()
    trial = page.get_by_role("table", name=re.compile("^Per currency"))
    usd = trial.get_by_role("row").filter(has_text="USD")
    await expect(usd).to_have_count(1)
    status, answer = await client.get("/v1/trial-balance")
    assert status == 200 and answer["balanced"] is True
    expected = next(c for c in answer["currencies"] if c["currency"] == "USD")
    await expect(usd).to_contain_text(expected["customers"])
    await expect(page.get_by_test_id("trial-balanced")).to_contain_text("Yes")
    await shot(page, "trial-balance")


async def test_follow_an_exchange_until_it_settles(
    page: Page,
    api: Service,
    credentials: Credentials,
    client: OperatorClient,
    http: aiohttp.ClientSession,
) -> None:
    customer, _ = await customer_with_balance(client, ["100"], currency="USDT")
    opened = {"balanceId": f"{customer}_BTC", "currency": "BTC", "requestId": "open-btc"}
    assert (await client.post(f"/v1/customers/{customer}/balances", opened))[0] == 201
    request = exchange_request(customer, amount="60")
    started = await Exchanges(http, api).start(customer, request)
    assert started.status == 202, started.json
    await signed_in(page, api, credentials)
    await page.get_by_role("link", name="Exchanges").click()
    await page.get_by_label("Customer id").fill(customer)
    await page.get_by_label("Exchange id").fill(request["exchange_id"])
    await page.get_by_role("button", name="Follow").click()
    await expect(page.get_by_test_id("exchange-state")).to_have_text("settled", timeout=60_000)
    await expect(page.get_by_role("status")).to_contain_text("Final: settled")
    await shot(page, "exchange")
    btc = await balance_of(client, customer, f"{customer}_BTC")
    assert Decimal(btc["total"]) > 0
    await expect(page.get_by_text(f"{btc['total']} BTC")).to_be_visible()


async def test_a_deposit_over_the_threshold_waits_for_a_second_key_to_approve_it(
    page: Page,
    browser: Browser,
    api: Service,
    credentials: Credentials,
    client: OperatorClient,
) -> None:
    customer, balance = await customer_with_balance(client, ["10.00"])
    await signed_in(page, api, credentials)
    await page.goto(f"{api.url}/console/#/customers/{customer}/balances/{balance}/deposit")
    await page.get_by_label("Amount (USD)").fill("1500")
    await page.get_by_role("button", name="Review").click()
    await page.get_by_role("button", name="Confirm deposit").click()
    adjustment = await page.get_by_test_id("adjustment-id").inner_text()
    assert (await balance_of(client, customer, balance))["total"] == "10.00"
    await page.get_by_role("link", name="Adjustments awaiting approval").click()
    row = (
        page.get_by_role("table", name=re.compile("^Pending adjustments"))
        .get_by_role("row")
        .filter(has_text=customer)
    )
    await row.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("alert")).to_contain_text("maker_cannot_approve")
    await shot(page, "adjustments")

    status, second = await client.post(
        "/v1/api-keys",
        {"name": "checker", "whiteListIp": ["127.0.0.1"], "settings": {"role": "operator"}},
    )
    assert status == 201, second
    checker = await browser.new_context()
    try:
        other = await checker.new_page()
        await signed_in(other, api, Credentials(api.url, second["publicKey"], second["secretKey"]))
        await other.get_by_role("link", name="Adjustments").click()
        await (
            other.get_by_role("row")
            .filter(has_text=customer)
            .get_by_role("button", name="Approve")
            .click()
        )
        await expect(other.get_by_role("row").filter(has_text=customer)).to_have_count(0)
    finally:
        await checker.close()
    status, found = await client.get(f"/v1/adjustments/{adjustment}")
    assert (status, found["status"]) == (200, "approved")
    assert (await balance_of(client, customer, balance))["total"] == "1510.00"


async def test_start_a_read_model_rebuild_and_watch_it_finish(
    page: Page, api: Service, credentials: Credentials
) -> None:
    await signed_in(page, api, credentials)
    await page.get_by_role("link", name="Jobs").click()
    await page.get_by_label("Job", exact=True).select_option("projection_rebuild")
    await page.get_by_role("button", name="Start job").click()
    await expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=90_000)
    await expect(page.get_by_role("status")).to_contain_text("Finished: succeeded")
    await shot(page, "job")
    await page.get_by_role("link", name="← Jobs").click()
    await expect(page.get_by_role("table", name=re.compile("^Recent jobs"))).to_contain_text(
        "projection_rebuild"
    )
    await shot(page, "jobs")


async def test_a_dead_letter_is_listed_and_redriven_once(
    page: Page, api: Service, credentials: Credentials, client: OperatorClient, stack: Stack
) -> None:
    customer, balance = await customer_with_balance(client, ["100.00"])
    request_id = "parked-" + uuid.uuid4().hex[:8]
    raw = encode(
        MoneyCommand("deposit", customer, balance, request_id, "50.00", "USD", "late"),
        Envelope(uuid.uuid4().hex, 7),
    )
    # Parked as an older ledger whose decoder did not know the command would have parked it.
    commands = topics.topic_name(topics.COMMANDS, stack.prefix)
    key = customer.encode()
    # The command's own partition (named in the copy's source header); the dead-letter topic has
    # one partition, 0, which the page lists.
    partition = DefaultPartitioner()(key, list(range(8)), list(range(8)))
    producer = make_producer(stack.kafka, "console-test-parker")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.topic_name(topics.DEAD_LETTER, stack.prefix),
            raw,
            key=key,
            headers=[
                ("reason", b"undecodable"),
                ("error", b"unknown command type 'deposit'"),
                ("source", f"{commands}:{partition}:0".encode()),
            ],
        )
    finally:
        await producer.stop()
    await signed_in(page, api, credentials)
    await page.goto(f"{api.url}/console/#/dead-letters?partition=0")
    row = page.get_by_role("table", name="Parked commands").get_by_role("row")
    await row.filter(has_text=request_id).get_by_role("link").click()
    await expect(page.get_by_test_id("dead-letter-status")).to_have_text("new")
    await shot(page, "dead-letter")
    await page.get_by_role("button", name="Redrive").click()
    await expect(page.get_by_test_id("dead-letter-status")).to_have_text("redriven")
    await expect(page.get_by_role("button", name="Redrive")).to_have_count(0)
    for _ in range(100):
        if (await balance_of(client, customer, balance))["total"] == "150.00":
            break
        await page.wait_for_timeout(100)
    assert (await balance_of(client, customer, balance))["total"] == "150.00"
    assert len(await entries_of(client, customer, request_id)) == 1
    await page.goto(f"{api.url}/console/#/dead-letters?partition=0")
    await expect(row.filter(has_text=request_id)).to_contain_text("redriven")
    await shot(page, "dead-letters")
