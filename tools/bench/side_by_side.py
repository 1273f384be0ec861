"""The pure half of ``make bench-compare``: read wrk's output, line the runs up, take the ratios.

No I/O here: ``bench.compare`` runs the naive wallet and the product and hands this module the
text wrk printed. A side-by-side sitting is naive (before), product, naive (after) for every
connections x distribution; the product's throughput over each naive run gives a ratio range,
since the machine drifts between the two naive runs and only the ratios of one sitting count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

# How ../shared/bench/naive/run.sh selects a distribution: mix.lua's HOT, the share of the traffic
# on the first 1 % of the balances. run.sh always runs both, in this order, with these values.
HOT_SHARE: Final[Mapping[str, str]] = {"uniform": "0", "hotspot": "0.9"}
# run.sh seeds exactly this many balances (c<i>/b<i>, seed.sql) and tells mix.lua so (NBAL).
BALANCES: Final = 10_000
# wrk prints a time as a number with one of these units (wrk's units.c).
_TIME_MS: Final[Mapping[str, float]] = {
    "us": 0.001,
    "ms": 1.0,
    "s": 1_000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_SUMMARY = re.compile(r"^\s*(\d+) requests in " + _TIME + r", ", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s*([0-9.]+)\s*$", re.MULTILINE)
_LATENCY = re.compile(
    r"^\s*Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME + r"\s", re.MULTILINE
)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+" + _TIME + r"\s*$", re.MULTILINE)
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_STATUS = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)\s*$", re.MULTILINE)


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_MS[unit]


@dataclass(frozen=True, slots=True)
class WrkRun:
    """One wrk run as wrk summarised it (``--latency`` adds the percentiles)."""

    requests: int
    seconds: float
    requests_per_s: float
    latency_mean_ms: float
    latency_max_ms: float
    # "p50", "p75", "p90", "p99" (wrk's --latency distribution), in milliseconds.
    percentiles_ms: dict[str, float]
    # wrk counts a response with a status of 400 or more here ("Non-2xx or 3xx responses").
    error_responses: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Every request that did not end in a success: error statuses and socket errors."""
        return self.error_responses + sum(self.socket_errors.values())


def parse_wrk_output(text: str) -> WrkRun:
    """Read wrk's report (a script's own ``done`` lines around it are ignored).

    Raises ValueError when the text is not a finished wrk run, so a broken run is never
    silently counted as zero requests.
    """
    summary, rate, latency = _SUMMARY.search(text), _RATE.search(text), _LATENCY.search(text)
    if summary is None or rate is None or latency is None:
        raise ValueError(f"not a finished wrk run: {text[-500:]!r}")
    socket = _SOCKET.search(text)
    status = _STATUS.search(text)
    return WrkRun(
        requests=int(summary.group(1)),
        seconds=_ms(summary.group(2), summary.group(3)) / 1000,
        requests_per_s=float(rate.group(1)),
        latency_mean_ms=_ms(latency.group(1), latency.group(2)),
        latency_max_ms=_ms(latency.group(5), latency.group(6)),
        percentiles_ms={
            f"p{m.group(1)}": _ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(text)
        },
        error_responses=int(status.group(1)) if status else 0,
        socket_errors=(
            dict(
                zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True)
            )
            if socket
            else {}
        ),
    )


def wrk_arguments(connections: int, seconds: int, script: str, url: str) -> list[str]:
    """wrk's arguments as run.sh passes them (two threads), plus ``--latency``.

    ``--latency`` only adds the percentile table to the report; the load is the same.
    """
    return ["--latency", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script, url]


@dataclass(frozen=True, slots=True)
class SideBySide:
    """One connections x distribution of a sitting: naive, product, naive again."""

    connections: int
    distribution: str
    naive_before: WrkRun
    product: WrkRun
    naive_after: WrkRun

    @property
    def ratios(self) -> tuple[float, float] | None:
        """The product's requests/s over the faster and over the slower naive run."""
        naive = (self.naive_before.requests_per_s, self.naive_after.requests_per_s)
        if min(naive) <= 0:
            return None
        return self.product.requests_per_s / max(naive), self.product.requests_per_s / min(naive)

    @property
    def label(self) -> str:
        """The row's name, as the issue's table names it: ``C=32 hot spot``."""
        return f"C={self.connections} {'hot spot' if self.distribution == 'hotspot' else 'uniform'}"


def _figure(run: WrkRun) -> str:
    p99 = run.percentiles_ms.get("p99")
    text = f"{run.requests_per_s:,.0f} /s"
    if p99 is not None:
        text += f", p99 {p99:.1f} ms" if p99 < 10 else f", p99 {p99:,.0f} ms"
    if run.errors:
        text += f" ({run.errors:,} errors)"
    return text


def ratio_text(ratios: tuple[float, float] | None) -> str:
    """``1.3-1.4x``, or ``1.3x`` when both naive runs give the same ratio; ``-`` without one."""
    if ratios is None:
        return "-"
    low, high = f"{ratios[0]:.1f}", f"{ratios[1]:.1f}"
    return f"{low}x" if low == high else f"{low}-{high}x"


def table(rows: Iterable[SideBySide]) -> str:
    """The sitting as a Markdown table, one row per connections x distribution."""
    lines = [
        "| | naive (before) | product | naive (after) | product / naive |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {_figure(row.naive_before)} | {_figure(row.product)} "
            f"| {_figure(row.naive_after)} | {ratio_text(row.ratios)} |"
        )
    return "\n".join(lines)


def sitting_record(rows: Sequence[SideBySide], about: Mapping[str, Any]) -> dict[str, Any]:
    """The sitting as plain data for a JSON file: ``about`` (settings, machine, audit), the rows."""
    return {
        **about,
        "rows": [
            {
                "label": row.label,
                "connections": row.connections,
                "distribution": row.distribution,
                "naive_before": asdict(row.naive_before),
                "product": asdict(row.product),
                "naive_after": asdict(row.naive_after),
                "ratio_min": None if row.ratios is None else round(row.ratios[0], 2),
                "ratio_max": None if row.ratios is None else round(row.ratios[1], 2),
            }
            for row in rows
        ],
    }
