"""``python -m simulators.swapgate --host 127.0.0.1 --port 8090``: run the Swapgate simulator.

``--api-public-key KEY --api-secret-key-file FILE`` makes it know one API key from the start
(whitelist ``--api-key-white-list-ip``, default loopback); more keys can be seeded through the
``/_sim/keys`` test hook. It answers ``/health``, ``/ready`` and ``/metrics`` like every process.

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

from simulators.swapgate.app import SIMULATOR, ConfiguredKey, create_app
from simulators.swapgate.market import DEFAULT_INSTRUMENTS, load_instruments
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
    parser.add_argument("--api-public-key", dest="api_public_key")
    parser.add_argument("--api-secret-key-file", dest="api_secret_key_file")
    parser.add_argument("--api-key-name", dest="api_key_name")
    parser.add_argument(
        "--api-key-white-list-ip",
        dest="api_key_white_list_ip",
        help="addresses or CIDR ranges, comma separated (default: 127.0.0.1,::1)",
    )
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


def configured_keys(settings: SimulatorSettings) -> tuple[ConfiguredKey, ...]:
    """The API key given on the command line, if any (its secret read from its file)."""
    if settings.api_public_key is None and settings.api_secret_key_file is None:
        return ()
    if not settings.api_public_key or not settings.api_secret_key_file:
        raise ValueError("--api-public-key and --api-secret-key-file go together")
    with open(settings.api_secret_key_file, encoding="ascii") as fh:
        secret = fh.read().strip()
    if not secret:
        raise ValueError(f"{settings.api_secret_key_file!r} is empty")
    ips = tuple(filter(None, (ip.strip() for ip in settings.api_key_white_list_ip.split(","))))
    public = settings.api_public_key.strip()
    return (ConfiguredKey(settings.api_key_name, public, secret, ips),)


async def serve(settings: SimulatorSettings, app: web.Application) -> None:
    """Serve ``app`` until SIGTERM or SIGINT."""
    log = structlog.get_logger(SERVICE)
    for key in app[SIMULATOR].keys.all():
        log.info("api_key_configured", api_id=key.api_id, name=key.name, ips=key.white_list_ip)
    runner = web.AppRunner(app, access_log=None)
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
    try:
        app = create_app(settings, instruments, api_keys=configured_keys(settings))
    except (OSError, ValueError) as exc:
        die(f"configuration error: API key: {exc}")
    asyncio.run(serve(settings, app))


if __name__ == "__main__":
    main()
