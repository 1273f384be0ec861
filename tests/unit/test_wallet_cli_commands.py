"""``wallet``: parsing and dispatch, without I/O (each subcommand's target is replaced)."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from projection.__main__ import command_parser
from wallet_cli import delegation, main, operator_commands
from wallet_cli.delegation import SERVICES, TOOLS, EntryPoint, run_entry_point
from wallet_cli.operator_commands import ApiRequest, money_request, statement_request

pytestmark = pytest.mark.unit


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[EntryPoint, tuple[str, ...]]]:
    calls: list[tuple[EntryPoint, tuple[str, ...]]] = []

    def record(entry: EntryPoint, args: Sequence[str]) -> int:
        calls.append((entry, tuple(args)))
        return 0

    monkeypatch.setattr(main, "run_entry_point", record)
    return calls


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[ApiRequest]:
    requests: list[ApiRequest] = []

    async def send(credentials: str, request: ApiRequest) -> tuple[int, Any]:
        assert credentials == "/creds.json"
        requests.append(request)
        return 200, {"ok": True}

    monkeypatch.setattr(operator_commands, "_send", send)
    return requests


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main.cli, list(args), env=env, catch_exceptions=False)


def test_help_lists_every_operator_task() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in (
        "run", "migrate", "customers", "balances", "statement", "deposit", "withdraw",
        "audit", "verify", "replay", "republish", "rebuild", "keys", "exchanges", "bench",
        "reconcile", "books", "request", "trial-balance", "dead-letters", "jobs",
    ):  # fmt: skip
        assert f"\n  {command} " in result.output, command


def test_every_subcommand_has_help() -> None:
    for name in main.cli.commands:
        if name in TOOLS:
            continue  # their --help is the module's own (next test)
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage: " in result.output, name


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_run_hands_the_service_to_its_module(
    service: str, dispatched: list[tuple[EntryPoint, tuple[str, ...]]]
) -> None:
    assert invoke("run", service).exit_code == 0
    assert dispatched == [(SERVICES[service], ())]


def test_run_refuses_a_service_that_does_not_exist(dispatched: list[Any]) -> None:
    result = CliRunner().invoke(main.cli, ["run", "exchange"])
    assert result.exit_code == 2
    assert "Invalid value for '{" in result.output or "invalid choice" in result.output.lower()
    assert dispatched == []


def test_a_pass_through_leaves_every_word_to_the_module_help_included(
    dispatched: list[tuple[EntryPoint, tuple[str, ...]]],
) -> None:
    invoke("keys", "create", "--name", "ops", "--role", "admin", "--json")
    invoke("replay", "--help")
    invoke("exchanges", "show", "c1", "ex-1")
    assert dispatched == [
        (TOOLS["keys"], ("create", "--name", "ops", "--role", "admin", "--json")),
        (TOOLS["replay"], ("--help",)),
        (TOOLS["exchanges"], ("show", "c1", "ex-1")),
    ]


def test_an_entry_point_reading_sys_argv_sees_its_own_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[str]] = []
    module = types.ModuleType("fake_entry")
    module.main = lambda: seen.append(list(sys.argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_entry", module)
    before = list(sys.argv)
    status = run_entry_point(
        EntryPoint("fake_entry", "python -m fake", fixed_args=("once",)), ["--json"]
    )
    assert (status, seen, sys.argv) == (3, [["python -m fake", "once", "--json"]], before)


def test_an_entry_point_taking_argv_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_argv")
    module.run = lambda argv: 0 if argv == ["keys", "list"] else 9  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_argv", module)
    entry = EntryPoint("fake_argv", "p", True, ("keys",), function="run")
    assert run_entry_point(entry, ["list"]) == 0


def test_exit_status_of_a_main_is_its_return_value() -> None:
    assert [delegation.exit_status(v) for v in (None, 0, 1, 3, True, False)] == [0, 0, 1, 3, 0, 1]


def test_operator_commands_need_credentials(sent: list[ApiRequest]) -> None:
    result = CliRunner().invoke(
        main.cli, ["balances", "list", "c1"], env={"WALLET_OPERATOR_CREDENTIALS": ""}
    )
    assert result.exit_code == 2
    assert "WALLET_OPERATOR_CREDENTIALS" in result.output
    assert sent == []


def test_a_deposit_is_the_signed_route_with_a_request_id(sent: list[ApiRequest]) -> None:
    result = invoke(
        "deposit", "cust/1", "cust-1_USD", "10.50", "--comment", "top up", "--request-id", "r-1",
        "--yes", "--credentials", "/creds.json", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == '{"ok":true}\n'
    assert sent == [
        ApiRequest(
            "POST",
            "/v1/customers/cust%2F1/balances/cust-1_USD/deposits",
            {"requestId": "r-1", "amount": "10.50", "comment": "top up"},
        )
    ]


def test_a_deposit_asks_before_moving_money(sent: list[ApiRequest]) -> None:
    result = CliRunner().invoke(
        main.cli,
        ["deposit", "c1", "b1", "5", "--credentials", "/creds.json"],
        input="n\n",
    )
    assert result.exit_code == 1
    assert sent == []


def test_credentials_come_from_the_environment(sent: list[ApiRequest]) -> None:
    result = invoke("customers", "show", "c1", env={"WALLET_OPERATOR_CREDENTIALS": "/creds.json"})
    assert result.exit_code == 0
    assert "ok: True" in result.output
    assert sent == [ApiRequest("GET", "/v1/customers/c1")]


def test_a_withdrawal_without_comment_sends_none() -> None:
    request = money_request("withdraw", "c", "b", "1.00", None, "r")
    assert request == ApiRequest(
        "POST", "/v1/customers/c/balances/b/withdrawals", {"requestId": "r", "amount": "1.00"}
    )


def test_a_statement_query_names_only_the_options_given() -> None:
    assert statement_request("c", "b", after_seq=None, limit=None, first=None, last=None).path == (
        "/v1/customers/c/balances/b/statement"
    )
    page = statement_request(
        "c", "b", after_seq=40, limit=20, first="2026-12-01T00:00:00+00:00", last=None
    )
    assert page.path == (
        "/v1/customers/c/balances/b/statement?afterSeq=40&limit=20&from=2026-12-01T00%3A00%3A00%2B00%3A00"
    )


def test_a_refused_answer_exits_1_and_names_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    async def send(credentials: str, request: ApiRequest) -> tuple[int, Any]:
        return 404, {"error": "customer_not_found", "message": "No such customer."}

    monkeypatch.setattr(operator_commands, "_send", send)
    result = CliRunner().invoke(main.cli, ["customers", "show", "nobody", "--credentials", "x"])
    assert result.exit_code == 1
    assert "HTTP 404 customer_not_found: No such customer." in result.output


def test_republish_needs_exactly_one_start() -> None:
    result = CliRunner().invoke(main.cli, ["republish"])
    assert result.exit_code == 2
    assert "exactly one of --from-seq and --since" in result.output
    result = CliRunner().invoke(main.cli, ["republish", "--from-seq", "3"])
    assert "--from-seq needs --partition" in result.output


def test_projection_help_prints_help_instead_of_starting() -> None:
    with pytest.raises(SystemExit) as exited:
        command_parser().parse_args(["--help"])
    assert exited.value.code == 0
    assert command_parser().parse_args(["run"]).command == "run"
    assert command_parser().parse_args([]).command is None
    with pytest.raises(SystemExit):
        command_parser().parse_args(["serve-please"])


def test_dead_letters_and_jobs_are_their_routes(sent: list[ApiRequest]) -> None:
    creds = ("--credentials", "/creds.json")
    assert invoke("dead-letters", "list", "--status", "new", *creds).exit_code == 0
    assert invoke("dead-letters", "discard", "0", "17", "--reason", "dup", *creds).exit_code == 0
    assert invoke("jobs", "start", "projection_rebuild", '{"rate": 100}', *creds).exit_code == 0
    assert invoke("jobs", "cancel", "j-1", *creds).exit_code == 0
    assert sent == [
        ApiRequest("GET", "/v1/dead-letters?status=new"),
        ApiRequest("POST", "/v1/dead-letters/0/17/discard", {"reason": "dup"}),
        ApiRequest("POST", "/v1/jobs", {"type": "projection_rebuild", "params": {"rate": 100}}),
        ApiRequest("POST", "/v1/jobs/j-1/cancel"),
    ]
