"""Started before Kafka, the services wait for it instead of exiting, and serve once it is up.

Runs on a private Postgres and Kafka (:mod:`private_infra`): Postgres first, then the ledger,
the projection and the edge, and only then Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from private_infra import PrivateInfra
from wallet_clients import Operator, Wallet
from wallet_platform.command_bus import open_command_bus
from wallet_stack import QuadcodeKey, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def infra() -> AsyncIterator[PrivateInfra]:
    pair = PrivateInfra.create()
    try:
        await pair.start_postgres()
        yield pair
    finally:
        await pair.remove()


async def test_services_started_before_kafka_wait_for_it(
    infra: PrivateInfra, quadcode_key: QuadcodeKey, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = await infra.stack(tmp_path_factory.mktemp("early-stack"), quadcode_key)
    try:
        services = stack.launch()
        await asyncio.sleep(5)  # long enough for a service that can not reach Kafka to give up
        exited = {
            s.name: s.proc.returncode for s in services if s.proc and s.proc.poll() is not None
        }
        assert exited == {}

        await infra.start_kafka()
        for service in services:
            await wait_ready(service)

        async with (
            open_command_bus(
                stack.kafka, "early-operator", topic_prefix=stack.prefix, reply_partition=7
            ) as bus,
            aiohttp.ClientSession() as http,
        ):
            customer, balance = await Operator(bus).customer_with_balance("USD", "10.00")
            answer = await Wallet(http, stack.edge.url, quadcode_key).debit(
                customer, balance, "1.00"
            )
        assert answer.status == 201, answer
        assert answer.json["balance_current_amount"] == "9.00"
    finally:
        stack.stop()
