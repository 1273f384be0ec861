"""Run the edge: ``python -m edge``."""

from __future__ import annotations

import asyncio

from edge.app import build_app
from edge.settings import EdgeSettings
from wallet_platform.config import load_settings
from wallet_platform.kafka import wait_for_kafka
from wallet_platform.logging import setup_logging
from wallet_platform.service import install_uvloop, serve_until_signalled


async def run(settings: EdgeSettings) -> None:
    setup_logging("edge", settings.log_level)
    # Started before Kafka, the edge waits for it (before its ports open: a SIGTERM meanwhile
    # simply ends the process).
    await wait_for_kafka(settings.kafka_bootstrap)
    app = build_app(settings)
    await serve_until_signalled(
        app,
        settings,
        settings.edge_port,
        ops_port=settings.edge_ops_port,
        reuse_port=settings.edge_reuse_port,
    )


def main() -> None:
    settings = load_settings(EdgeSettings)
    install_uvloop()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
