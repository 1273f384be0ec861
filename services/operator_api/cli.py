"""The operator API's command line: ``python -m operator_api [keys|master|audit] ...``.

Without a command it serves (``python -m operator_api``). The commands write straight to the
database, which is how the first admin key is made; every change they make is audited like a
request (method ``CLI``, the route being the command, ``path`` naming the OS user).

    keys create --name ops --role admin --whitelist 127.0.0.1/32 [--json] [--credentials PATH]
    keys list [--json]
    keys deactivate API_ID
    keys check PATH          exit 0 when the credentials file's key is active and its secret right
    master new               print a new master key
    master rotate            re-encrypt every secret with the first master key
    audit verify             walk the audit chain; exit 1 at the first broken record
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hmac
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from ledger_core.requests import RequestError
from operator_api import audit
from operator_api.api_keys import ROLES, KeyChanges, KeySettings, NewKey, parse_name
from operator_api.api_keys import parse_whitelist as parse_whitelist_entries
from operator_api.key_settings import OperatorKeySettings
from operator_api.key_store import (
    change_key,
    changed_fields,
    create_key,
    key_by_public_key,
    list_keys,
    rotate_secrets,
)
from operator_api.master_keys import MasterKeyError, new_master_key
from wallet_platform.config import load_settings

DEFAULT_BASE_URL = "http://127.0.0.1:18083"


def parser() -> argparse.ArgumentParser:
    """The command line, with ``--help`` at every level."""
    top = argparse.ArgumentParser(
        prog="python -m operator_api",
        description="The operator API. Without a command: serve it. Settings come from WALLET_* "
        "(see docs/configuration.md; the commands need WALLET_PG_DSN and the master keys).",
    )
    groups = top.add_subparsers(dest="group", metavar="{keys,master,audit}")
    keys = groups.add_parser("keys", help="create, list, deactivate and check API keys")
    key_commands = keys.add_subparsers(dest="command", required=True)
    create = key_commands.add_parser("create", help="make a key (the secret is shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=ROLES, default="read_only")
    create.add_argument(
        "--whitelist",
        action="append",
        required=True,
        help="an address or CIDR the key may be used from (repeat, or comma-separate)",
    )
    create.add_argument("--min-markup", help="lowest exchange markup (percent) the key may use")
    create.add_argument("--max-markup", help="highest exchange markup (percent) the key may use")
    create.add_argument("--inactive", action="store_true", help="create it deactivated")
    create.add_argument("--json", action="store_true", help="print the answer as JSON")
    create.add_argument(
        "--credentials",
        help="also write {baseUrl, apiId, publicKey, secretKey} to this file (mode 0600)",
    )
    create.add_argument("--base-url", default=DEFAULT_BASE_URL, help="for the credentials file")
    listing = key_commands.add_parser("list", help="every key, without secrets")
    listing.add_argument("--json", action="store_true")
    deactivate = key_commands.add_parser("deactivate", help="deactivate a key")
    deactivate.add_argument("api_id", type=uuid.UUID)
    check = key_commands.add_parser("check", help="is a credentials file's key active and right?")
    check.add_argument("path", type=Path)
    master = groups.add_parser("master", help="master keys: make one, rotate to the first")
    master_commands = master.add_subparsers(dest="command", required=True)
    master_commands.add_parser("new", help="print a new master key")
    master_commands.add_parser("rotate", help="re-encrypt every secret with the first master key")
    audit_group = groups.add_parser("audit", help="the audit log")
    audit_commands = audit_group.add_subparsers(dest="command", required=True)
    audit_commands.add_parser("verify", help="verify the hash chain; exit 1 if broken")
    return top


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


async def _audit_cli(
    conn: asyncpg.Connection, command: str, status: int, detail: dict[str, Any]
) -> None:
    await audit.append(
        conn,
        audit.AuditRecord(
            at=audit.now(),
            api_id=None,
            method="CLI",
            route=command,
            path=f"cli:{_user()}",
            body_sha256=bytes(32),
            status=status,
            outcome="ok",
            detail=detail,
        ),
    )


def _new_key(args: argparse.Namespace) -> NewKey:
    entries = [part for value in args.whitelist for part in value.split(",") if part.strip()]
    settings: dict[str, str] = {"role": args.role}
    if args.min_markup is not None:
        settings["minMarkup"] = args.min_markup
    if args.max_markup is not None:
        settings["maxMarkup"] = args.max_markup
    return NewKey(
        name=parse_name(args.name),
        white_list=parse_whitelist_entries(entries),
        is_active=not args.inactive,
        settings=KeySettings.parse(settings),
    )


def write_credentials(path: Path, credentials: dict[str, str]) -> None:
    """Write a credentials file readable by its owner only (created 0600, then renamed into
    place, so no reader ever sees a partial file or one with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(credentials, option=orjson.OPT_INDENT_2) + b"\n")
    os.chmod(partial, 0o600)
    os.replace(partial, path)


async def _keys(args: argparse.Namespace, settings: OperatorKeySettings) -> int:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        if args.command == "create":
            new = _new_key(args)
            master = settings.master_keys()
            async with conn.transaction():
                key, secret_key = await create_key(conn, new, master, f"cli:{_user()}")
                view = key.view()
                await _audit_cli(conn, "keys create", 201, {"created": view})
            if args.credentials:
                write_credentials(
                    Path(args.credentials),
                    {
                        "baseUrl": args.base_url,
                        "apiId": view["apiId"],
                        "publicKey": key.public_key,
                        "secretKey": secret_key,
                    },
                )
            answer = {**view, "secretKey": secret_key}
            if args.json:
                print(orjson.dumps(answer).decode())
            else:
                for name, value in answer.items():
                    print(f"{name}: {value}")
                print("The secret key is shown this once; keep it now.", file=sys.stderr)
            return 0
        if args.command == "list":
            views = [key.view() for key in await list_keys(conn)]
            if args.json:
                print(orjson.dumps(views).decode())
            for view in [] if args.json else views:
                print(
                    f"{view['apiId']}  {'active  ' if view['isActive'] else 'inactive'}  "
                    f"{view['settings']['role']:<9}  {view['name']}  "
                    f"{','.join(view['whiteListIp'])}"
                )
            return 0
        if args.command == "deactivate":
            async with conn.transaction():
                changed = await change_key(conn, args.api_id, KeyChanges(is_active=False))
                if changed is None:
                    print(f"no key {args.api_id}", file=sys.stderr)
                    return 1
                detail = {"apiId": str(args.api_id), "changed": changed_fields(*changed)}
                await _audit_cli(conn, "keys deactivate", 200, detail)
            print(f"deactivated {args.api_id}")
            return 0
        return await _check(conn, args.path, args.credentials_text, settings)
    finally:
        await conn.close()


async def _check(
    conn: asyncpg.Connection, path: Path, text: bytes | None, settings: OperatorKeySettings
) -> int:
    """0 when ``text`` (read from ``path``) holds credentials of an active key whose secret is
    the stored one."""
    try:
        if text is None:
            raise FileNotFoundError(path)
        credentials = orjson.loads(text)
        public_key, secret_key = credentials["publicKey"], credentials["secretKey"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        print(f"{path}: no usable credentials ({type(exc).__name__})", file=sys.stderr)
        return 1
    key = await key_by_public_key(conn, str(public_key))
    if key is None or not key.is_active:
        print(f"{path}: the key is unknown or inactive", file=sys.stderr)
        return 1
    stored = key.secret(settings.master_keys())
    if not hmac.compare_digest(stored.encode(), str(secret_key).encode()):
        print(f"{path}: the secret key is not this key's", file=sys.stderr)
        return 1
    print(f"{path}: key {key.api_id} ({key.settings.role}) is active")
    return 0


async def _master(args: argparse.Namespace, settings: OperatorKeySettings) -> int:
    if args.command == "new":
        print(new_master_key())
        return 0
    master = settings.master_keys()
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        async with conn.transaction():
            count = await rotate_secrets(conn, master)
            await _audit_cli(conn, "master rotate", 200, {"reencrypted": count})
    finally:
        await conn.close()
    print(f"re-encrypted {count} secrets with the first master key")
    return 0


async def _audit(settings: OperatorKeySettings) -> int:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        report = await audit.verify_chain(conn)
    finally:
        await conn.close()
    if report.intact:
        print(f"audit chain intact: {report.checked} records")
        return 0
    print(
        f"audit chain broken at record {report.broken_seq}: {report.reason} "
        f"({report.checked} records before it verified)"
    )
    return 1


def run(argv: Sequence[str]) -> int:
    """Run one command; returns the exit status."""
    args = parser().parse_args(argv)
    settings = load_settings(OperatorKeySettings)
    if args.group == "keys" and args.command == "check":
        try:
            args.credentials_text = args.path.read_bytes()
        except OSError:
            args.credentials_text = None
    try:
        if args.group == "keys":
            return asyncio.run(_keys(args, settings))
        if args.group == "master":
            return asyncio.run(_master(args, settings))
        return asyncio.run(_audit(settings))
    except RequestError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except MasterKeyError as exc:
        print(f"error: {exc} (is the old master key still configured?)", file=sys.stderr)
        return 1
