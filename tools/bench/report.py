"""Markdown tables from benchmark results: ``python -m bench.report results/bench-*.json``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def rows(result: dict[str, Any]) -> list[str]:
    out = []
    for name, s in result["scenarios"].items():
        lat = s["latency_ms"]
        procs = s.get("processes", {})
        cpu = " / ".join(
            f"{procs[p]['cpu_pct']:.0f}"
            for p in ("edge#0", "ledger#0", "projection", "kafka", "postgres", "loadgen")
            if p in procs
        )
        batch = s.get("ledger_batch_commands", {}).get("mean", 0)
        lag = s.get("projection_lag_seconds", {})
        conc = s["config"].get("concurrency") if s["config"]["mode"] == "closed" else None
        load = f"closed C={conc}" if conc else f"open {s['config'].get('rate', 0):.0f}/s"
        statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
        tput = s["throughput_per_s"]
        out.append(
            f"| {name} | {load} | {tput:.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} "
            f"| {lat['p99']:.1f} | {lat['p99.9']:.1f} | {lat['max']:.0f} | {statuses} "
            f"| {batch:.1f} | {lag.get('p50_le', '-')} / {lag.get('p99_le', '-')} | {cpu} "
            f"| {'ok' if s['audit']['ok'] else 'FAILED'} |"
        )
    return out


def main() -> None:
    print(
        "| scenario | load | req/s | p50 ms | p90 | p99 | p99.9 | max | statuses | batch "
        "| projection lag p50/p99 s (bucket) | CPU % edge / ledger / projection / kafka / "
        "postgres / loadgen | audit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        for row in rows(orjson.loads(Path(path).read_bytes())):
            print(row)


if __name__ == "__main__":
    main()
