"""The ``batchgen`` command (also ``python -m pytest_batchgen``): ``batchgen init`` for now.

Running plans is pytest's job (``pytest --batch-plan ...``); this command only does what
pytest cannot, starting a project. It stays light: argparse and the scaffold, no pytest, no
SDK, so it starts instantly and works before anything else is set up.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .errors import BatchgenError
from .scaffold import DEFAULT_NAME, Scaffold, check_name, plan_scaffold, write_scaffold

LINTER = "pymarkdown"


def _name(value: str) -> str:
    try:
        return check_name(value)
    except BatchgenError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="pytest-batchgen's helper command. Plans run under pytest: pytest --batch-plan PLAN.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init = commands.add_parser(
        "init",
        help="scaffold a working plan to start from",
        description="Write a small plan that already passes (cheat sheets of Python modules: a "
        "hand-written format reference, a checklist using every built-in form, a tracking file, "
        "custom checks, the pytest settings) into DIR. Never overwrites a file: if one exists, "
        "nothing is written.",
    )
    init.add_argument(
        "--name",
        type=_name,
        default=DEFAULT_NAME,
        help=f"the plan's name: plans/NAME.md, outputs in NAME/, checks/test_NAME.py (default: {DEFAULT_NAME})",
    )
    init.add_argument(
        "dir", nargs="?", default=".", metavar="DIR", help="the project folder (default: the current one)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchgen``; returns the exit code (0 done, 1 refused, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    if args.command == "init":
        return init(Path(args.dir), args.name, sys.stdout, sys.stderr)
    return 2  # pragma: no cover - argparse requires a command


def init(folder: Path, name: str, out: TextIO, err: TextIO) -> int:
    try:
        scaffold = plan_scaffold(folder, name)
        write_scaffold(scaffold)
    except BatchgenError as exc:
        print(f"batchgen init: {exc}", file=err)
        return 1
    except OSError as exc:  # an unreadable config, a read-only folder: say which, no traceback
        print(f"batchgen init: {exc.filename or folder}: {exc.strerror or exc}; nothing was written", file=err)
        return 1
    _report(scaffold, folder, out)
    return 0


def _report(scaffold: Scaffold, folder: Path, out: TextIO) -> None:
    where = scaffold.root
    print(f"batchgen init: a plan to start from, in {where}", file=out)
    width = max(len(f.path) for f in scaffold.files)
    for f in scaffold.files:
        verb = {"create": "wrote", "append": "appended to", "keep": "kept"}[f.action]
        print(f"  {verb:<11} {f.path:<{width}}  {f.purpose}", file=out)
    config = scaffold.existing_config
    if config is not None:
        print(
            f"\npytest's settings are in {config.path}, so no pytest.ini was written. To run the "
            f"custom checks with the plan, add this line under {config.section} there (or add the "
            f"path to batchgen_checks if it is set):\n  {config.line(scaffold.checks)}",
            file=out,
        )
    if not _linter_installed():
        print(
            f"\nThe checklist's linter, {LINTER}, is not installed here; install it with "
            "pip install 'pytest-batchgen[lint]' (or pip install pymarkdownlnt).",
            file=out,
        )
    plan = shlex.quote(str(scaffold.plan))
    print("\nNext:", file=out)
    if folder.absolute() != Path.cwd():
        dashes = "-- " if str(folder).startswith("-") else ""  # a folder named like an option
        print(f"  cd {dashes}{shlex.quote(str(folder))}", file=out)
    steps = (
        (f"pytest --batch-plan {plan} --batch-validate-only", "checks the format reference; sends nothing"),
        (f"pytest --batch-plan {plan} --batch-dry-run", "shows each pending row's prompt"),
        (f"ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan {plan}", "generates, records and checks the pending rows"),
    )
    for command, why in steps:
        print(f"  {command}\n      # {why}", file=out)


def _linter_installed() -> bool:
    """Found the way the plugin finds it: on PATH, or next to the running Python."""
    if shutil.which(LINTER):
        return True
    return shutil.which(LINTER, path=os.path.dirname(sys.executable)) is not None


if __name__ == "__main__":  # python -m pytest_batchgen.cli, as python -m pytest_batchgen
    raise SystemExit(main())
