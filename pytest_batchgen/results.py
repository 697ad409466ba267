"""The RECORD step: from per-item outcomes to the plan's new statuses and notes.

Outcomes arrive as pytest reports (possibly from xdist workers), so the tally is plain data
keyed by (plan, filename). A row becomes complete only when every one of its items ran in
this session and passed; a row with any failure keeps its status and gets a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .outcomes import Verdict
from .planedit import RowUpdate


@dataclass(frozen=True)
class ItemFailure:
    """One failing item of a row, as it goes into the plan's note and the reports."""

    check: str
    message: str
    checklist_line: int | None = None
    output: str | None = None
    output_line: int | None = None
    detail: str | None = None  # the first lines of what the check printed (a linter's report)

    def describe(self) -> str:
        where = ""
        if self.output:
            output = shown(self.output)
            where = f"{output}:{self.output_line}: " if self.output_line else f"{output}: "
        origin = f" (plan line {self.checklist_line})" if self.checklist_line else ""
        first = shown_lines(self.message.strip())[0] if self.message.strip() else "failed"
        return f"{shown(self.check)}{origin}: {where}{first}"


@dataclass
class RowTally:
    """What the session saw of one row's items."""

    filename: str
    status_before: str
    expected: int = 0
    partial: bool = False
    passed: int = 0
    skipped: int = 0
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def ran_all_and_passed(self) -> bool:
        return not self.partial and self.expected > 0 and self.passed == self.expected and not self.failures

    @property
    def verdict(self) -> Verdict:
        if self.failures:
            return Verdict.FAILED
        if self.ran_all_and_passed:
            return Verdict.COMPLETE
        if self.skipped and not self.passed:
            return Verdict.SKIPPED
        return Verdict.INCOMPLETE


#: at most this many lines of a check's own output (a linter's report) go into the plan's note
NOTE_DETAIL_LINES = 5

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+(?=>)")

#: what a note never holds as it came: the control characters but the tab and the newline, DEL,
#: U+2028 and U+2029, and lone surrogates. A message is anyone's text (a linter's colours under
#: FORCE_COLOR, a check's message, a judge's reason): a NUL in the notes made the next run refuse
#: the plan, an escape sequence landed in plan.md, and a CR, NEL or U+2028 split a line where
#: the plan's reader does not
_UNSHOWN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def shown(text: str) -> str:
    """``text`` on one line of a note: :func:`shown_lines`' escapes, the newline's included."""
    return "\\n".join(shown_lines(text))


def shown_lines(text: str) -> list[str]:
    """``text``'s lines as a note holds them (split at newlines, CRLF included), each character
    of :data:`_UNSHOWN` escaped as ``repr`` escapes it (``\\x1b``, ``\\x00``, ``\\r``)."""
    text = text.replace("\r\n", "\n")
    if _UNSHOWN.search(text):
        text = _UNSHOWN.sub(lambda m: repr(m.group())[1:-1], text)
    return text.split("\n")


def without_addresses(text: str) -> str:
    """``text`` with the memory addresses of Python's default reprs taken out
    (``<built-in method get of mappingproxy object at 0x7f...>`` becomes ``<built-in method get of
    mappingproxy object>``): pytest's assertion explanations and a check's message may hold
    them, and they change from process to process, so a note holding one would change the plan
    on every run with the same results."""
    return _ADDRESS.sub("", text)


def note_for(tally: RowTally) -> str:
    n = len(tally.failures)
    head = f"{n} check{'s' if n != 1 else ''} failed"
    if tally.status_before == "complete" and tally.failures:
        output = next((f.output for f in tally.failures if f.output), None) or "the output"
        head += (
            f" (the row was complete and stays complete: fix {output} by hand, or set its Status to "
            "pending to generate it again)"
        )
    # one line per failing check, except that a failed generation (seen by every check of the
    # row on an xdist worker) is one line naming them all
    groups: dict[object, list[ItemFailure]] = {}

    # generation first, then checklist order, then custom tests, whatever order the reports
    # came in (xdist): notes stay stable from run to run
    def order(f: ItemFailure) -> tuple[int, int, str]:
        rank = 0 if f.check == "generate" else 1 if f.checklist_line is not None else 2
        return (rank, f.checklist_line or 0, f.check)

    ordered = sorted(tally.failures, key=order)
    for i, f in enumerate(ordered):
        key = f.message if f.message.startswith("generation failed:") else i
        groups.setdefault(key, []).append(f)
    lines = []
    for same in groups.values():
        first = same[0]
        if len(same) > 1:
            first = ItemFailure(", ".join(f.check for f in same), first.message, None, first.output, first.output_line)
        lines.append(f"- {without_addresses(first.describe())}")
        if first.detail:
            detail = shown_lines(without_addresses(first.detail))[:NOTE_DETAIL_LINES]
            lines.extend(f"  {line}" for line in detail if line.strip())
    return "\n".join([head] + lines)


def plan_updates(tallies: Mapping[str, RowTally]) -> dict[str, RowUpdate]:
    """The edits the session's outcomes call for, by filename."""
    updates: dict[str, RowUpdate] = {}
    for filename, tally in tallies.items():
        verdict = tally.verdict
        if verdict == Verdict.COMPLETE:
            updates[filename] = RowUpdate(status="complete", note="")
        elif verdict == Verdict.FAILED:
            updates[filename] = RowUpdate(status=None, note=note_for(tally))
    return updates
