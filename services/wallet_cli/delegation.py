"""Handing a subcommand to an existing ``python -m`` entry point, with its own parser.

The modules' entry points parse their own arguments (some from ``sys.argv``, some from an
``argv`` parameter). ``wallet`` hands them the words after its subcommand unchanged, so each
task keeps one parser, one ``--help`` and one behaviour, whichever way it is started.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """A module's ``main``, and how it takes its arguments."""

    module: str
    """The module whose ``main`` runs (imported only when the subcommand runs)."""
    prog: str
    """What ``sys.argv[0]`` says while it runs (its parser's usage line names it)."""
    takes_argv: bool = False
    """``main(argv)`` accepts the arguments; otherwise it reads ``sys.argv``."""
    fixed_args: tuple[str, ...] = ()
    """Words put before the caller's (a service's ``run``, the key CLI's group)."""
    function: str = "main"

    def resolve(self) -> Callable[..., object]:
        """The entry point's function (importing its module)."""
        main: Callable[..., object] = getattr(importlib.import_module(self.module), self.function)
        return main


SERVICES: Final[dict[str, EntryPoint]] = {
    "edge": EntryPoint("edge.__main__", "python -m edge"),
    "ledger": EntryPoint("ledger.__main__", "python -m ledger"),
    "projection": EntryPoint("projection.__main__", "python -m projection"),
    "operator-api": EntryPoint("operator_api.__main__", "python -m operator_api"),
    "accounting": EntryPoint("accounting.__main__", "python -m accounting", fixed_args=("run",)),
    "reconciler": EntryPoint("reconciler.__main__", "python -m reconciler", fixed_args=("run",)),
}
"""``wallet run NAME``: the long-running services. Exchanges have no process of their own:
the operator API drives and resumes them (``wallet exchanges`` is their command line)."""

TOOLS: Final[dict[str, EntryPoint]] = {
    "keys": EntryPoint(
        "operator_api.cli", "python -m operator_api", True, ("keys",), function="run"
    ),
    "master-keys": EntryPoint(
        "operator_api.cli", "python -m operator_api", True, ("master",), function="run"
    ),
    "exchanges": EntryPoint("exchange.__main__", "python -m exchange", True),
    "replay": EntryPoint("ledger.replay", "python -m ledger.replay", True),
    "bench": EntryPoint("bench.__main__", "python -m bench"),
    "books": EntryPoint("accounting.__main__", "python -m accounting"),
    "rebuild": EntryPoint("projection.__main__", "python -m projection", fixed_args=("rebuild",)),
    "reconcile": EntryPoint("reconciler.__main__", "python -m reconciler", fixed_args=("once",)),
}
"""Pass-through subcommands: ``wallet NAME ARGS...`` is ``PROG [FIXED] ARGS...``."""


@contextlib.contextmanager
def program_arguments(prog: str, args: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` as the entry point would have seen it, restored afterwards."""
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        yield
    finally:
        sys.argv = saved


def exit_status(result: object) -> int:
    """A ``main``'s return value as an exit status (``None`` is success, as for ``sys.exit``)."""
    if result is None:
        return 0
    if isinstance(result, bool):
        return int(not result)
    if isinstance(result, int):
        return result
    return 0


def run_entry_point(entry: EntryPoint, args: Sequence[str]) -> int:
    """Run ``entry`` with ``args`` after its fixed words; its exit status (a ``SystemExit``
    it raises passes through, as it would from ``python -m``)."""
    argv = [*entry.fixed_args, *args]
    main = entry.resolve()
    with program_arguments(entry.prog, argv):
        result = main(argv) if entry.takes_argv else main()
    return exit_status(result)
