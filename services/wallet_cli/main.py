"""``wallet``: the operators' one command line.

Every subcommand hands its work to the module that owns it: a service's ``main``, the key CLI,
the exchange CLI, the replay, the benchmark, the ledger's audit and state hash, and the signed
operator API client for customers, balances and money. Long work shows a progress bar.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import click

from wallet_cli.delegation import SERVICES, TOOLS, EntryPoint, run_entry_point
from wallet_cli.operator_commands import register_operator_commands
from wallet_cli.output import emit, progress_bar, spinner

PASS_THROUGH: Final[dict[str, Any]] = {
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
    "help_option_names": [],
}
"""A pass-through subcommand leaves every word, ``--help`` included, to the module's parser."""

TOOL_HELP: Final[dict[str, str]] = {
    "keys": "Operator API keys: create, list, deactivate, check (python -m operator_api keys).",
    "master-keys": "Master keys of the API key secrets: new, rotate.",
    "exchanges": "Exchanges: start, show, resume, resolve (python -m exchange).",
    "replay": "Re-run ledger.commands into a fresh database and compare state hashes.",
    "bench": "The benchmark: its own stack, funded balances, scenarios, audit (python -m bench).",
    "books": "The accounting consumer's books: trial-balance, export, daily-balances, migrate.",
    "rebuild": "Rebuild the projection's read model from ledger.events, with progress, and "
    "compare it with the ledger (python -m projection rebuild; stop the projection first).",
    "reconcile": "One reconciliation round, printed; exit 1 if a check failed ([--json]).",
}

CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="quadcode-wallet", prog_name="wallet")
def cli() -> None:
    """The Quadcode wallet's command line: run a service, migrate, operate customers and money
    through the signed operator API, audit, verify, replay, republish, keys, exchanges, bench.

    Settings come from WALLET_* environment variables (or the file WALLET_ENV_FILE names); see
    docs/configuration.md. Every subcommand has --help.
    """


@cli.command("run", context_settings=CONTEXT)
@click.argument("service", type=click.Choice(sorted(SERVICES)))
def run_service(service: str) -> None:
    """Run one long-running SERVICE until SIGTERM (as python -m SERVICE does).

    The container image's entry point: `wallet run ledger`, `wallet run edge`, ...
    """
    sys.exit(run_entry_point(SERVICES[service], []))


def _pass_through(name: str, entry: EntryPoint) -> click.Command:
    @click.command(name, context_settings=PASS_THROUGH, help=TOOL_HELP[name], add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        sys.exit(run_entry_point(entry, args))

    return command


for _name, _entry in TOOLS.items():
    cli.add_command(_pass_through(_name, _entry))


def _dsn(dsn: str | None) -> str:
    """The database to use: ``--dsn``, else WALLET_PG_DSN."""
    if dsn:
        return dsn
    from wallet_platform.config import CommonSettings, load_settings

    return load_settings(CommonSettings).pg_dsn


DSN_OPTION = click.option("--dsn", help="Postgres DSN of the ledger (default: WALLET_PG_DSN).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@cli.command(context_settings=CONTEXT)
@DSN_OPTION
@click.option("--status", "only_status", is_flag=True, help="Show the versions; change nothing.")
@JSON_OPTION
def migrate(dsn: str | None, only_status: bool, as_json: bool) -> None:
    """Bring the ledger database's schema up to date (python -m wallet_platform.schema)."""
    import asyncpg

    from wallet_platform import schema

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(_dsn(dsn))
        try:
            done = [] if only_status else await schema.migrate(conn)
            versions = sorted(await schema.applied(conn))
        finally:
            await conn.close()
        return {"applied_now": done, "versions": versions, "latest": schema.latest_version()}

    result = asyncio.run(go())
    behind = result["versions"][-1:] != [result["latest"]]
    if as_json:
        emit(result)
    elif result["applied_now"]:
        click.echo(f"applied {result['applied_now']}; schema at {result['latest']}")
    else:
        state = "behind" if behind else "up to date"
        click.echo(f"schema {state}: {result['versions'][-1:] or 'empty'} of {result['latest']}")
    sys.exit(1 if behind else 0)


@cli.command(context_settings=CONTEXT)
@DSN_OPTION
@JSON_OPTION
def audit(dsn: str | None, as_json: bool) -> None:
    """The ledger's audit: entries balance, no negative balance, sequences chained, outcomes and
    entries one to one, reservations, the projection equals the ledger (python -m ledger.audit).
    Exit 1 if a check fails."""
    import asyncpg

    from ledger.audit import audit as run_audit

    async def go() -> Any:
        conn = await asyncpg.connect(_dsn(dsn))
        try:
            return await run_audit(conn)
        finally:
            await conn.close()

    with spinner("auditing the ledger", enabled=not as_json):
        result = asyncio.run(go())
    if as_json:
        emit({"ok": result.ok, "checked": result.checked, "failures": result.failures})
    else:
        for name in result.checked:
            bad = result.failures.get(name)
            click.echo(f"{'FAIL' if bad else 'ok  '} {name}" + (f" ({bad} rows)" if bad else ""))
    sys.exit(0 if result.ok else 1)


@cli.command(context_settings=CONTEXT)
@DSN_OPTION
@click.option("--expect", help="Exit 1 unless the state hash is this one.")
@JSON_OPTION
def verify(dsn: str | None, expect: str | None, as_json: bool) -> None:
    """The ledger's canonical state hash (python -m ledger.state_hash), the journal's hash
    chains (python -m ledger.chain verify) and the operator audit log's hash chain (python -m
    operator_api audit verify). Exit 1 on a broken chain or an unexpected hash."""
    import asyncpg

    from ledger.chain import verify_chains
    from ledger.state_hash import state_hash
    from operator_api.audit import verify_chain

    async def go(section_done: Callable[[str, int], None]) -> tuple[Any, Any, Any]:
        conn = await asyncpg.connect(_dsn(dsn))
        try:
            digest = await state_hash(conn, section_done)
            entries = await verify_chains(conn)
            section_done("journal chain", entries.entries)
            return digest, entries, await verify_chain(conn)
        finally:
            await conn.close()

    with progress_bar("hashing the ledger", total=None, enabled=not as_json) as bar:

        def section_done(name: str, records: int) -> None:
            bar.advance(f"{name}: {records} rows")

        digest, entries, chain = asyncio.run(go(section_done))
    broken = entries.first_break
    matches = expect is None or expect.lower() == digest.digest
    report = {
        "state_hash": digest.digest,
        "counts": dict(digest.counts),
        "expected": expect,
        "state_hash_matches": matches,
        "journal_chain": {
            "intact": entries.intact,
            "entries": entries.entries,
            "first_break": None if broken is None else broken.describe(),
        },
        "audit_chain": {
            "intact": chain.intact,
            "checked": chain.checked,
            "broken_seq": chain.broken_seq,
            "reason": chain.reason,
        },
    }
    if as_json:
        emit(report)
    else:
        click.echo(f"state hash {digest.describe()}")
        if not matches:
            click.echo(f"MISMATCH: expected {expect}")
        if broken is None:
            click.echo(f"journal chain intact ({entries.entries} entries)")
        else:
            click.echo(f"journal chain {broken.describe()}")
        if chain.intact:
            click.echo(f"audit chain intact ({chain.checked} records)")
        else:
            click.echo(f"audit chain BROKEN at record {chain.broken_seq}: {chain.reason}")
    sys.exit(0 if matches and chain.intact and entries.intact else 1)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise click.BadParameter("needs a time zone (e.g. +00:00)", param_hint="--since")
    return moment


@cli.command(context_settings=CONTEXT)
@click.option("--partition", type=int, multiple=True, help="A partition (repeatable).")
@click.option("--from-seq", type=int, help="The first outbox sequence number to send.")
@click.option("--to-seq", type=int, help="The last sequence number (with --from-seq).")
@click.option("--since", help="Every fact at or after this time (ISO 8601 with a zone).")
@click.option("--rate", type=int, help="Facts per second (default: WALLET_REPUBLISH_RATE).")
@JSON_OPTION
def republish(
    partition: tuple[int, ...],
    from_seq: int | None,
    to_seq: int | None,
    since: str | None,
    rate: int | None,
    as_json: bool,
) -> None:
    """Send stored facts (the ledger's outbox) to ledger.events again, same event ids and keys,
    paced by WALLET_REPUBLISH_RATE (python -m ledger.republish)."""
    if (from_seq is None) == (since is None):
        raise click.UsageError("give exactly one of --from-seq and --since")
    if from_seq is not None and not partition:
        raise click.UsageError("--from-seq needs --partition")
    moment = _since(since)

    import asyncpg

    from ledger.republish import Progress, RepublishSettings, range_from, ranges_since
    from ledger.republish import republish as send_again
    from wallet_platform import topics
    from wallet_platform.config import load_settings
    from wallet_platform.kafka import make_producer

    settings = load_settings(RepublishSettings)
    topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)

    async def go(report: Callable[[Progress], None], sized: Callable[[int], None]) -> int:
        pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=1)
        producer = make_producer(settings.kafka_bootstrap, "ledger-republish", linger_ms=5)
        await producer.start()
        try:
            if from_seq is not None:
                ranges = [await range_from(pool, p, from_seq, to_seq) for p in partition]
            else:
                assert moment is not None
                ranges = await ranges_since(pool, moment, list(partition) or None)
            sized(sum(r.size for r in ranges))
            return await send_again(
                pool, producer, topic, ranges, rate=rate or settings.republish_rate, progress=report
            )
        finally:
            await producer.stop()
            await pool.close()

    with progress_bar("republishing facts", total=None, enabled=not as_json) as bar:
        # The module reports each partition's count; the bar shows them all.
        per_partition: dict[int, int] = {}

        def report(p: Progress) -> None:
            per_partition[p.partition] = p.sent
            bar.update(sum(per_partition.values()), p.line())

        sent = asyncio.run(go(report, bar.set_total))
    if as_json:
        emit({"republished": sent, "topic": topic})
    else:
        click.echo(f"republished {sent} facts to {topic}")


register_operator_commands(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``wallet`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="wallet")
