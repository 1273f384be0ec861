"""Run the operator API: ``python -m operator_api``; with a command (``keys``, ``master``,
``audit``, ``--help``), run that instead (see :mod:`operator_api.cli`)."""

from __future__ import annotations

import asyncio
import sys

from operator_api.app import build_app
from operator_api.cli import run as run_command
from operator_api.settings import OperatorApiSettings
from wallet_platform.config import load_settings
from wallet_platform.logging import setup_logging
from wallet_platform.service import install_uvloop, serve_until_signalled


async def run(settings: OperatorApiSettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    setup_logging("operator_api", settings.log_level)
    app = build_app(settings)
    await serve_until_signalled(
        app, settings, settings.operator_api_port, ops_port=settings.operator_api_ops_port
    )


def main() -> None:
    """Load and check the settings, then serve; or run the command the arguments name."""
    if sys.argv[1:]:
        raise SystemExit(run_command(sys.argv[1:]))
    settings = load_settings(OperatorApiSettings)
    install_uvloop()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
