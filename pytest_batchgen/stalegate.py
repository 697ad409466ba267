"""``--batch-fail-stale``: a ``PLAN::FILENAME::fresh`` item per row, failing when the row is stale.

A format change must not pass CI over outputs of the old format: with the option each row gets
one more item, ``fresh``, which fails with the reasons when the row's output was generated from
a prompt the plan would no longer send (see :mod:`pytest_batchgen.freshness`). It passes for a
fresh row and for one with no recording to compare (``unrecorded``), and is skipped for a row
with no output. Its node id is stable and ``-k fresh`` / ``-k "not fresh"`` select it.

The item reads cassettes as YAML only, so ``--batch-readonly --batch-fail-stale`` stays off the
SDK and vcrpy. In a run that regenerates the row, it waits for the row and judges the new
recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import TerminalRepr

from .freshness import MISSING, NOT_THE_REPLY, Freshness, book_of, regenerate_command
from .nodes import RowItem, _state, located, skip_at


class StaleOutput(Exception):
    """The row's output was generated from another prompt than the plan's of today."""

    #: the tally files the failure under this check name (see tally._failure)
    batchgen_check = "fresh"


def stale_message(plan: Path, freshness: Freshness, has_key: bool = True, options: str = "") -> str:
    changed = [r for r in freshness.reasons if r != NOT_THE_REPLY]
    if changed:
        why = f"the {', the '.join(changed)} changed since it was generated"
    else:
        why = "the output is not a reply recorded for today's prompt"
    if freshness.note:
        why += f" ({freshness.note})"
    return f"stale: {why}. Regenerate it: {regenerate_command([plan], has_key, options)}"


class FreshItem(RowItem):
    """Whether the row's output was generated from the prompt the plan would send now."""

    def runtest(self) -> None:
        state = _state(self)
        plan, row = self.run.plan, self.row
        result = self.generation_result()
        book = book_of(state)
        if result is not None and result.attempts:
            book.forget(plan, row)  # generated in this run: judge its new recording
        found = book.of(plan, row)
        self.user_properties.append(("batchgen_freshness", found.state))
        if found.state == MISSING:
            skip_at(plan.path, row.line, f"no output to judge ({plan.rel(self.run.output_path(row))})")
        if found.stale:
            has_key = state.settings.credential is not None
            raise StaleOutput(stale_message(plan.path, found, has_key, state.settings.command_options()))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, StaleOutput):
            plan = self.run.plan
            first = f"{plan.rel(self.run.output_path(self.row))}: {excinfo.value}"
            text = f"{first}\n  row: {plan.rel(plan.path)}:{self.row.line}: {self.row.title} ({self.row.model})"
            return located(self, text, plan.rel(plan.path), self.row.line, first)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.run.plan.path, self.row.line - 1, f"{self.row.filename}: fresh"
