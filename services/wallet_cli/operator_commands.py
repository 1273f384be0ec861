"""Customers, balances, statements and money: signed requests to the operator API.

Each subcommand is one route of the operator API (``docs/operator-api.md``), sent by
``operator_client`` with the key of the credentials file (``--credentials`` or
``WALLET_OPERATOR_CREDENTIALS``). The API checks, decides and audits; the command line only
builds the request and shows the answer. Writes carry a ``requestId`` (random unless given),
so sending the same command again with the same ``--request-id`` is safe.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import click

from wallet_cli.output import emit, render

CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One operator API request, as a subcommand builds it (pure: no I/O)."""

    method: str
    path: str
    body: dict[str, Any] | None = None


def segment(value: str) -> str:
    """An id as exactly one path segment (every reserved character percent-encoded)."""
    return quote(value, safe="")


def customer_path(customer_id: str) -> str:
    """``/v1/customers/{customerId}``."""
    return f"/v1/customers/{segment(customer_id)}"


def balance_path(customer_id: str, balance_id: str) -> str:
    """``/v1/customers/{customerId}/balances/{balanceId}``."""
    return f"{customer_path(customer_id)}/balances/{segment(balance_id)}"


def new_request_id(given: str | None) -> str:
    """The caller's idempotency key, or a fresh random one."""
    return given or uuid.uuid4().hex


def statement_request(
    customer_id: str,
    balance_id: str,
    *,
    after_seq: int | None,
    limit: int | None,
    first: str | None,
    last: str | None,
) -> ApiRequest:
    """``GET .../statement`` with the query the options give (absent ones are left out)."""
    query = {
        "afterSeq": after_seq,
        "limit": limit,
        "from": first,
        "to": last,
    }
    given = {k: v for k, v in query.items() if v is not None}
    suffix = f"?{urlencode(given)}" if given else ""
    return ApiRequest("GET", f"{balance_path(customer_id, balance_id)}/statement{suffix}")


def money_request(
    kind: str, customer_id: str, balance_id: str, amount: str, comment: str | None, rid: str
) -> ApiRequest:
    """``POST .../deposits`` or ``.../withdrawals`` ``{requestId, amount, comment?}``."""
    body: dict[str, Any] = {"requestId": rid, "amount": amount}
    if comment is not None:
        body["comment"] = comment
    route = "deposits" if kind == "deposit" else "withdrawals"
    return ApiRequest("POST", f"{balance_path(customer_id, balance_id)}/{route}", body)


def credentials_path(given: str | None) -> str:
    """``--credentials``, else WALLET_OPERATOR_CREDENTIALS; a usage error without either."""
    import os

    path = given or os.environ.get("WALLET_OPERATOR_CREDENTIALS", "")
    if not path:
        raise click.UsageError("give --credentials or set WALLET_OPERATOR_CREDENTIALS")
    return path


async def _send(credentials: str, request: ApiRequest) -> tuple[int, Any]:
    from operator_client.client import OperatorClient, load_credentials

    async with OperatorClient.from_credentials(load_credentials(credentials)) as client:
        return await client.request(request.method, request.path, request.body)


def send_and_show(ctx: click.Context, request: ApiRequest) -> None:
    """Send ``request``; print the answer (JSON with ``--json``); exit 0 on a 2xx, else 1."""
    options = ctx.ensure_object(Options)
    status, answer = asyncio.run(_send(credentials_path(options.credentials), request))
    ok = 200 <= status < 300
    if options.as_json:
        emit(answer)
    elif ok:
        render(answer)
    else:
        error = answer if isinstance(answer, dict) else {}
        click.echo(
            f"HTTP {status} {error.get('error', '')}: {error.get('message', answer)}", err=True
        )
    sys.exit(0 if ok else 1)


@dataclass(slots=True)
class Options:
    """What every operator API subcommand shares (``--credentials``, ``--json``)."""

    credentials: str | None = None
    as_json: bool = False


def _remember(field: str) -> Any:
    def callback(ctx: click.Context, _: click.Parameter, value: Any) -> Any:
        setattr(ctx.ensure_object(Options), field, value)
        return value

    return callback


def api_options(command: Any) -> Any:
    """``--credentials`` and ``--json`` on an operator API subcommand."""
    command = click.option(
        "--credentials",
        envvar="WALLET_OPERATOR_CREDENTIALS",
        expose_value=False,
        callback=_remember("credentials"),
        help="Credentials file {baseUrl, publicKey, secretKey} "
        "(default: $WALLET_OPERATOR_CREDENTIALS).",
    )(command)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_remember("as_json"),
        help="Print the API's JSON answer (for scripts).",
    )(command)


REQUEST_ID = click.option("--request-id", help="Idempotency key (default: random).")


@click.group(context_settings=CONTEXT)
def customers() -> None:
    """Customers: create, show, block, unblock (operator API)."""


@click.group(context_settings=CONTEXT)
def balances() -> None:
    """Balances: open, list, show (total, held, available) (operator API)."""


ROOT: Final[list[click.Command]] = []
"""Operator API subcommands that stand at the top (``wallet deposit ...``)."""


@customers.command("create", context_settings=CONTEXT)
@click.argument("customer_id")
@REQUEST_ID
@api_options
@click.pass_context
def create_customer(ctx: click.Context, customer_id: str, request_id: str | None) -> None:
    """Create a customer."""
    body = {"customerId": customer_id, "requestId": new_request_id(request_id)}
    send_and_show(ctx, ApiRequest("POST", "/v1/customers", body))


@customers.command("show", context_settings=CONTEXT)
@click.argument("customer_id")
@api_options
@click.pass_context
def show_customer(ctx: click.Context, customer_id: str) -> None:
    """A customer: blocked or not, created, every balance."""
    send_and_show(ctx, ApiRequest("GET", customer_path(customer_id)))


def _block_command(blocked: bool) -> click.Command:
    name = "block" if blocked else "unblock"

    @click.command(name, context_settings=CONTEXT)
    @click.argument("customer_id")
    @REQUEST_ID
    @api_options
    @click.pass_context
    def command(ctx: click.Context, customer_id: str, request_id: str | None) -> None:
        body = {"requestId": new_request_id(request_id)}
        send_and_show(ctx, ApiRequest("POST", f"{customer_path(customer_id)}/{name}", body))

    command.help = (
        "Block a customer (Quadcode's callbacks get 451)." if blocked else "Unblock a customer."
    )
    return command


customers.add_command(_block_command(True))
customers.add_command(_block_command(False))


@balances.command("open", context_settings=CONTEXT)
@click.argument("customer_id")
@click.argument("balance_id")
@click.argument("currency")
@REQUEST_ID
@api_options
@click.pass_context
def open_balance(
    ctx: click.Context, customer_id: str, balance_id: str, currency: str, request_id: str | None
) -> None:
    """Open a balance in CURRENCY."""
    body = {
        "balanceId": balance_id,
        "currency": currency.upper(),
        "requestId": new_request_id(request_id),
    }
    send_and_show(ctx, ApiRequest("POST", f"{customer_path(customer_id)}/balances", body))


@balances.command("list", context_settings=CONTEXT)
@click.argument("customer_id")
@api_options
@click.pass_context
def list_balances(ctx: click.Context, customer_id: str) -> None:
    """Every balance of a customer: total, held (by open exchanges), available."""
    send_and_show(ctx, ApiRequest("GET", f"{customer_path(customer_id)}/balances"))


@balances.command("show", context_settings=CONTEXT)
@click.argument("customer_id")
@click.argument("balance_id")
@click.option("--at", "moment", help="The balance after its last posting at or before this time.")
@api_options
@click.pass_context
def show_balance(ctx: click.Context, customer_id: str, balance_id: str, moment: str | None) -> None:
    """One balance: total, held, available (or, with --at, as it was at a time)."""
    path = balance_path(customer_id, balance_id)
    if moment is not None:
        path += "/at?" + urlencode({"time": moment})
    send_and_show(ctx, ApiRequest("GET", path))


def _money_command(kind: str) -> click.Command:
    @click.command(kind, context_settings=CONTEXT)
    @click.argument("customer_id")
    @click.argument("balance_id")
    @click.argument("amount")
    @click.option("--comment", help="Kept with the journal entry.")
    @REQUEST_ID
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @api_options
    @click.pass_context
    def command(
        ctx: click.Context,
        customer_id: str,
        balance_id: str,
        amount: str,
        comment: str | None,
        request_id: str | None,
        yes: bool,
    ) -> None:
        if not yes:
            click.confirm(f"{kind} {amount} on {customer_id}/{balance_id}?", abort=True, err=True)
        rid = new_request_id(request_id)
        send_and_show(ctx, money_request(kind, customer_id, balance_id, amount, comment, rid))

    command.help = (
        f"{'Deposit' if kind == 'deposit' else 'Withdraw'} AMOUNT (in the balance's currency); "
        "the ledger's stored outcome is the answer."
    )
    return command


ROOT.extend([_money_command("deposit"), _money_command("withdraw")])


@click.command("statement", context_settings=CONTEXT)
@click.argument("customer_id")
@click.argument("balance_id")
@click.option("--after-seq", type=int, help="Postings after this sequence number (next page).")
@click.option("--limit", type=int, help="Most postings in the page.")
@click.option("--from", "first", help="From this time (RFC 3339).")
@click.option("--to", "last", help="Up to this time (RFC 3339).")
@api_options
@click.pass_context
def statement(
    ctx: click.Context,
    customer_id: str,
    balance_id: str,
    after_seq: int | None,
    limit: int | None,
    first: str | None,
    last: str | None,
) -> None:
    """A balance's postings by sequence, one keyset page (nextAfterSeq names the next)."""
    request = statement_request(
        customer_id, balance_id, after_seq=after_seq, limit=limit, first=first, last=last
    )
    send_and_show(ctx, request)


@click.command("entry", context_settings=CONTEXT)
@click.argument("entry_id")
@api_options
@click.pass_context
def entry(ctx: click.Context, entry_id: str) -> None:
    """A journal entry with its postings."""
    send_and_show(ctx, ApiRequest("GET", f"/v1/entries/{segment(entry_id)}"))


@click.command("trial-balance", context_settings=CONTEXT)
@api_options
@click.pass_context
def trial_balance(ctx: click.Context) -> None:
    """Per currency: customers, each system account kind, a total that must be zero."""
    send_and_show(ctx, ApiRequest("GET", "/v1/trial-balance"))


@click.command("reconciliation", context_settings=CONTEXT)
@api_options
@click.pass_context
def reconciliation(ctx: click.Context) -> None:
    """The running reconciler's last round through the API: each check and its first
    difference (`wallet reconcile` runs a round here instead)."""
    send_and_show(ctx, ApiRequest("GET", "/v1/reconciliation"))


def register_operator_commands(cli: click.Group) -> None:
    """Add the operator API subcommands to ``wallet``."""
    for command in (
        customers,
        balances,
        *ROOT,
        statement,
        entry,
        trial_balance,
        reconciliation,
        request,
        dead_letters,
        jobs,
    ):
        cli.add_command(command)


@click.command("request", context_settings=CONTEXT)
@click.argument("method")
@click.argument("path")
@click.argument("body", required=False)
@api_options
@click.pass_context
def request(ctx: click.Context, method: str, path: str, body: str | None) -> None:
    """Any signed request: METHOD PATH [BODY] (as python -m operator_client request does), for
    routes without a subcommand of their own."""
    import orjson

    parsed = None if body is None else orjson.loads(body)
    send_and_show(ctx, ApiRequest(method.upper(), path, parsed))


@click.group("dead-letters", context_settings=CONTEXT)
def dead_letters() -> None:
    """Dead letters of ledger.commands: list, show, redrive, discard (operator API)."""


@dead_letters.command("list", context_settings=CONTEXT)
@click.option("--partition", type=int, help="The dead-letter topic's partition (default 0).")
@click.option("--after", type=int, help="Records after this offset (the next page).")
@click.option("--limit", type=int, help="Most records in the page.")
@click.option("--status", help="Only records in this state (new, redriven, discarded).")
@api_options
@click.pass_context
def list_dead_letters(
    ctx: click.Context,
    partition: int | None,
    after: int | None,
    limit: int | None,
    status: str | None,
) -> None:
    """A page of dead letters by offset."""
    query = {"partition": partition, "after": after, "limit": limit, "status": status}
    given = {k: v for k, v in query.items() if v is not None}
    suffix = f"?{urlencode(given)}" if given else ""
    send_and_show(ctx, ApiRequest("GET", f"/v1/dead-letters{suffix}"))


@dead_letters.command("show", context_settings=CONTEXT)
@click.argument("partition", type=int)
@click.argument("offset", type=int)
@api_options
@click.pass_context
def show_dead_letter(ctx: click.Context, partition: int, offset: int) -> None:
    """One dead letter, whole, with the ledger's stored outcome."""
    send_and_show(ctx, ApiRequest("GET", f"/v1/dead-letters/{partition}/{offset}"))


def _dead_letter_action(action: str, reason_required: bool) -> click.Command:
    @click.command(action, context_settings=CONTEXT)
    @click.argument("partition", type=int)
    @click.argument("offset", type=int)
    @click.option("--reason", required=reason_required, help="Why (kept in the audit log).")
    @api_options
    @click.pass_context
    def command(ctx: click.Context, partition: int, offset: int, reason: str | None) -> None:
        body = {} if reason is None else {"reason": reason}
        path = f"/v1/dead-letters/{partition}/{offset}/{action}"
        send_and_show(ctx, ApiRequest("POST", path, body))

    command.help = (
        "Send the command to ledger.commands again." if action == "redrive" else "Drop it."
    )
    return command


dead_letters.add_command(_dead_letter_action("redrive", False))
dead_letters.add_command(_dead_letter_action("discard", True))


@click.group(context_settings=CONTEXT)
def jobs() -> None:
    """Long-running jobs in the operator API: start, list, show, cancel."""


@jobs.command("start", context_settings=CONTEXT)
@click.argument("job_type")
@click.argument("params", required=False)
@api_options
@click.pass_context
def start_job(ctx: click.Context, job_type: str, params: str | None) -> None:
    """Start a job of JOB_TYPE with PARAMS (a JSON object, default {})."""
    import orjson

    body = {"type": job_type, "params": orjson.loads(params) if params else {}}
    send_and_show(ctx, ApiRequest("POST", "/v1/jobs", body))


@jobs.command("list", context_settings=CONTEXT)
@click.option("--limit", type=int, help="Most jobs (the newest first).")
@api_options
@click.pass_context
def list_jobs(ctx: click.Context, limit: int | None) -> None:
    """The newest jobs first."""
    suffix = "" if limit is None else f"?{urlencode({'limit': limit})}"
    send_and_show(ctx, ApiRequest("GET", f"/v1/jobs{suffix}"))


@jobs.command("show", context_settings=CONTEXT)
@click.argument("job_id")
@api_options
@click.pass_context
def show_job(ctx: click.Context, job_id: str) -> None:
    """One job with its progress."""
    send_and_show(ctx, ApiRequest("GET", f"/v1/jobs/{segment(job_id)}"))


@jobs.command("cancel", context_settings=CONTEXT)
@click.argument("job_id")
@api_options
@click.pass_context
def cancel_job(ctx: click.Context, job_id: str) -> None:
    """Cancel a running job."""
    send_and_show(ctx, ApiRequest("POST", f"/v1/jobs/{segment(job_id)}/cancel"))
