"""Reading the services' Prometheus histograms: deltas between two scrapes, and quantiles."""

from __future__ import annotations

import re

import aiohttp

_BUCKET = re.compile(r'^(\w+)_bucket\{le="([^"]+)"\} ([0-9.e+]+)$')
_SUM_COUNT = re.compile(r"^(\w+)_(sum|count) ([0-9.e+]+)$")

Histogram = dict[str, dict[str, float]]  # name -> {le or "sum"/"count": value}


async def scrape(session: aiohttp.ClientSession, url: str, names: set[str]) -> Histogram:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return parse(text, names)


def parse(text: str, names: set[str]) -> Histogram:
    """The histograms ``names`` (buckets, sum and count) in a Prometheus text exposition."""
    out: Histogram = {}
    for line in text.splitlines():
        if m := _BUCKET.match(line):
            if m.group(1) in names:
                out.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
        elif (m := _SUM_COUNT.match(line)) and m.group(1) in names:
            out.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    return out


def merge(*hists: Histogram) -> Histogram:
    out: Histogram = {}
    for h in hists:
        for name, values in h.items():
            target = out.setdefault(name, {})
            for k, v in values.items():
                target[k] = target.get(k, 0.0) + v
    return out


def delta(after: Histogram, before: Histogram) -> Histogram:
    return {
        name: {k: v - before.get(name, {}).get(k, 0.0) for k, v in values.items()}
        for name, values in after.items()
    }


def summary(h: dict[str, float]) -> dict[str, float]:
    """Count, mean and bucket-upper-bound quantiles (p50, p99) of one histogram delta."""
    count = h.get("count", 0.0)
    if not count:
        return {"count": 0}
    buckets = sorted(
        (
            (float("inf") if k == "+Inf" else float(k), v)
            for k, v in h.items()
            if k not in ("sum", "count")
        ),
    )

    def q(p: float) -> float:
        for bound, cumulative in buckets:
            if cumulative >= p * count:
                return bound
        return float("inf")

    return {"count": count, "mean": round(h["sum"] / count, 4), "p50_le": q(0.5), "p99_le": q(0.99)}
