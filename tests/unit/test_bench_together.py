"""bench.together's pure half: the versions named right, the CPU shared out right, the table's
medians and ratios taken right. The tool itself (stacks, load, /proc) is a developer tool that
the test suite never runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.together import (
    Version,
    backend_seconds,
    parse_args,
    per_callback,
    round_record,
    summarise,
    table,
    versions_of,
)

pytestmark = pytest.mark.unit


def _code(root: Path, name: str) -> Path:
    (root / name / "libs").mkdir(parents=True)
    (root / name / "services").mkdir()
    return root / name


def test_code_and_env_name_the_versions_in_order(tmp_path: Path) -> None:
    old, new = _code(tmp_path, "old"), _code(tmp_path, "new")
    versions = versions_of(
        [f"base={old}", f"tree={new}", f"tuned={new}"],
        ["tuned:WALLET_LEDGER_BATCH_MAX=64", "tuned:WALLET_EDGE_OUTCOME_TIMEOUT_MS=900"],
    )
    assert versions == [
        Version("base", old, {}),
        Version("tree", new, {}),
        Version(
            "tuned",
            new,
            {"WALLET_LEDGER_BATCH_MAX": "64", "WALLET_EDGE_OUTCOME_TIMEOUT_MS": "900"},
        ),
    ]


@pytest.mark.parametrize(
    ("code", "env", "reason"),
    [
        (["a=OLD"], [], "at least two"),
        (["a=OLD", "a=NEW"], [], "named twice"),
        (["a=OLD", "b/c=NEW"], [], "expected NAME=DIR"),
        (["a=OLD", "b"], [], "expected NAME=DIR"),
        (["a=OLD", "b=EMPTY"], [], "holds no libs/ and services/"),
        (["a=OLD", "b=NEW"], ["c:WALLET_X=1"], "no version named 'c'"),
        (["a=OLD", "b=NEW"], ["b:PYTHONPATH=/elsewhere"], "expected NAME:WALLET_X=VALUE"),
        (["a=OLD", "b=NEW"], ["b:WALLET_PG_DSN=postgresql://x/y"], "set per stack"),
        (["a=OLD", "b=NEW"], ["b:WALLET_TOPIC_PREFIX=shared."], "set per stack"),
    ],
)
def test_versions_that_can_not_run_side_by_side_are_refused(
    tmp_path: Path, code: list[str], env: list[str], reason: str
) -> None:
    dirs = {"OLD": _code(tmp_path, "old"), "NEW": _code(tmp_path, "new")}
    (tmp_path / "empty").mkdir()
    dirs["EMPTY"] = tmp_path / "empty"
    specs = []
    for spec in code:
        name, sep, directory = spec.partition("=")
        specs.append(name + sep + str(dirs.get(directory, directory)))
    with pytest.raises(SystemExit, match=reason):
        versions_of(specs, env)


def test_command_line_defaults_and_a_refused_round_count() -> None:
    args = parse_args(["--code", "a=.", "--code", "b=.", "--env", "b:WALLET_X=1"])
    assert (args.rounds, args.rate, args.save) == (3, 1000.0, None)
    assert args.code == ["a=.", "b=."] and args.env == ["b:WALLET_X=1"]
    with pytest.raises(SystemExit):
        parse_args(["--code", "a=.", "--code", "b=.", "--rounds", "0"])


def test_a_backend_born_in_the_round_counts_whole_and_one_gone_is_missed() -> None:
    before = {10: 5.0, 11: 2.0}  # 11 ends during the round
    after = {10: 5.5, 12: 0.25}  # 12 connects during the round
    assert backend_seconds(before, after) == pytest.approx(0.75)
    # A pid read as 0 (the backend exited between the query and /proc) subtracts nothing.
    assert backend_seconds({10: 5.0}, {10: 0.0}) == 0.0


def test_cpu_per_callback_is_per_answered_request_with_the_sum() -> None:
    ms = per_callback({"edge": 1.0, "ledger": 0.5}, 2000)
    assert ms == {"edge": 0.5, "ledger": 0.25, "sum": 0.75}
    # No request answered: divided by one rather than by zero.
    assert per_callback({"edge": 0.002}, 0)["sum"] == 2.0


def _result(requests: int, p99: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "throughput_per_s": requests / 10,
        "latency_ms": {"p50": p99 / 4, "p99": p99},
        "statuses": {"201": requests},
        "connection_errors": {},
    }


def _cpu(edge: float, ledger: float, projection: float, postgres: float) -> dict[str, float]:
    return {"edge": edge, "ledger": ledger, "projection": projection, "postgres": postgres}


def _rounds() -> list[dict[str, Any]]:
    # CPU seconds per 1,000 requests, so each figure is also the ms per callback.
    per_round = [
        (_cpu(1.0, 1.0, 0.5, 0.5), _cpu(0.5, 1.0, 0.5, 0.5)),
        (_cpu(3.0, 1.0, 0.5, 0.5), _cpu(1.5, 1.0, 0.5, 0.5)),
        (_cpu(2.0, 4.0, 0.5, 0.5), _cpu(1.0, 2.0, 0.5, 0.5)),
    ]
    return [
        round_record(
            n,
            {"a": _result(1000, 40.0 + n), "b": _result(1000, 20.0 + n)},
            {"a": a, "b": b},
            {"kafka": 1.0 + n, "postgres_background": 0.0},
        )
        for n, (a, b) in enumerate(per_round)
    ]


def test_the_shared_processes_are_per_callback_of_every_version_together() -> None:
    first = _rounds()[0]
    assert first["shared_by_all"]["requests"] == 2000
    assert first["shared_by_all"]["ms_per_callback"]["kafka"] == 0.5
    assert first["versions"]["a"]["ms_per_callback"]["sum"] == 3.0


def test_the_summary_takes_medians_and_the_ratio_to_the_first_version() -> None:
    summary = summarise(_rounds())
    a, b = summary["versions"]["a"], summary["versions"]["b"]
    assert summary["baseline"] == "a" and summary["rounds"] == 3
    assert a["ms_per_callback"]["edge"] == 2.0 and a["ms_per_callback"]["ledger"] == 1.0
    # The sum's median is the median of each round's sum (3.0, 5.0, 7.0), not the sum of the
    # components' medians (2.0 + 1.0 + 0.5 + 0.5 = 4.0).
    assert a["ms_per_callback"]["sum"] == 5.0
    assert b["ms_per_callback"]["sum"] == 3.5
    assert b["ratio"]["sum"] == 0.7 and b["ratio"]["edge"] == 0.5 and a["ratio"]["sum"] == 1.0
    assert a["p99_ms"] == 41.0 and b["p99_ms"] == 21.0
    assert summary["shared_by_all"]["kafka"] == 1.0


def test_the_table_has_a_row_per_version_and_a_ratio_row_for_all_but_the_first() -> None:
    lines = table(summarise(_rounds()))
    assert lines[2].split()[:6] == ["a", "2.000", "1.000", "0.500", "0.500", "5.000"]
    assert lines[3].split()[:6] == ["b", "1.000", "1.000", "0.500", "0.500", "3.500"]
    assert lines[4].startswith("b / a") and lines[4].split()[3:] == [
        "0.50",
        "1.00",
        "1.00",
        "1.00",
        "0.70",
    ]
    assert "kafka 1.000 ms" in lines[5]
    assert "came and went" in lines[6]
