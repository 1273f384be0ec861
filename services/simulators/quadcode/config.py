"""Command line and configuration of the Quadcode simulator."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from quadcode_gateway.countries import BY_ALPHA_2
from quadcode_gateway.tokens import Environment

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RESTRICTED_COUNTRIES: Final = frozenset({"US", "IR", "KP"})
"""Left out of the default allowed list so "restricted country" works out of the box."""

DEFAULT_ALLOWED_COUNTRIES: Final = frozenset(BY_ALPHA_2) - DEFAULT_RESTRICTED_COUNTRIES
DEFAULT_ALLOWED_CURRENCIES: Final = frozenset({"USD", "EUR", "GBP", "BTC", "ETH", "USDT"})
DEFAULT_ALLOWED_IPS: Final[tuple[IPNetwork, ...]] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything the simulator is started with; ``/_sim/reset`` returns to these rules."""

    client_public_keys: tuple[Path, ...]
    issuer: str
    audience: Environment
    host: str = "127.0.0.1"
    port: int = 0
    allowed_countries: frozenset[str] = DEFAULT_ALLOWED_COUNTRIES
    allowed_currencies: frozenset[str] = DEFAULT_ALLOWED_CURRENCIES
    allowed_ips: tuple[IPNetwork, ...] = DEFAULT_ALLOWED_IPS
    rate_limit: int = 20
    retry_after: int | None = 1
    leeway: float = 5.0
    qc_private_key: Path | None = None
    wallet_base_url: str | None = None
    wallet_timeout: float = 2.0
    wallet_max_attempts: int = 4
    payout_ratio: Decimal = Decimal("1.80")
    log_level: str = "INFO"


def _csv(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def parse_countries(text: str) -> frozenset[str]:
    """A comma-separated list of ISO 3166-1 alpha-2 codes."""
    codes = _csv(text)
    unknown = sorted(code for code in codes if code not in BY_ALPHA_2)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown country codes: {', '.join(unknown)}")
    return codes


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """A comma-separated list of IP addresses or CIDR networks."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in sorted(_csv(text)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal: {text!r}") from None


def serve_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m simulators.quadcode [serve]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.quadcode",
        description="Quadcode B2B gateway (external balances) simulator, for loopback use.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (logged)")
    parser.add_argument(
        "--client-public-key",
        action="append",
        required=True,
        type=Path,
        help="our (the B2B client's) public.pem; repeat for key rotation",
    )
    parser.add_argument("--issuer", required=True, help="the iss Quadcode assigned the client")
    parser.add_argument(
        "--audience", required=True, choices=[environment.value for environment in Environment]
    )
    parser.add_argument(
        "--allowed-countries",
        type=parse_countries,
        help="comma-separated alpha-2 codes (default: all but US, IR, KP)",
    )
    parser.add_argument(
        "--allowed-currencies",
        type=_csv,
        help=f"comma-separated (default: {','.join(sorted(DEFAULT_ALLOWED_CURRENCIES))})",
    )
    parser.add_argument(
        "--allowed-ips",
        type=parse_networks,
        help="comma-separated IPs/CIDRs of callers (default: loopback)",
    )
    parser.add_argument(
        "--rate-limit", type=int, default=20, help="requests per second per ip / customer; 0=off"
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=1,
        help="Retry-After seconds sent with 429; negative sends no header",
    )
    parser.add_argument("--leeway", type=float, default=5.0, help="JWT clock leeway, seconds")
    parser.add_argument(
        "--qc-private-key",
        type=Path,
        help="Quadcode's own private.pem, for signing wallet callbacks (default: ephemeral)",
    )
    parser.add_argument("--wallet-base-url", help="the wallet's base URL for the trader")
    parser.add_argument("--wallet-timeout", type=float, default=2.0)
    parser.add_argument("--wallet-max-attempts", type=int, default=4)
    parser.add_argument("--payout", type=_decimal, default=Decimal("1.80"))
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_args(argv: Sequence[str]) -> SimulatorConfig:
    """Parse the serve arguments into a :class:`SimulatorConfig`."""
    args = serve_parser().parse_args(argv)
    return SimulatorConfig(
        client_public_keys=tuple(args.client_public_key),
        issuer=args.issuer,
        audience=Environment(args.audience),
        host=args.host,
        port=args.port,
        allowed_countries=args.allowed_countries or DEFAULT_ALLOWED_COUNTRIES,
        allowed_currencies=args.allowed_currencies or DEFAULT_ALLOWED_CURRENCIES,
        allowed_ips=args.allowed_ips or DEFAULT_ALLOWED_IPS,
        rate_limit=args.rate_limit,
        retry_after=args.retry_after if args.retry_after >= 0 else None,
        leeway=args.leeway,
        qc_private_key=args.qc_private_key,
        wallet_base_url=args.wallet_base_url,
        wallet_timeout=args.wallet_timeout,
        wallet_max_attempts=args.wallet_max_attempts,
        payout_ratio=args.payout,
        log_level=args.log_level,
    )
