"""``python -m api_contract DIR``: compare our OpenAPI descriptions with Quadcode's files in DIR.

Exit 0 when they agree, 1 with every difference printed, 2 when DIR lacks Quadcode's files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from api_contract import (
    QUADCODE_B2B_CLIENT,
    QUADCODE_EXTERNAL,
    QUADCODE_GATEWAY,
    QUADCODE_INTERNAL,
    WALLET_CALLBACKS,
    OperationKey,
    load,
    operation_differences,
    operations,
)
from quadcode_gateway.client import EXTERNAL_OPERATIONS
from quadcode_gateway.internal import INTERNAL_OPERATIONS
from quadcode_gateway.transport import Operation


def keys_of(client_operations: tuple[Operation, ...]) -> set[OperationKey]:
    return {(op.method, op.path) for op in client_operations}


def compare(directory: Path) -> list[str]:
    """Every way our descriptions depart from Quadcode's files in ``directory``:
    - the wallet's callbacks against the B2B client contract (we serve all of it);
    - our gateway description against Quadcode's two gateway files, for the calls our client
      makes, and any operation of those files our client does not call (a new one shows here)."""
    theirs = load(directory / QUADCODE_B2B_CLIENT)
    found = operation_differences(theirs, load(WALLET_CALLBACKS), operations(theirs))
    gateway = load(QUADCODE_GATEWAY)
    for name, client_operations in (
        (QUADCODE_EXTERNAL, EXTERNAL_OPERATIONS),
        (QUADCODE_INTERNAL, INTERNAL_OPERATIONS),
    ):
        theirs = load(directory / name)
        called = keys_of(client_operations)
        found += operation_differences(theirs, gateway, called)
        found += [
            f"{method} {path}: in {name}, not called by our client"
            for method, path in sorted(set(operations(theirs)) - called)
        ]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m api_contract DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    missing = [
        name
        for name in (QUADCODE_B2B_CLIENT, QUADCODE_EXTERNAL, QUADCODE_INTERNAL)
        if not (directory / name).is_file()
    ]
    if missing:
        print(f"api_contract: {directory} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    differences = compare(directory)
    for line in differences:
        print(line)
    print(f"api_contract: {len(differences)} difference(s) from Quadcode's files in {directory}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
