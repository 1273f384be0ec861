"""The steps of ``python -m bench.together`` that must run with a version's own code.

``bench.together`` runs each step in a subprocess whose ``PYTHONPATH`` puts the version's
``libs/`` and ``services/`` first, so the balances are funded with that version's command
encoding and the audit reads that version's schema with that version's ledger audit (an older
schema lacks tables the current audit reads). The benchmark's own modules come from this work
tree either way. A developer tool: nothing in the test suite needs it.

    python -m bench.together_steps fund --kafka HOST:PORT --prefix P --balances N
    python -m bench.together_steps audit --pg-dsn ADMIN_DSN --database DB --runs FILE --out FILE

``--runs`` is a JSON object: ``{"runs": {run id: its last write sequence number},
"results": {run id: the load generator's output file}}``; ``--out`` receives the audit of each
run of ``results`` (``bench.__main__.audit_run``'s verdict), keyed by run id.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from bench.__main__ import audit_run, fund
from bench.stack import BenchStack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.together_steps", description=__doc__)
    steps = p.add_subparsers(dest="step", required=True)
    funding = steps.add_parser("fund", help="create and fund the balances through the commands")
    funding.add_argument("--kafka", required=True)
    funding.add_argument("--prefix", required=True)
    funding.add_argument("--balances", type=int, required=True)
    auditing = steps.add_parser("audit", help="audit the runs against the version's ledger")
    auditing.add_argument("--pg-dsn", required=True, help="the admin DSN the stack was made from")
    auditing.add_argument("--database", required=True)
    auditing.add_argument("--runs", type=Path, required=True)
    auditing.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def _stack(pg_dsn: str, kafka: str, prefix: str, database: str) -> BenchStack:
    # fund and audit_run read only the stack's Kafka, topic prefix and database from it.
    return BenchStack(pg_dsn, kafka, Path("."), Path("."), database=database, prefix=prefix)


async def audit_runs(
    pg_dsn: str, database: str, runs: dict[str, int], results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Each run's checks and the ledger audit, as ``make bench`` runs them after a scenario.

    ``runs`` is every run with its last write sequence number, ``results`` the load generator's
    output of each run to check."""
    stack = _stack(pg_dsn, "", "", database)
    return {
        run_id: await audit_run(stack, run_id, result, runs) for run_id, result in results.items()
    }


def main() -> None:
    args = parse_args()
    if args.step == "fund":
        stack = _stack("", args.kafka, args.prefix, "")
        seconds = asyncio.run(fund(stack, args.balances, "USD"))
        print(f"funded {args.balances} balances in {seconds:.1f} s")
    else:
        spec = orjson.loads(args.runs.read_bytes())
        results = {rid: orjson.loads(Path(p).read_bytes()) for rid, p in spec["results"].items()}
        verdicts = asyncio.run(audit_runs(args.pg_dsn, args.database, spec["runs"], results))
        args.out.write_bytes(orjson.dumps(verdicts))


if __name__ == "__main__":
    main()
