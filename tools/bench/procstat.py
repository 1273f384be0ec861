"""CPU and memory of the processes under test, read from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(fields[21]) * PAGE / 1024 / 1024


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Postgres backends of the postmaster)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


@dataclass
class Group:
    """A named set of processes measured together (Postgres is a postmaster and its backends)."""

    name: str
    pids: list[int]
    with_children: bool = False
    cpu_start: float = 0.0
    rss_samples: list[float] = field(default_factory=list)

    def members(self) -> list[int]:
        pids = list(self.pids)
        if self.with_children:
            for pid in self.pids:
                pids += children(pid)
        return pids

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.members())

    def sample(self) -> None:
        self.rss_samples.append(sum(rss_mb(p) for p in self.members()))


class Sampler:
    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups

    def start(self) -> None:
        for g in self.groups:
            g.cpu_start = g.cpu()
            g.rss_samples.clear()
            g.sample()

    def sample(self) -> None:
        for g in self.groups:
            g.sample()

    def report(self, seconds: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for g in self.groups:
            samples = g.rss_samples or [0.0]
            out[g.name] = {
                "cpu_pct": round((g.cpu() - g.cpu_start) / seconds * 100, 1),
                "rss_mb_first": round(samples[0], 1),
                "rss_mb_last": round(samples[-1], 1),
                "rss_mb_peak": round(max(samples), 1),
                # After the first fifth of the run (caches warm): flatness is judged from here.
                "rss_mb_warm": round(samples[len(samples) // 5], 1),
                "rss_mb_samples": [round(v, 1) for v in samples],
            }
        return out
