"""The side-by-side benchmark's pure half: wrk's report read right, the ratios taken right.

The wrk reports below were recorded with wrk 4.1.0 (Debian) and the naive wallet's mix.lua, whose
own last line (``p50=... errors=...``) follows wrk's report.
"""

from __future__ import annotations

import orjson
import pytest

from bench.side_by_side import (
    HOT_SHARE,
    SideBySide,
    WrkRun,
    parse_wrk_output,
    ratio_text,
    sitting_record,
    table,
    wrk_arguments,
)

pytestmark = pytest.mark.unit

# The product's edge, C=8 uniform, 3 s (bench.compare's first validation run).
PRODUCT_RUN = """\
Running 3s test @ http://127.0.0.1:57835
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    84.77ms   31.92ms 199.85ms   78.20%
    Req/Sec    48.09     18.25    89.00     68.42%
  Latency Distribution
     50%   79.94ms
     75%   98.12ms
     90%  123.74ms
     99%  196.62ms
  282 requests in 3.03s, 73.36KB read
Requests/sec:     93.14
Transfer/sec:     24.23KB
p50=79.94ms p90=123.74ms p99=196.62ms rps=93 errors=0
"""

# A server answering every request 404/501 (python -m http.server).
ERROR_STATUSES = """\
Running 1s test @ http://127.0.0.1:18777
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.26ms    4.29ms  36.09ms   87.69%
    Req/Sec   415.60     99.68   610.00     60.00%
  Latency Distribution
     50%    3.90ms
     75%    6.41ms
     90%   10.17ms
     99%   22.98ms
  834 requests in 1.01s, 450.42KB read
  Non-2xx or 3xx responses: 834
Requests/sec:    827.24
Transfer/sec:    446.76KB
p50=3.90ms p90=10.17ms p99=22.98ms rps=827 errors=834
"""

# A server closing every connection unanswered; mix.lua's own line says errors=0.
CONNECTIONS_CLOSED = """\
Running 1s test @ http://127.0.0.1:18778
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 1.03s, 0.00B read
  Socket errors: connect 0, read 3278, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
p50=0.00ms p90=0.00ms p99=0.00ms rps=0 errors=0
"""

# A server taking 1.2 s per answer: wrk switches to seconds (and pads the unit with a space).
SLOW_ANSWERS = "\n".join(
    [
        "Running 3s test @ http://127.0.0.1:18779",
        "  2 threads and 4 connections",
        "  Thread Stats   Avg      Stdev     Max   +/- Stdev",
        "    Latency     1.22s    20.40ms   1.24s   100.00%",
        "    Req/Sec     1.00      0.00     1.00    100.00%",
        "  Latency Distribution",
        "     50%    1.24s ",
        "     75%    1.24s ",
        "     90%    1.24s ",
        "     99%    1.24s ",
        "  8 requests in 3.02s, 0.92KB read",
        "Requests/sec:      2.65",
        "Transfer/sec:     312.93B",
        "p50=1242.19ms p90=1244.24ms p99=1244.24ms rps=3 errors=0",
        "",
    ]
)


def test_product_run_is_read_as_wrk_summarised_it() -> None:
    run = parse_wrk_output(PRODUCT_RUN)
    assert run.requests == 282
    assert run.seconds == pytest.approx(3.03)
    assert run.requests_per_s == pytest.approx(93.14)
    assert run.latency_mean_ms == pytest.approx(84.77)
    assert run.latency_max_ms == pytest.approx(199.85)
    assert run.percentiles_ms == pytest.approx(
        {"p50": 79.94, "p75": 98.12, "p90": 123.74, "p99": 196.62}
    )
    assert run.errors == 0
    assert run.socket_errors == {}


def test_error_statuses_count_as_errors() -> None:
    run = parse_wrk_output(ERROR_STATUSES)
    assert run.error_responses == 834
    assert run.errors == 834


def test_read_errors_count_although_mix_lua_leaves_them_out() -> None:
    run = parse_wrk_output(CONNECTIONS_CLOSED)
    assert run.socket_errors == {"connect": 0, "read": 3278, "write": 0, "timeout": 0}
    assert run.errors == 3278
    assert run.requests_per_s == 0


def test_latency_in_seconds_is_read_as_milliseconds() -> None:
    run = parse_wrk_output(SLOW_ANSWERS)
    assert run.latency_mean_ms == pytest.approx(1220)
    assert run.latency_max_ms == pytest.approx(1240)
    assert run.percentiles_ms["p99"] == pytest.approx(1240)
    assert run.seconds == pytest.approx(3.02)


@pytest.mark.parametrize(
    "text",
    [
        "unable to connect to 127.0.0.1:1 Connection refused\n",
        "PANIC: unprotected error in call to Lua API (mix.lua:16: attempt to concatenate)\n",
        PRODUCT_RUN.split("Requests/sec")[0],
        "",
    ],
)
def test_a_run_wrk_did_not_finish_is_refused_not_counted_as_zero(text: str) -> None:
    with pytest.raises(ValueError, match="not a finished wrk run"):
        parse_wrk_output(text)


def test_wrk_is_called_as_run_sh_calls_it_plus_latency() -> None:
    # run.sh: wrk -t2 -c"$conns" -d"${dur}s" -s mix.lua URL
    assert wrk_arguments(32, 30, "/x/mix.lua", "http://127.0.0.1:8080") == [
        "--latency",
        "-t2",
        "-c32",
        "-d30s",
        "-s",
        "/x/mix.lua",
        "http://127.0.0.1:8080",
    ]


def test_distributions_use_run_sh_s_hot_shares() -> None:
    assert dict(HOT_SHARE) == {"uniform": "0", "hotspot": "0.9"}


def wrk_run(per_second: float, p99_ms: float = 50.0, error_responses: int = 0) -> WrkRun:
    return WrkRun(
        requests=int(per_second * 30),
        seconds=30.0,
        requests_per_s=per_second,
        latency_mean_ms=p99_ms / 3,
        latency_max_ms=p99_ms * 2,
        percentiles_ms={"p50": p99_ms / 4, "p75": p99_ms / 3, "p90": p99_ms / 2, "p99": p99_ms},
        error_responses=error_responses,
    )


def test_ratio_range_is_the_product_over_the_faster_and_the_slower_naive_run() -> None:
    row = SideBySide(32, "uniform", wrk_run(793), wrk_run(1023, 53), wrk_run(718))
    low, high = row.ratios or (0.0, 0.0)
    assert low == pytest.approx(1023 / 793)
    assert high == pytest.approx(1023 / 718)
    assert ratio_text(row.ratios) == "1.3-1.4x"


def test_ratio_is_one_figure_when_both_naive_runs_give_the_same() -> None:
    row = SideBySide(32, "hotspot", wrk_run(758), wrk_run(1019), wrk_run(758))
    assert ratio_text(row.ratios) == "1.3x"


def test_no_ratio_over_a_naive_run_that_got_no_answer() -> None:
    row = SideBySide(32, "uniform", wrk_run(0), wrk_run(1000), wrk_run(700))
    assert row.ratios is None
    assert ratio_text(row.ratios) == "-"


def test_table_has_one_row_per_connections_and_distribution_with_errors_shown() -> None:
    rows = [
        SideBySide(32, "uniform", wrk_run(793, 40), wrk_run(1023, 53), wrk_run(718, 45)),
        SideBySide(
            256,
            "hotspot",
            wrk_run(604, 900, error_responses=107),
            wrk_run(1806, 252),
            wrk_run(805, 700),
        ),
    ]
    assert table(rows).splitlines() == [
        "| | naive (before) | product | naive (after) | product / naive |",
        "|---|---|---|---|---|",
        "| C=32 uniform | 793 /s, p99 40 ms | 1,023 /s, p99 53 ms | 718 /s, p99 45 ms | 1.3-1.4x |",
        "| C=256 hot spot | 604 /s, p99 900 ms (107 errors) | 1,806 /s, p99 252 ms "
        "| 805 /s, p99 700 ms | 2.2-3.0x |",
    ]


def test_sitting_record_keeps_every_run_and_the_ratios() -> None:
    row = SideBySide(8, "uniform", parse_wrk_output(PRODUCT_RUN), wrk_run(120), wrk_run(100))
    record = orjson.loads(orjson.dumps(sitting_record([row], {"label": "validation"})))
    assert record["label"] == "validation"
    (saved,) = record["rows"]
    assert saved["label"] == "C=8 uniform"
    assert saved["naive_before"]["requests"] == 282
    assert saved["naive_before"]["percentiles_ms"]["p99"] == pytest.approx(196.62)
    assert saved["ratio_min"] == pytest.approx(round(120 / 100, 2))
    assert saved["ratio_max"] == pytest.approx(round(120 / 93.14, 2))
