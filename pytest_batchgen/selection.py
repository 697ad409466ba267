"""Which items a run collects when the command line names nodes of a plan.

``pytest --batch-plan plans/p.md 'plans/p.md::a.md'`` means "run row a.md", and a row may
become complete only when every item that belongs to it ran and passed, its custom
``batch_output`` tests included. pytest's own node-id selection would collect only the plan's
items and leave the custom tests out, so the row would pass on a subset. Instead the named
plan is collected whole (with the ``batchgen_checks`` files), and the items outside the named
rows or items are deselected through ``pytest_deselected``, which marks a row that lost some
of its items as partial: it is not marked complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .rowid import RowId


@dataclass(frozen=True)
class NodeFilter:
    """A row named on the command line, or one item of it (``item`` is the rule's name)."""

    row: RowId
    item: str | None = None


@dataclass(frozen=True)
class Selection:
    """The command line's arguments for collection, and the filters on the plans' rows."""

    args: tuple[str, ...]
    filters: tuple[NodeFilter, ...] = ()
    filtered_plans: frozenset[Path] = field(default_factory=frozenset)

    def keeps(self, row: RowId, item_name: str | None) -> bool:
        """Whether an item of ``row`` stays selected (``item_name`` None: a custom test)."""
        if row.plan not in self.filtered_plans:
            return True
        return any(f.row == row and (f.item is None or f.item == item_name) for f in self.filters)


def select(
    args: Sequence[str], invocation_dir: Path, plans: Sequence[Path], checks: Sequence[Path]
) -> Selection:
    """Rewrite explicit command-line ``args``: a node of a plan becomes its plan plus a filter;
    plans not named are added; the custom check files are added unless an argument covers them."""
    out: list[str] = []
    filters: list[NodeFilter] = []
    whole: set[Path] = set()
    named: set[Path] = set()
    for arg in args:
        path_part, sep, rest = arg.partition("::")
        target = (invocation_dir / path_part).resolve()
        if target not in plans:
            out.append(arg)
            continue
        named.add(target)
        if not sep:
            whole.add(target)
            continue
        filename, _, item = rest.partition("::")
        filters.append(NodeFilter(RowId(target, filename), item.split("[")[0] or None))
    out += [str(p) for p in plans]  # each plan once, collected whole
    covered = [(invocation_dir / a.partition("::")[0]).resolve() for a in args]
    for check in checks:
        resolved = check.resolve()
        if not any(resolved == c or c in resolved.parents for c in covered):
            out.append(str(check))
    filtered = frozenset(p for p in named if p not in whole)
    return Selection(tuple(out), tuple(f for f in filters if f.row.plan in filtered), filtered)
