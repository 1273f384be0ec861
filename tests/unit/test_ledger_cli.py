"""The operators' command line without I/O: what the statement prints, what a write refuses."""

from __future__ import annotations

import pytest

from ledger.cli import build_parser, command_from, printable
from ledger_core.requests import RequestError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("option opened", "option opened"),
        ("ünïcode ✓ 日本", "ünïcode ✓ 日本"),
        ("\x1b[2J\x1b[31mPAID", "\\x1b[2J\\x1b[31mPAID"),
        ("a\x00b", "a\\x00b"),
        ("line\nbreak\r", "line\\nbreak\\r"),
        ("tab\there", "tab\\there"),
        ("\u202eevil", "\\u202eevil"),
        ("a\u2028b", "a\\u2028b"),
        ("a\ud800b", "a\\ud800b"),
        ("\x9b31m", "\\x9b31m"),  # the one-byte CSI of C1
        ("C:\\x1b", "C:\\\\x1b"),  # a written backslash can not pass for an escape
    ],
    ids=ascii,
)
def test_the_statement_shows_control_characters_escaped(stored: str, shown: str) -> None:
    assert printable(stored) == shown


def test_nothing_the_statement_prints_is_a_control_character() -> None:
    every_code_point = "".join(chr(c) for c in range(0x110000))
    assert printable(every_code_point).isprintable()


@pytest.mark.parametrize(
    "argv",
    [
        ["create-customer", "a/b"],
        ["open-balance", "c", "b?x", "USD"],
        ["deposit", "c", "b", "1.00", "USD", "--comment", "a\x1b[31m"],
        ["deposit", "c", "b", "1.00", "USD", "--request-id", "r 1"],
    ],
)
def test_operators_can_not_write_what_the_edge_refuses(argv: list[str]) -> None:
    with pytest.raises(RequestError):
        command_from(build_parser().parse_args(argv))
