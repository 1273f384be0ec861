"""``python -m wallet_cli``: the same as the ``wallet`` console script."""

from __future__ import annotations

from wallet_cli.main import main

if __name__ == "__main__":
    main()
