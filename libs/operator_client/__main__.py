"""``python -m operator_client request METHOD PATH [BODY]``: one signed request to the operator
API, with the credentials file named by ``--credentials`` or ``WALLET_OPERATOR_CREDENTIALS``
(``{baseUrl, publicKey, secretKey}``). Prints the JSON answer; exits 0 for a 2xx, else 1. With
``--status`` it prints the HTTP status on a last line of its own and exits 0 whatever it was
(as ``curl -w '\n%{http_code}'`` does, for shell scripts)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson

from operator_client.client import OperatorClient, load_credentials


async def _request(
    credentials: str, method: str, path: str, body: str | None, with_status: bool
) -> int:
    async with OperatorClient.from_credentials(load_credentials(credentials)) as client:
        raw = None if body is None else body.encode("utf-8")
        status, answer = await client.request(method, path, raw=raw)
    print(orjson.dumps(answer).decode())
    if with_status:
        print(status)
        return 0
    print(f"HTTP {status}", file=sys.stderr)
    return 0 if 200 <= status < 300 else 1


def main() -> None:
    """Parse the command line and send the request."""
    parser = argparse.ArgumentParser(prog="python -m operator_client")
    commands = parser.add_subparsers(dest="command", required=True)
    request = commands.add_parser("request", help="send one signed request")
    request.add_argument("method", help="GET, POST, PATCH, ...")
    request.add_argument("path", help="for example /v1/api-keys")
    request.add_argument("body", nargs="?", help="the JSON body, sent byte for byte as given")
    request.add_argument(
        "--credentials",
        default=os.environ.get("WALLET_OPERATOR_CREDENTIALS", ""),
        help="the credentials file (default: $WALLET_OPERATOR_CREDENTIALS)",
    )
    request.add_argument(
        "--status", action="store_true", help="print the HTTP status last; exit 0 regardless"
    )
    args = parser.parse_args()
    if not args.credentials:
        parser.error("give --credentials or set WALLET_OPERATOR_CREDENTIALS")
    raise SystemExit(
        asyncio.run(_request(args.credentials, args.method, args.path, args.body, args.status))
    )


if __name__ == "__main__":
    main()
