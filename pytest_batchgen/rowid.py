"""One spelling of a row's identity: the plan it belongs to and its output's filename.

The same row appears as a dispatcher result, an item count, a tally, a node id
(``plans/glossary.md::quorum.md::front-matter``) and a parametrize id of a custom test
(``test_x[quorum.md]``). All of them are formatted, and parsed back, here.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path


def shell_word(text: str) -> str:
    """``text`` as one shell word in single quotes (how the plugin prints a node id in a
    command to run): a quote inside it is closed, escaped and reopened."""
    return "'" + text.replace("'", "'\\''") + "'"


def command_path(path: Path) -> str:
    """``path`` as a printed command names it: relative to the current folder, where the user
    runs what is printed. pytest reads a node id on the command line from there, not from the
    rootdir, so a command printed rootdir-relative failed when run from a subfolder."""
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def plan_option(path: Path) -> str:
    """``--batch-plan PLAN`` for a printed command (see :func:`command_path`)."""
    return f"--batch-plan {shlex.quote(command_path(path))}"


@dataclass(frozen=True)
class RowId:
    """A row of a plan in this session. ``plan`` is the plan's resolved path."""

    plan: Path
    filename: str

    @property
    def key(self) -> str:
        """A plain string for maps and for data that crosses processes (xdist, JSON).

        Interned: a row's key is made again wherever a row is named (its future, its tallies,
        its results), and each map kept its own copy until the end (6 a row, 0.45 KB)."""
        return sys.intern(f"{self.plan}::{self.filename}")

    def param_id(self, several_plans: bool) -> str:
        """The id of a ``batch_output``/``batch_row`` test's parameter: the filename, prefixed
        with the plan's name when the session runs several plans (filenames may repeat)."""
        return f"{self.plan.stem}/{self.filename}" if several_plans else self.filename

    def node_id(self, rootdir: Path) -> str:
        """The row's collector node id, which is also what ``pytest PLAN::FILENAME`` names."""
        try:
            plan = self.plan.relative_to(rootdir).as_posix()
        except ValueError:
            plan = str(self.plan)
        return f"{plan}::{self.filename}"

    def command_node(self, rule: str = "") -> str:
        """The row's node (or one item's) as a printed command names it: one shell word,
        relative to the current folder (see :func:`command_path`)."""
        node = f"{command_path(self.plan)}::{self.filename}" + (f"::{rule}" if rule else "")
        return shell_word(node)

    def matches(self, nodeid: str, rootdir: Path, several_plans: bool) -> bool:
        """Whether the collected ``nodeid`` is one of this row's items.

        A checklist item is ``PLAN::FILENAME::RULE``; a custom test carries the row in its
        parametrize id, possibly among other parameters' ids joined by ``-``. With a single
        plan the plan part of a checklist item is not compared (xdist workers may report it
        relative to another folder)."""
        parts = nodeid.split("::")
        if len(parts) >= 3 and parts[1] == self.filename:
            if not several_plans:
                return True
            return bool(parts[0]) and (rootdir / parts[0]).resolve() == self.plan
        last = parts[-1]
        if not (last.endswith("]") and "[" in last):
            return False
        param = last[last.index("[") + 1 : -1]
        ident = self.param_id(several_plans)
        return param == ident or param.startswith(ident + "-") or param.endswith("-" + ident) or f"-{ident}-" in param
