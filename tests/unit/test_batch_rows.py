"""The Python row types of a ledger batch and the SQL composite types of ``ledger_apply_batch``
are two halves of one definition: same attributes, same order, compatible types."""

from __future__ import annotations

import re
import typing
import uuid
from datetime import datetime
from importlib import resources

import pytest

from ledger_core.rows import SQL_TYPES

pytestmark = pytest.mark.unit

# The SQL types a Python annotation may be sent as (asyncpg's codecs).
COMPATIBLE: dict[object, set[str]] = {
    int: {"int", "bigint", "smallint", "numeric"},
    str: {"text", "uuid"},  # a UUID in its text form (the facts' event ids)
    bool: {"boolean"},
    bytes: {"bytea"},
    uuid.UUID: {"uuid"},
    datetime: {"timestamptz"},
}


def definitions_sql() -> str:
    return (resources.files("wallet_platform.definitions") / "ledger_apply_batch.sql").read_text()


def composite_types(sql: str) -> dict[str, list[tuple[str, str]]]:
    """Each ``CREATE TYPE name AS (attr type, ...)`` of the file: its attributes in order."""
    sql = re.sub(r"--[^\n]*", "", sql)
    found = {}
    for name, body in re.findall(r"CREATE TYPE (\w+) AS \((.*?)\);", sql, re.DOTALL):
        found[name] = [tuple(part.split()) for part in body.split(",")]
    return found


def function_parameters(sql: str) -> list[str]:
    """The type of each parameter of ``CREATE FUNCTION ledger_apply_batch``, in order."""
    sql = re.sub(r"--[^\n]*", "", sql)
    match = re.search(r"CREATE FUNCTION ledger_apply_batch\((.*?)\) RETURNS", sql, re.DOTALL)
    assert match is not None
    return [part.split()[1] for part in match.group(1).split(",")]


def test_each_row_tuple_has_the_attributes_of_its_sql_type_in_order() -> None:
    types = composite_types(definitions_sql())
    assert sorted(types) == sorted(name for name, _ in SQL_TYPES)
    for name, row in SQL_TYPES:
        assert [attr for attr, _ in types[name]] == list(row._fields), name  # type: ignore[attr-defined]


def test_each_row_field_is_sent_as_a_compatible_sql_type() -> None:
    types = composite_types(definitions_sql())
    for name, row in SQL_TYPES:
        hints = typing.get_type_hints(row)
        for attr, sql_type in types[name]:
            python = set(typing.get_args(hints[attr]) or (hints[attr],)) - {type(None)}
            assert len(python) == 1, (name, attr, hints[attr])
            assert sql_type in COMPATIBLE[python.pop()], (name, attr, sql_type)


def test_the_function_takes_one_array_per_row_type_in_order() -> None:
    parameters = function_parameters(definitions_sql())
    assert parameters == [f"{name}[]" for name, _ in SQL_TYPES]
