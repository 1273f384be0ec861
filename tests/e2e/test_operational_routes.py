"""Every service's /health, /ready and /metrics are on its operational port; its public port
serves the contract and nothing else (the real edge, projection and ledger processes)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from wallet_stack import Stack

pytestmark = pytest.mark.e2e

METRIC_OF = {"edge": "edge_command_seconds", "projection": "projection_lag_seconds"}


@pytest.mark.parametrize("service", ["edge", "projection"])
@pytest.mark.parametrize("path", ["/metrics", "/ready", "/health"])
async def test_the_public_port_answers_operational_routes_with_404(
    stack: Stack, http: aiohttp.ClientSession, service: str, path: str
) -> None:
    async with http.get(stack.services[service].url + path) as resp:
        assert resp.status == 404
        assert orjson.loads(await resp.read())["error"] == "route_not_found"


@pytest.mark.parametrize("service", ["edge", "projection"])
async def test_the_operational_port_answers_health_ready_and_metrics(
    stack: Stack, http: aiohttp.ClientSession, service: str
) -> None:
    ops = stack.services[service].ops_url
    async with http.get(ops + "/health") as health:
        assert health.status == 200
    async with http.get(ops + "/ready") as ready:
        assert ready.status == 200
        assert orjson.loads(await ready.read())["status"] == "ready"
    async with http.get(ops + "/metrics") as metrics:
        assert metrics.status == 200
        assert METRIC_OF[service] in await metrics.text()


async def test_the_edges_readiness_includes_the_projections_operational_port(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.get(stack.edge.ops_url + "/ready") as ready:
        assert orjson.loads(await ready.read())["checks"]["projection"] is True


async def test_the_ledger_serves_only_the_operational_routes_on_its_one_port(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.get(stack.ledger.url + "/ready") as ready:
        assert ready.status == 200
    async with http.get(stack.ledger.url + "/metrics") as metrics:
        assert "ledger_batch_seconds" in await metrics.text()
