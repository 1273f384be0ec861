"""`python -m bench`, small: it starts its own services on the real Postgres and Kafka, drives the
closed and the open loop, audits every run and writes its result; the benchmark is a product
command too, and this keeps it working (its figures are not checked here: see
docs/performance.md). It runs with ``--with-downstream``, so the accounting consumer and the
reconciler run beside it, their cost and lag are reported and the books are audited against the
ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from wallet_stack import KAFKA, PG_ADMIN_DSN

pytestmark = pytest.mark.e2e

SCENARIOS = ("quiet", "closed-hotspot", "open")


def test_bench_runs_audits_and_reports(infrastructure: None, tmp_path: Path) -> None:
    # WALLET_HOME stays: the benchmark finds the local Kafka and Postgres pids there.
    env = {k: v for k, v in os.environ.items() if k == "WALLET_HOME" or not k.startswith("WALLET_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scenarios",
            ",".join(SCENARIOS),
            "--balances",
            "60",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--quiet-requests",
            "40",
            "--concurrency",
            "8",
            "--rate",
            "150",
            "--results-dir",
            str(tmp_path / "results"),
            "--pg-dsn",
            PG_ADMIN_DSN,
            "--kafka",
            KAFKA,
            "--with-downstream",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AUDIT PASSED" in proc.stdout
    (result_file,) = (tmp_path / "results").glob("bench-*.json")
    report = orjson.loads(result_file.read_bytes())
    assert set(report["scenarios"]) == set(SCENARIOS)
    for name, run in report["scenarios"].items():
        assert run["audit"]["ok"], (name, run["audit"])
        assert run["audit"]["entries"] > 0, name
        assert set(run["statuses"]) <= {"200", "201", "402"}, (name, run["statuses"])
        assert run["ledger_batch_commands"]["count"] > 0, name
        assert run["edge_command_seconds"]["count"] > 0, name
        processes = set(run["processes"])
        assert {"edge#0", "ledger#0", "projection", "loadgen"} <= processes, name
        assert {"accounting", "reconciler"} <= processes, name
        # The books were compared with the ledger by the reconciler, after catching up.
        assert run["audit"]["checks"]["reconciler_books"] == 0, name
        assert run["audit"]["checks"]["books_caught_up_with_the_topic"] == 0, name
        books = run["downstream"]["accounting"]
        assert books["lag"]["facts_booked"] > 0, name
        assert books["lag"]["facts"]["after_settling"] == 0, (name, books)
        assert books["cpu_s_per_1000_callbacks"] > 0, name
        assert run["downstream"]["reconciler"]["health"]["always_ok"], (name, run["downstream"])
    assert report["scenarios"]["quiet"]["requests"] == 40
    open_run = report["scenarios"]["open"]
    assert open_run["config"]["rate"] == 150
    # An open loop offers its rate whatever the answers: 3 s at 150/s is about 450 requests.
    assert 400 <= open_run["requests"] - open_run["replays"] <= 460, open_run["requests"]
