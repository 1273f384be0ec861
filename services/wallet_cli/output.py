"""What ``wallet`` shows: JSON for scripts, tables for people, progress on standard error.

Progress bars and spinners go to standard error, so standard output stays the answer alone
(``wallet ... --json | jq`` works while a bar is drawn).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table


def emit(data: Any) -> None:
    """``data`` as one line of JSON on standard output."""
    sys.stdout.write(orjson.dumps(data).decode() + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


def render(data: Any) -> None:
    """An answer for a person: a object's scalar fields as ``name: value`` lines, and each of
    its lists of objects (balances, statement lines, accounts) as a table."""
    console = Console(soft_wrap=True)
    if isinstance(data, list):
        data = {"items": data}
    if not isinstance(data, dict):
        console.print(_cell(data), markup=False, highlight=False)
        return
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            continue
        console.print(f"{key}: {_cell(value)}", markup=False, highlight=False)
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(name for row in value for name in row))
            table = Table(*columns, title=key, title_justify="left")
            for row in value:
                table.add_row(*(_cell(row.get(c)) for c in columns))
            console.print(table)


class Bar:
    """A progress bar's handle: the module's progress callback calls these."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def set_total(self, total: int | None) -> None:
        """The amount of work, once it is known."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def update(self, completed: int, description: str | None = None) -> None:
        """How far the work is."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, status=description or "")

    def advance(self, description: str | None = None) -> None:
        """One more step done."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, status=description or "")


@contextlib.contextmanager
def progress_bar(title: str, *, total: int | None, enabled: bool = True) -> Iterator[Bar]:
    """A progress bar on standard error (none when ``enabled`` is false, e.g. for ``--json``,
    or when standard error is not a terminal, where rich draws only the final state)."""
    if not enabled:
        yield Bar(None, None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(title, total=total, status="")
        yield Bar(progress, task)


@contextlib.contextmanager
def spinner(title: str, *, enabled: bool = True) -> Iterator[None]:
    """A spinner on standard error while work of unknown length runs."""
    if not enabled:
        yield
        return
    with Console(stderr=True).status(title):
        yield
