"""``python -m pytest_batchgen``: the ``batchgen`` command (see :mod:`pytest_batchgen.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
