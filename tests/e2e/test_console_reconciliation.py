"""Reconciliation status through the operator API and its console page, end to end: the ledger,
projection and edge, the accounting consumer, the reconciler (a round every half second) and the
signed operator API run as processes on real Kafka and Postgres; the page is driven in Debian's
headless Chromium through Playwright, as ``tests/e2e/test_console.py`` does.

Every check shows ok; a projection row changed by hand shows MISMATCH for ``projection`` with the
differing balance (and ok again after it is put back and the page refreshed); a stopped
reconciler is a 503 ``reconciler_unreachable``, which the page shows. Screenshots:
``tests/artifacts/console/reconciliation*.png``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from exchange_stack import start_operator_api
from operator_client import Credentials, OperatorClient, load_credentials
from wallet_stack import REPO, Service, Stack, wait_ready

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "tests" / "artifacts" / "console"
CHROMIUM_SCRIPT = REPO / "deploy" / "local" / "chromium.sh"
TIMEOUT_MS = 20_000
CHECKS = ("trial_balance", "projection", "books", "unpublished", "offsets")


@pytest.fixture(scope="module")
async def reconciler(stack: Stack) -> AsyncIterator[Service]:
    """The accounting consumer (so that ``books`` compares real books) and the reconciler, a
    round every half second."""
    books = stack.add("accounting", "WALLET_ACCOUNTING_PORT")
    books.start()
    await wait_ready(books)
    service = stack.add(
        "reconciler", "WALLET_RECONCILER_PORT", WALLET_RECONCILER_INTERVAL_SECONDS="0.5"
    )
    service.start()
    yield service
    service.stop()
    books.stop()


@pytest.fixture(scope="module")
async def api(
    stack: Stack, reconciler: Service, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    """The operator API (exchanges off: no Swapgate here), reading that reconciler."""
    service = await start_operator_api(
        stack,
        "",
        tmp_path_factory.mktemp("reconciliation-api"),
        WALLET_OPERATOR_API_RECONCILER_URL=reconciler.ops_url,
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def credentials(api: Service) -> Credentials:
    return load_credentials(api.env["WALLET_OPERATOR_CREDENTIALS"])


@pytest.fixture(scope="module")
async def client(credentials: Credentials) -> AsyncIterator[OperatorClient]:
    async with OperatorClient.from_credentials(credentials) as signed:
        yield signed


@pytest.fixture(scope="module")
async def customer(client: OperatorClient) -> tuple[str, str]:
    """A customer with a USD balance of 12.50 (1250 in minor units), made through the API."""
    customer = "recon-" + uuid.uuid4().hex[:10]
    balance = f"{customer}_USD"
    assert (await client.post("/v1/customers", {"customerId": customer}))[0] == 201
    body = {"balanceId": balance, "currency": "USD", "requestId": "open-" + balance}
    assert (await client.post(f"/v1/customers/{customer}/balances", body))[0] == 201
    for i, amount in enumerate(("10.00", "2.50")):
        status, answer = await client.post(
            f"/v1/customers/{customer}/balances/{balance}/deposits",
            {"requestId": f"seed-{i}", "amount": amount},
        )
        assert status == 201, answer
    return customer, balance


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    found = subprocess.run(
        ["bash", str(CHROMIUM_SCRIPT), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"no Chromium: run `bash {CHROMIUM_SCRIPT} install` ({found.stderr.strip()})")
    async with async_playwright() as driver:
        # As root (CI, this machine) Chromium runs only without its sandbox.
        chromium = await driver.chromium.launch(
            executable_path=found.stdout.strip(),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser, api: Service, credentials: Credentials) -> AsyncIterator[Page]:
    """A fresh, signed-in browser context, watched for script errors and CSP violations."""
    context: BrowserContext = await browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        # A refused fetch (the 503) is logged by the browser too: that is the API's answer.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console error: {message.text}")

    tab.on("console", on_console)
    await tab.goto(f"{api.url}/console/")
    await tab.get_by_label("Public key").fill(credentials.public_key)
    await tab.get_by_label("Secret key").fill(credentials.secret_key)
    await tab.get_by_role("button", name="Sign in").click()
    await expect(tab.get_by_role("heading", name="Find a customer")).to_be_visible()
    yield tab
    await context.close()
    assert problems == []


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not reached in {timeout}s: {check}")


async def report(client: OperatorClient) -> dict[str, Any]:
    status, answer = await client.get("/v1/reconciliation")
    assert status == 200, answer
    return dict(answer)


async def all_ok(client: OperatorClient) -> bool:
    """Every check passed, the books compared for real (not ``absent``)."""
    answer = await report(client)
    return bool(answer["ready"]) and answer["details"]["books"]["status"] == "ok"


async def drift(stack: Stack, customer: tuple[str, str], by: int) -> None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "UPDATE balance_view SET amount = amount + $3"
            " WHERE customer_id = $1 AND balance_id = $2",
            *customer,
            by,
        )
    finally:
        await conn.close()


async def test_the_page_shows_every_check_ok(
    page: Page, client: OperatorClient, customer: tuple[str, str]
) -> None:
    await until(lambda: all_ok(client))
    # Any role may read it: a read_only key too.
    status, key = await client.post(
        "/v1/api-keys",
        {"name": "auditor", "whiteListIp": ["127.0.0.1"], "settings": {"role": "read_only"}},
    )
    assert status == 201, key
    async with OperatorClient.from_credentials(
        Credentials(client.base_url, key["publicKey"], key["secretKey"])
    ) as read_only:
        status, answer = await read_only.get("/v1/reconciliation")
    assert (status, answer["reachable"], answer["ready"]) == (200, True, True)

    await page.get_by_role("link", name="Reconciliation").click()
    await expect(page.get_by_role("heading", name="Reconciliation")).to_be_visible()
    await expect(page.get_by_test_id("reconciliation-ready")).to_contain_text("Yes")
    checks = page.get_by_role("table", name="Checks of the last round")
    await expect(checks.get_by_role("row")).to_have_count(1 + len(CHECKS))
    for name in CHECKS:
        await expect(page.get_by_test_id(f"check-{name}")).to_have_text("ok")
        await expect(checks.get_by_role("row").filter(has_text=name)).to_contain_text("ok")
    await expect(page.get_by_text("MISMATCH")).to_have_count(0)
    await shot(page, "reconciliation")


async def test_a_drifted_projection_shows_mismatch_naming_the_balance(
    page: Page, client: OperatorClient, stack: Stack, customer: tuple[str, str]
) -> None:
    await until(lambda: all_ok(client))
    customer_id, balance_id = customer
    await drift(stack, customer, +1)
    try:

        async def projection_fails() -> bool:
            return (await report(client))["checks"]["projection"] is False

        await until(projection_fails)
        difference = (await report(client))["details"]["projection"]["difference"]
        assert (difference["customer_id"], difference["balance_id"]) == customer
        assert (difference["expected"], difference["found"]) == ("1250", "1251")

        await page.goto(page.url.split("#")[0] + "#/reconciliation")
        await expect(page.get_by_test_id("check-projection")).to_have_text("MISMATCH")
        await expect(page.get_by_test_id("reconciliation-ready")).to_have_text("No")
        shown = page.get_by_test_id("difference-projection")
        await expect(shown).to_contain_text(
            f"amount_differs: customer_id={customer_id} balance_id={balance_id}"
        )
        await expect(shown).to_contain_text("expected 1250, found 1251")
        row = page.get_by_role("row").filter(has_text="projection")
        await expect(row).to_contain_text("failed")  # the reconciler's status of the check
        for name in CHECKS:
            if name != "projection":
                await expect(page.get_by_test_id(f"check-{name}")).to_have_text("ok")
        await shot(page, "reconciliation-mismatch")
    finally:
        await drift(stack, customer, -1)
    await until(lambda: all_ok(client))
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.get_by_test_id("check-projection")).to_have_text("ok")
    await expect(page.get_by_test_id("reconciliation-ready")).to_contain_text("Yes")


async def test_a_stopped_reconciler_is_a_503_reconciler_unreachable(
    page: Page, client: OperatorClient, reconciler: Service
) -> None:
    reconciler.stop()  # the last test of the module: the reconciler stays stopped
    status, answer = await client.get("/v1/reconciliation")
    assert (status, answer["error"]) == (503, "reconciler_unreachable")
    await page.get_by_role("link", name="Reconciliation").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("HTTP 503")
    await expect(alert).to_contain_text("reconciler_unreachable")
    await expect(page.get_by_role("button", name="Refresh")).to_be_visible()
    await shot(page, "reconciliation-unreachable")
