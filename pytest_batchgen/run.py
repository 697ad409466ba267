"""One plan in one session: its compiled rules, the selected rows and their verdicts.

Checks are evaluated through here so that each (row, rule) runs once per version of the
output: the registration rule and the repair loop ask for the other rules' verdicts without
re-running a linter that already ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .checklist import CheckContext, CheckSkipped, Failure, Rule
from .document import DocumentCache, OutputDocument
from .plan import Plan, Row
from .rowid import RowId


@dataclass
class PlanRun:
    plan: Plan
    rules: tuple[Rule, ...]
    rows: tuple[Row, ...]
    docs: DocumentCache = field(default_factory=DocumentCache)
    readonly: bool = False
    #: by row filename, then (rule, file checked): the verdict and the parse it was made on
    _verdicts: dict[str, dict[tuple[str, Path], tuple[OutputDocument, Failure | CheckSkipped | None]]] = field(
        default_factory=dict
    )
    #: each row's output path, made once (a verdict key and a cached parse share it)
    _outputs: dict[str, Path] = field(default_factory=dict)
    #: the user_properties of a row's items when it has no generation result (nodes.row_properties)
    properties: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: rows (by filename) a test outside the checklist failed for in this process (a custom test
    #: using ``batch_output``): their output fails its other checks too (see :meth:`others_pass`)
    tests_failed: set[str] = field(default_factory=set)
    #: rows (by filename) a custom test of was deselected in this process: not registered
    tests_deselected: set[str] = field(default_factory=set)
    #: rows (by filename) a custom test of skipped (or xfailed) for in this process, and why: the
    #: row stays pending (not every item passed), so its output is not registered either
    tests_skipped: dict[str, str] = field(default_factory=dict)

    @property
    def quick_checks(self) -> bool:
        """Whether every rule a draft is checked against is quick (see ``ChecklistForm.quick``)."""
        return all(rule.form.quick for rule in self.rules if not rule.form.runs_last)

    def row_id(self, row: Row) -> RowId:
        """The row's identity in the session: dispatcher results, item counts, reports."""
        return RowId(self.plan.path, row.filename)

    def output_path(self, row: Row) -> Path:
        path = self._outputs.get(row.filename)
        if path is None:
            path = self._outputs[row.filename] = self.plan.output_path(row)
        return path

    def forget(self, row: Row) -> None:
        """The row's items have all run: its parsed output and verdicts leave memory (issue 12:
        10,000 rows held them to the end). Whatever asks again (a custom test over the rows)
        reads the file again."""
        self._verdicts.pop(row.filename, None)
        path = self._outputs.get(row.filename)
        if path is not None:
            self.docs.forget(path)

    def document(self, row: Row) -> OutputDocument:
        return self.docs.get(self.output_path(row))

    def evaluate(self, row: Row, rule: Rule, path: Path | None = None) -> Failure | None:
        """The rule's verdict on the row's output (cached while the file is unchanged).

        ``path`` checks a draft kept elsewhere (a re-recorded row whose output passed)."""
        path = path or self.output_path(row)
        doc = self.docs.get(path)
        verdicts = self._verdicts.setdefault(row.filename, {})
        key = (rule.name, path)
        hit = verdicts.get(key)
        if hit is not None and hit[0] is doc:
            if isinstance(hit[1], CheckSkipped):
                raise CheckSkipped(str(hit[1]))
            return hit[1]
        ctx = CheckContext(
            doc=doc,
            row=row,
            plan=self.plan,
            readonly=self.readonly,
            others_pass=lambda: self.others_pass(row, rule),
            selected=self.rows,
            mechanical_failures=lambda: self.mechanical_failures(row, path),
        )
        try:
            failure = rule.run(ctx)
        except CheckSkipped as exc:  # no verdict on this version of the output (judge rules)
            verdicts[key] = (doc, exc)
            raise
        verdicts[key] = (doc, failure)
        return failure

    def others_pass(self, row: Row, rule: Rule) -> bool | None:
        """Whether every other rule (judge rules included) passes: True, False when one fails,
        None when none fails but one has no verdict (a judge rule in a run that may not call the
        model, on an output edited since its verdict was recorded). A custom test of the row that
        failed counts: run-last rules run after every other item (tally.py sorts them last); one
        deselected or skipped skips the caller (the output is not known to pass, and the row stays
        pending: a skipped test listed a pending row in the tracking file)."""
        if row.filename in self.tests_failed:
            return False
        if row.filename in self.tests_deselected:
            raise CheckSkipped("not registered: not every custom test of the row ran in this session")
        skipped = self.tests_skipped.get(row.filename)
        if skipped is not None:
            raise CheckSkipped(f"not registered: {skipped}")
        unknown = False
        for other in self.rules:
            if other is rule or other.form.runs_last:
                continue
            try:
                if self.evaluate(row, other) is not None:
                    return False
            except CheckSkipped:
                unknown = True
            except Exception:  # a user's check that raised fails its own item; here, the row fails
                return False  # (it was raised again as the asking rule's own failure: registration's)
        return None if unknown else True

    def mechanical_failures(self, row: Row, path: Path | None = None) -> list[tuple[Rule, Failure]]:
        """The failing rules that are neither model-graded nor run-last: judge rules wait for these."""
        out = []
        for rule in self.rules:
            if rule.form.runs_last or rule.form.model_graded:
                continue
            try:
                failure = self.evaluate(row, rule, path)
            except CheckSkipped:
                continue
            except Exception as exc:  # a user's check crashed: that is a failure too
                failure = Failure(f"the check raised {type(exc).__name__}: {exc}", repairable=False)
            if failure is not None:
                out.append((rule, failure))
        return out

    def draft_failures(self, row: Row, path: Path | None = None) -> list[tuple[Rule, Failure]]:
        """Every failing rule except the ones that run last (registration): what a repair fixes."""
        out = []
        for rule in self.rules:
            if rule.form.runs_last:
                continue
            try:
                failure = self.evaluate(row, rule, path)
            except CheckSkipped:  # a judge with no verdict: nothing to repair
                continue
            except Exception as exc:  # a user's check crashed; report it rather than stop the batch
                failure = Failure(f"the check raised {type(exc).__name__}: {exc}", repairable=False)
            if failure is not None:
                out.append((rule, failure))
        return out
