"""Which items a run collects when the command line names nodes of a plan.

``pytest --batch-plan plans/p.md 'plans/p.md::a.md'`` means "run row a.md", and a row may
become complete only when every item that belongs to it ran and passed, its custom
``batch_output`` tests included. pytest's own node-id selection would collect only the plan's
items and leave the custom tests out, so the row would pass on a subset. Instead the named
plan is collected whole (with the ``batchgen_checks`` files), and the items outside the named
rows or items are deselected through ``pytest_deselected``, which marks a row that lost some
of its items as partial: it is not marked complete.

A node id inside a ``batchgen_checks`` file (``checks/test_glossary.py::test_ok``) selects the
rows of the custom tests it names, in the same way: the check files are collected whole, so the
custom tests it does not name are deselected (their rows are partial), and the items of the
rows it does not select are deselected (none of them is generated).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BatchgenError
from .rowid import RowId

if TYPE_CHECKING:
    from .plan import Row
    from .run import PlanRun


@dataclass(frozen=True)
class NodeFilter:
    """A row named on the command line, or one item of it (``item`` is the rule's name)."""

    row: RowId
    item: str | None = None
    arg: str = field(default="", compare=False)  # as given on the command line


@dataclass(frozen=True)
class Selection:
    """The command line's arguments for collection, and the filters on the plans' rows."""

    args: tuple[str, ...]
    filters: tuple[NodeFilter, ...] = ()
    filtered_plans: frozenset[Path] = field(default_factory=frozenset)
    #: custom tests named by node id in a ``batchgen_checks`` path: its file, what follows ``::``
    #: and the argument as given
    check_nodes: tuple[tuple[Path, str, str], ...] = ()
    checks: tuple[Path, ...] = ()  # the ``batchgen_checks`` paths, resolved

    def keeps(self, row: RowId, item_name: str | None) -> bool:
        """Whether an item of ``row`` stays selected (``item_name`` None: a custom test)."""
        if row.plan not in self.filtered_plans:
            return True
        return any(f.row == row and (f.item is None or f.item == item_name) for f in self.filters)

    def in_checks(self, path: Path) -> bool:
        return _under(path, self.checks)

    def named_by(self, path: Path, nodeid: str) -> list[str]:
        """The arguments that name a test of a check file (its resolved file, its node id)."""
        tail = nodeid.partition("::")[2]
        return [a for p, t, a in self.check_nodes if path == p and (tail == t or tail.startswith((t + "::", t + "[")))]


def select(args: Sequence[str], invocation_dir: Path, plans: Sequence[Path], checks: Sequence[Path]) -> Selection:
    """Rewrite explicit command-line ``args``: a node of a plan becomes its plan plus a filter;
    plans not named are added (collected, so that custom tests find their rows) and, when the
    arguments name a plan or a node of one, deselected whole: ``pytest --batch-plan a.md
    --batch-plan b.md 'b.md::x.md'`` runs row x.md, not every row of a.md too (generated, or
    re-recorded in record mode ``all``); the custom check files are added unless an argument
    covers them."""
    out: list[str] = []
    filters: list[NodeFilter] = []
    whole: set[Path] = set()
    named: set[Path] = set()
    resolved_checks = tuple(c.resolve() for c in checks)
    check_nodes: list[tuple[Path, str, str]] = []
    for arg in args:
        path_part, sep, rest = arg.partition("::")
        target = (invocation_dir / path_part).resolve()
        if sep and target not in plans and _under(target, resolved_checks):
            check_nodes.append((target, rest, arg))  # its check file or folder is collected whole
            continue
        if target not in plans:
            out.append(arg)
            continue
        named.add(target)
        if not sep:
            whole.add(target)
            continue
        filename, _, item = rest.partition("::")
        filters.append(NodeFilter(RowId(target, filename), item.split("[")[0] or None, arg))
    out += [collection_arg(p, invocation_dir) for p in plans]  # each plan once, collected whole
    # a path covers a check file or folder; a node id inside one does not: the file is
    # collected whole, so that its custom tests not named are deselected (and their rows partial)
    covered = [(invocation_dir / a).resolve() for a in args if "::" not in a]
    for check, resolved in zip(checks, resolved_checks, strict=True):
        if not _under(resolved, covered):
            out.append(collection_arg(check, invocation_dir))
    filtered = frozenset(p for p in named if p not in whole)
    unnamed = frozenset(p for p in plans if p not in named) if named or check_nodes else frozenset()
    return Selection(
        tuple(out),
        tuple(f for f in filters if f.row.plan in filtered),
        filtered | unnamed,
        tuple(check_nodes),
        resolved_checks,
    )


def _under(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (resolved) is one of ``roots`` or inside one."""
    return any(path == root or root in path.parents for root in roots)


def collection_arg(path: Path, invocation_dir: Path) -> str:
    """``path`` as a collection argument: relative to the invocation folder, as a user would
    type it. pytest refuses an argument with a ``[`` and no ``::`` ("path cannot contain []
    parametrization"), so an absolute path failed for every project in a folder like
    ``site [draft]``; a ``[`` in the path below it cannot be passed at all."""
    arg = os.path.relpath(path, invocation_dir)
    if "[" in arg:
        raise BatchgenError(f"{arg}: pytest takes no path with '[' on its command line; rename the folder or file")
    return arg


def not_found(
    selection: Selection,
    runs: Sequence[PlanRun],
    phases: Sequence[str],
    other_items: Callable[[PlanRun, Row], Sequence[str]] = lambda run, row: (),
) -> list[str]:
    """Why each named node selects nothing: no such row in its plan, a row outside
    ``--batch-phase``, no such item of the row (``other_items``: the row's items besides the
    rules, ``generate`` when it is generated, ``fresh`` with ``--batch-fail-stale``). pytest says
    "not found" for a node id that matches nothing; a plan's node that only deselected every
    item would run nothing and exit 5 without saying why."""
    by_plan = {run.plan.path: run for run in runs}
    problems: list[str] = []
    for f in selection.filters:
        run = by_plan.get(f.row.plan)
        if run is None:
            continue
        row = next((r for r in run.plan.rows if r.filename == f.row.filename), None)
        where = run.plan.rel(run.plan.path)
        if row is None:
            names = [r.filename for r in run.plan.rows]
            close = difflib.get_close_matches(f.row.filename, names, n=1)
            hint = f" (did you mean {RowId(run.plan.path, close[0]).command_node()}?)" if close else ""
            problems.append(f"not found: {f.arg}: {where} has no row with Filename {f.row.filename}{hint}")
        elif row not in run.rows:
            problems.append(
                f"not found: {f.arg}: row {row.filename} is in phase {row.phase}, and --batch-phase selects "
                f"{', '.join(phases)}; add --batch-phase {row.phase} or leave the option out"
            )
        elif f.item is not None:
            items = [*(rule.name for rule in run.rules), *other_items(run, row)]
            if f.item not in items:
                close = difflib.get_close_matches(f.item, items, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                problems.append(
                    f"not found: {f.arg}: row {row.filename} has no item {f.item} ({hint}its items: {', '.join(items)})"
                )
    return problems
