"""The collection tree: a plan file, a node per row, an item per checklist line.

``PLAN::FILENAME::RULE`` items run one compiled rule on the row's output; a pending row that
is generated in this process also gets a ``generate`` item. ``reportinfo`` points at the
plan's line (the checklist line, or the row) and a failure at the output's line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from _pytest._code.code import (
    ExceptionInfo,
    ReprExceptionInfo,
    ReprFileLocation,
    ReprTracebackNative,
    TerminalRepr,
    Traceback,
)
from _pytest.outcomes import Skipped

from . import checklist
from .checklist import CheckSkipped, Failure, Rule
from .generation import wants
from .outcomes import Outcome
from .plan import Row
from .run import PlanRun
from .state import BatchState, state_of

if TYPE_CHECKING:
    from .dispatch import RowResult

#: the fixtures that parametrise an ordinary test over the selected rows
FIXTURE_NAMES = ("batch_output", "batch_row")
#: the indirect parameter that carries ``(PlanRun, Row)`` into those fixtures
PARAM_NAME = "_batchgen_param"


def _state(node: pytest.Item | pytest.Collector) -> BatchState:
    state = state_of(node.config)
    assert state is not None, "batchgen nodes exist only in a run with --batch-plan"
    return state


class PlanFile(pytest.File):
    """A plan: collects one node per selected row."""

    def __init__(self, *, run: PlanRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> Iterator[pytest.Collector]:
        for row in self.run.rows:
            yield RowNode.from_parent(self, name=row.filename, row=row, run=self.run)


class RowNode(pytest.Collector):
    """A row of the plan: one check item per compiled checklist line."""

    def __init__(self, *, row: Row, run: PlanRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row
        self.run = run

    def collect(self) -> Iterator[pytest.Item]:
        state = _state(self)
        settings = state.settings
        mark = row_marker(self.run, self.row)  # one per row, shared by its items
        if settings.generates_here and wants(state, self.run, self.row):
            yield GenerateItem.from_parent(self, name="generate", row=self.row, run=self.run, mark=mark)
        for rule in self.run.rules:
            yield CheckItem.from_parent(self, name=rule.name, row=self.row, run=self.run, rule=rule, mark=mark)
        if settings.fail_stale:
            from .stalegate import FreshItem

            yield FreshItem.from_parent(self, name="fresh", row=self.row, run=self.run, mark=mark)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.run.plan.path, self.row.line - 1, f"{self.row.filename} (plan line {self.row.line})"

    def teardown(self) -> None:
        """The row's last item has run (pytest tears a collector down when the next item is not
        one of its own)."""
        self.run.forget(self.row)


def row_marker(run: PlanRun, row: Row) -> pytest.MarkDecorator:
    """``batchgen(plan, filename, model)``: built once per row (issue 12), not once per item."""
    return pytest.mark.batchgen(plan=run.plan.name, filename=row.filename, model=row.model)


class CheckFailed(Exception):
    """A checklist rule failed on the row's output; carries the rule's :class:`Failure`."""

    def __init__(self, failure: Failure, hint: str | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.hint = hint  # how to try again when the row's failure was replayed


class PlanSkip(Skipped):
    """A skip reported at a line of the plan (the row's, or the checklist line's) instead of the
    plugin's line that raised it: the tally's ``pytest_runtest_makereport`` puts it in the
    report, where ``-rs`` reads it (``SKIPPED [3] plans/glossary.md:27: not checked: ...``)."""

    def __init__(self, msg: str, path: Path, line: int) -> None:
        super().__init__(msg)
        self.plan_location = (str(path), line)


def skip_at(path: Path, line: int, msg: str) -> NoReturn:
    """``pytest.skip(msg)``, reported at ``path:line`` (a line of the plan)."""
    raise PlanSkip(msg, path, line)


class GenerationFailed(Exception):
    """The row's generation failed for good (API error, truncated, refused)."""


class RowItem(pytest.Item):
    """An item of one plan row, marked ``batchgen(plan, filename, model)`` for ``-m`` and reports."""

    def __init__(self, *, row: Row, run: PlanRun, mark: pytest.MarkDecorator | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row
        self.run = run
        self.add_marker(mark if mark is not None else row_marker(run, row))

    def runs_user_code(self) -> bool:
        """Whether running the item may run a user's code (see :mod:`~pytest_batchgen.protocol`)."""
        return False

    def generation_result(self) -> RowResult | None:
        """The row's generation (waiting for it), recorded in the item's properties."""
        result = _state(self).result(self.run, self.row)
        record_properties(self, self.run, self.row, result)
        return result


class CheckItem(RowItem):
    """One checklist line applied to one row's output."""

    def __init__(self, *, rule: Rule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rule = rule

    def runs_user_code(self) -> bool:
        """A form from a conftest or another plugin: its check may print or log."""
        from .rules import is_builtin

        return not is_builtin(self.rule.form)

    def runtest(self) -> None:
        state = _state(self)
        result = self.generation_result()
        if result is not None:
            if result.outcome.generation_failed and not state.settings.generates_here:
                # an xdist worker: no generate item of this row here to carry the failure
                raise CheckFailed(Failure(f"generation failed: {result.outcome}: {result.error}"))
            skip_unwritten(result, self.run, self.row)
        if state.settings.validate_only:
            skip_without_output(self.run, self.row, validate_only=True)
        try:
            failure = self.run.evaluate(self.row, self.rule)
        except CheckSkipped as exc:  # a judge rule with no verdict on this output
            skip_at(self.run.plan.path, self.rule.line, str(exc))
        if failure is not None:
            raise CheckFailed(failure, result.hint if result is not None else None)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        plan = self.run.plan
        output = plan.rel(self.run.output_path(self.row))
        if isinstance(excinfo.value, CheckFailed):
            failure = excinfo.value.failure
            text = format_failure(self.run, self.row, self.rule, failure, excinfo.value.hint)
            if failure.line:  # at the output's line; else at the checklist line, naming the output
                return located(self, text, output, failure.line, failure.message)
            return located(self, text, plan.rel(plan.path), self.rule.line, f"{output}: {failure.message}")
        # the check raised: a bug in the check, shown as its traceback (cut to the check's own
        # frames by _traceback_filter) under the lines saying which check and row it was
        exc = excinfo.value
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        crash = Failure(f"the check raised {type(exc).__name__}" + (f": {what}" if what else ""))
        header = format_failure(self.run, self.row, self.rule, crash)
        header += "\n  (a bug in the check, not in the output: no new draft can fix it; its traceback follows)"
        where = ReprFileLocation(plan.rel(plan.path), self.rule.line, f"{output}: {crash.message}")
        return CheckCrashRepr(header, super().repr_failure(excinfo, style=style), where)

    def _traceback_filter(self, excinfo: ExceptionInfo[BaseException]) -> Traceback:
        """The frames of the check itself: those below :meth:`Rule.run`'s call of the check.

        Above them are pytest's, pluggy's and the plugin's frames (some 780 lines of a report
        about a check that raised); ``--fulltrace`` still shows them all."""
        tb = excinfo.traceback
        cut = [i for i, entry in enumerate(tb) if _is_rule_run(entry)]
        return tb[cut[-1] + 1 :] if cut and cut[-1] + 1 < len(tb) else tb.filter(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.run.plan.path, self.rule.line - 1, f"{self.row.filename}: {self.rule.item.text}"


def _is_rule_run(entry: Any) -> bool:
    """Whether a traceback entry is :meth:`Rule.run`, which calls the check."""
    return entry.name == "run" and Path(str(entry.path)) == Path(checklist.__file__)


class CheckCrashRepr(TerminalRepr):
    """A check that raised: the check and row it ran on, then its traceback."""

    def __init__(self, header: str, traceback: str | TerminalRepr, reprcrash: ReprFileLocation) -> None:
        self.header = header
        self.traceback = traceback
        self.reprcrash = reprcrash  # what --tb=line and the short summary show

    def toterminal(self, tw: Any) -> None:
        for line in self.header.splitlines():
            tw.line(line)
        tw.line("")
        if isinstance(self.traceback, str):
            for line in self.traceback.splitlines():
                tw.line(line)
        else:
            self.traceback.toterminal(tw)


class GenerateItem(RowItem):
    """A pending row's generation: passes once a draft was written (the checks judge it)."""

    def runtest(self) -> None:
        result = self.generation_result()
        where = self.run.plan.path, self.row.line
        if result is None:
            skip_at(*where, "not dispatched in this run")
        if result.outcome == Outcome.SKIPPED:
            skip_at(*where, result.error or "not sent")
        if result.outcome.generation_failed:
            hint = f"; {result.hint}" if result.hint else ""
            raise GenerationFailed(f"{result.outcome}: {result.error}{hint}")

    def teardown(self) -> None:
        """The row's generation ended and its files are final: its freshness is judged now,
        between tests, rather than for every row at the end (see
        :func:`~pytest_batchgen.baseline.judge_generated`)."""
        state = _state(self)
        if state.generation is None:
            return
        result = state.result(self.run, self.row)
        if result is not None and result.attempts:
            from .baseline import judge_generated

            judge_generated(state, self.run, self.row, result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, GenerationFailed):
            plan = self.run.plan
            first = f"{plan.rel(self.run.output_path(self.row))}: generation failed: {excinfo.value}"
            text = f"{first}\n  row: {plan.rel(plan.path)}:{self.row.line}: {self.row.title} ({self.row.model})"
            return located(self, text, plan.rel(plan.path), self.row.line, first)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.run.plan.path, self.row.line - 1, f"{self.row.filename}: generate with {self.row.model}"


def located(item: pytest.Item, text: str, path: str, line: int, message: str) -> ReprExceptionInfo:
    """A failure's ``text`` with its location, ``path:line: message``, as pytest's own failures
    carry it: ``--tb=line`` prints it (from a plain string it printed the text's first 50
    characters), the short summary shows its message, and it crosses xdist as is. With
    ``--tb=line`` the location is all there is (pytest 9 prints the text above it)."""
    lines = [] if item.config.getoption("tbstyle", "auto") == "line" else [ln + "\n" for ln in text.splitlines()]
    return ReprExceptionInfo(reprtraceback=ReprTracebackNative(lines), reprcrash=ReprFileLocation(path, line, message))


def skip_unwritten(result: RowResult, run: PlanRun, row: Row) -> None:
    """Skip a check when the row's generation wrote nothing to check, saying why (at the row's line).

    A cut-off reply's partial draft waits in the drafts folder and is no output (see
    ``dispatch.reply_path``): a failed row without an output has nothing to check either (its
    checks failed on a missing file); one with an earlier attempt's draft is checked on it."""
    unwritten = not result.wrote and result.outcome in (Outcome.ERROR, Outcome.REFUSED, Outcome.SKIPPED)
    if unwritten or (result.outcome.generation_failed and not run.output_path(row).exists()):
        why = f"{result.outcome}: {result.error}" if result.error else str(result.outcome)
        skip_at(run.plan.path, row.line, f"not checked: generation wrote no output ({why})")


def skip_without_output(run: PlanRun, row: Row, *, validate_only: bool) -> None:
    """Skip an item of a pending row whose output does not exist, at the row's line: its
    checklist items and its custom tests (``batch_output``) give the same reason, so ``-rs``
    folds them into one line."""
    path = run.output_path(row)
    if row.complete or path.exists():
        return
    why = f"pending row without an output ({run.plan.rel(path)})"
    skip_at(run.plan.path, row.line, why + ("; validate-only makes no model call" if validate_only else ""))


def record_properties(item: pytest.Item, run: PlanRun, row: Row, result: RowResult | None) -> None:
    """Row properties for ``--junitxml`` (and any other reader of ``user_properties``)."""
    props = row_properties(run, row, result)
    names = {name for name, _ in item.user_properties}
    item.user_properties.extend(p for p in props if p[0] not in names)


def row_properties(run: PlanRun, row: Row, result: RowResult | None) -> tuple[tuple[str, str], ...]:
    """The row's properties, made once per row and shared by its items (and their reports):
    a copy per item was a kilobyte a row (issue 12, registration at scale)."""
    cached = result.properties if result is not None else run.properties.get(row.filename)
    if cached is not None:
        return cached
    attempts = list(result.attempts) if result is not None else []
    props = [
        ("batchgen_filename", row.filename),
        ("batchgen_model", row.model),
        ("batchgen_attempts", str(len(attempts))),
        ("batchgen_cost_usd", f"{sum(a.cost for a in attempts):.6f}"),
    ]
    if attempts:
        props.append(("batchgen_calls", "replayed" if all(a.replayed for a in attempts) else "live"))
    shared = tuple(props)
    if result is not None:
        result.properties = shared
    else:
        run.properties[row.filename] = shared
    return shared


def format_failure(run: PlanRun, row: Row, rule: Rule, failure: Failure, hint: str | None = None) -> str:
    """A failed check as the user reads it: the output's line, the checklist line, the row."""
    plan = run.plan
    output = plan.rel(run.output_path(row))
    where = f"{output}:{failure.line}" if failure.line else output
    lines = [
        f"{where}: {failure.message}",
        f"  check: {plan.rel(plan.path)}:{rule.line}: {rule.item.text}",
        f"  row:   {plan.rel(plan.path)}:{row.line}: {row.title} ({row.filename}, {row.status})",
    ]
    if failure.detail:
        lines.append("  output of the check:")
        lines.extend("    " + ln for ln in failure.detail.splitlines()[:60])
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)


def row_of(item: pytest.Item) -> tuple[PlanRun, Row] | None:
    """The row an item belongs to: a checklist/generate item, or a test parametrised over rows."""
    if isinstance(item, RowItem):
        return item.run, item.row
    callspec = getattr(item, "callspec", None)
    if callspec is not None and PARAM_NAME in callspec.params:
        found: tuple[PlanRun, Row] = callspec.params[PARAM_NAME]
        return found
    return None
