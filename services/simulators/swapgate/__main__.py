"""``python -m simulators.swapgate --host 127.0.0.1 --port 8090``: run the Swapgate simulator.

Every option can also come from ``WALLET_SWAPGATE_SIM_<OPTION>``; the command line wins. Logs
``listening`` with the bound port (useful with ``--port 0``) and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

import structlog
from aiohttp import web

from simulators.swapgate.app import create_app
from simulators.swapgate.market import DEFAULT_INSTRUMENTS, MarketInstrument, load_instruments
from simulators.swapgate.settings import SimulatorSettings
from wallet_platform.config import die, load_settings
from wallet_platform.logging import setup_logging

SERVICE = "swapgate-simulator"


def _parse_args(argv: Sequence[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m simulators.swapgate", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--market-file", dest="market_file")
    parser.add_argument("--spread-pct", dest="spread_pct")
    parser.add_argument("--platform-pct", dest="platform_pct")
    parser.add_argument("--affiliate-pct", dest="affiliate_pct")
    parser.add_argument("--timestamp-window-s", dest="timestamp_window_s", type=int)
    parser.add_argument("--step-s", dest="step_s", type=float)
    parser.add_argument("--operator-session", dest="operator_session")
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


async def serve(settings: SimulatorSettings, instruments: tuple[MarketInstrument, ...]) -> None:
    """Serve until SIGTERM or SIGINT."""
    log = structlog.get_logger(SERVICE)
    runner = web.AppRunner(create_app(settings, instruments), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        for address in runner.addresses:
            log.info("listening", host=address[0], port=address[1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options, set up logging, load the market and serve."""
    settings = load_settings(SimulatorSettings, **_parse_args(argv))
    setup_logging(SERVICE, settings.log_level)
    instruments = DEFAULT_INSTRUMENTS
    if settings.market_file:
        try:
            instruments = load_instruments(settings.market_file)
        except (OSError, ValueError, KeyError) as exc:
            die(f"configuration error: market file {settings.market_file!r}: {exc}")
    asyncio.run(serve(settings, instruments))


if __name__ == "__main__":
    main()
