"""Command line of the Quadcode gateway library.

``python -m quadcode_gateway keygen --out-dir DIR`` writes ``DIR/private.pem`` (keep it) and
``DIR/public.pem`` (send it to Quadcode), exactly the artefacts of the README's two ``openssl``
commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from quadcode_gateway.tokens import generate_keypair


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m quadcode_gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="generate an ES256 (P-256) key pair")
    keygen.add_argument("--out-dir", required=True, type=Path, help="directory for the PEM files")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    args = parser.parse_args(argv)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / "private.pem", out_dir / "public.pem"
    try:
        generate_keypair(private_path, public_path, overwrite=args.force)
    except FileExistsError as exc:
        print(f"error: {exc} (use --force to replace)", file=sys.stderr)
        return 1
    print(f"private key: {private_path}  (keep secret; sign our JWTs with it)")
    print(f"public key:  {public_path}  (send to Quadcode)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
