"""A command the ledger's own code fails on (a bug, or input ``decide`` can not handle) gets a
final ``command_refused``, once, and the commands around it are applied.

No real command makes ``decide`` raise, so this module's ledger runs with a fault put in by
the test alone: a ``sitecustomize`` on the services' ``PYTHONPATH`` wraps
``ledger_core.plan.decide`` so that a command with no stored outcome whose comment starts with
"undecidable" raises. Everything else is the real writer, Kafka and Postgres.
"""

from __future__ import annotations

import os

import aiohttp
import pytest

from callback_load import count_entries, credit, ledger_metric, paused_ledger
from wallet_clients import Operator
from wallet_stack import Stack

pytestmark = pytest.mark.e2e

REFUSED, UNDECIDABLE = "ledger_commands_refused_total", 'cause="undecidable"'

FAULT = """
import ledger_core.plan as plan

_decide = plan.decide


def decide(state, cmd, prior):
    if prior is None and getattr(cmd, "comment", "").startswith("undecidable"):
        raise RuntimeError("a fault put in by the test")
    return _decide(state, cmd, prior)


plan.decide = decide
"""


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    fault = tmp_path_factory.mktemp("undecidable-fault")
    (fault / "sitecustomize.py").write_text(FAULT)
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{fault}:{inherited}" if inherited else str(fault)}


async def test_an_undecidable_command_is_refused_once_and_its_neighbours_are_applied(
    operator: Operator, http: aiohttp.ClientSession, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    before = await ledger_metric(http, stack, REFUSED, UNDECIDABLE)
    bad = credit(customer, balance, "undecidable, by the test's fault")
    good = [credit(customer, balance, f"good {i}") for i in range(3)]

    # One batch, the bad command second: the plan has decided one command when it fails, so
    # memory is rolled back and the batch planned again with the refusal.
    answers = await paused_ledger(stack, [operator.send(c) for c in [good[0], bad, *good[1:]]])
    again = await operator.send(bad)

    by_id = {c.request_id: a for c, a in zip([good[0], bad, *good[1:]], answers, strict=True)}
    refused = by_id[bad.request_id]
    assert (refused.status, refused.json["error"]) == (400, "command_refused")
    assert "could not be decided (RuntimeError)" in refused.json["message"]
    assert (again.status, again.body) == (refused.status, refused.body)
    assert [by_id[c.request_id].status for c in good] == [201, 201, 201]
    assert await count_entries(stack, [bad.request_id]) == {}
    assert await count_entries(stack, [c.request_id for c in good]) == {
        c.request_id: 1 for c in good
    }
    assert await ledger_metric(http, stack, REFUSED, UNDECIDABLE) == before + 1
    log = stack.ledger.log_path.read_text()
    assert '"command_not_decided"' in log and "a fault put in by the test" in log

    after = await operator.send(credit(customer, balance, "after it"))
    assert after.status == 201 and after.json["balance_current_amount"] == "14.00"
