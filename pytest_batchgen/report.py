"""Reporting: the run summary, the JSON report, CI annotations and the live progress line.

Everything here works on plain data (row tallies from the reports, generation results from
the dispatcher, the price table), so the same numbers reach the terminal, the JSON file and
the JUnit properties.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .client import Usage
from .fsutil import atomic_write, write_through
from .outcomes import Outcome, Verdict
from .plan import Row
from .pricing import PRICES_SOURCE, PlanPrices
from .results import ItemFailure, RowTally
from .settings import redact

if TYPE_CHECKING:  # dispatch imports asyncio: not on the validate-only path
    from .dispatch import Attempt, RowResult
    from .judge import JudgeAttempt

SCHEMA = "pytest-batchgen-report"
SCHEMA_VERSION = 1


@dataclass
class RowReport:
    plan: str
    row: Row
    status_before: str
    status_after: str
    verdict: Verdict
    generation: RowResult | None = None
    failures: list[ItemFailure] = field(default_factory=list)
    #: the judge calls of the row's judge rules, apart from its generation attempts
    judge: list[JudgeAttempt] = field(default_factory=list)
    #: the plan's file: which plan's prices the totals use (``plan`` is its name as shown)
    plan_path: Path | None = None

    @property
    def attempts(self) -> list[Attempt]:
        return list(self.generation.attempts) if self.generation is not None else []

    @property
    def usage(self) -> Usage:
        """Generation and judge tokens together."""
        total = self.generation.usage if self.generation is not None else Usage()
        for j in self.judge:
            total = total + j.usage
        return total

    @property
    def cost(self) -> float:
        return sum(a.cost for a in self.attempts) + sum(j.cost for j in self.judge)

    @property
    def replay_saved(self) -> float:
        return sum(a.would_cost for a in self.attempts if a.replayed) + sum(
            j.would_cost for j in self.judge if j.replayed
        )


def build_rows(
    plan_rel: str,
    rows: Sequence[Row],
    tallies: Mapping[str, RowTally],
    results: Mapping[str, RowResult],
    key_of: Callable[[Row], str],
    readonly: bool,
    judged: Mapping[str, list[JudgeAttempt]] | None = None,
    plan_path: Path | None = None,
) -> list[RowReport]:
    """One report per row, from the session's tallies (by filename), generation results and
    judge calls (both by row key)."""
    out = []
    for row in rows:
        tally = tallies.get(row.filename)
        verdict = tally.verdict if tally else Verdict.NOT_RUN
        after = "complete" if verdict == Verdict.COMPLETE and not readonly else row.status
        out.append(
            RowReport(
                plan=plan_rel,
                row=row,
                status_before=row.status,
                status_after=after,
                verdict=verdict,
                generation=results.get(key_of(row)),
                failures=list(tally.failures) if tally else [],
                judge=list((judged or {}).get(key_of(row), [])),
                plan_path=plan_path,
            )
        )
    return out


@dataclass
class Totals:
    rows: int = 0
    complete: int = 0
    failed: int = 0
    not_run: int = 0  # no item of the row ran (deselected, or the run stopped before it)
    skipped: int = 0  # every item of the row that ran was skipped (no output in validate-only)
    incomplete: int = 0  # some items ran and passed, others did not run or were skipped
    attempts: int = 0
    live: int = 0
    replayed: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    replay_saved: float = 0.0
    caching_saved: float = 0.0
    skipped_by_budget: int = 0
    judge_calls: int = 0
    judge_live: int = 0
    judge_replayed: int = 0
    batch_saved: float = 0.0  # Message Batches: the list price of the batch calls less what they cost
    reserved: float = 0.0  # Message Batches: the worst case reserved against --batch-max-cost

    def verdicts(self) -> str:
        """``N complete, N failed`` and the other verdicts that some rows have: every row
        counted once, so that the numbers add up to the rows (skipped and incomplete rows were
        left out: "7 rows, 3 complete, 1 failed")."""
        others = (("skipped", self.skipped), ("incomplete", self.incomplete), ("not run", self.not_run))
        return f"{self.complete} complete, {self.failed} failed" + "".join(f", {n} {w}" for w, n in others if n)

    @property
    def unanswered(self) -> int:
        """Calls that got no reply: an API error after the SDK's retries, a replay miss."""
        return self.attempts - self.live - self.replayed

    @property
    def judge_unanswered(self) -> int:
        return self.judge_calls - self.judge_live - self.judge_replayed


def totals(reports: Iterable[RowReport], prices: PlanPrices) -> Totals:
    t = Totals()
    for r in reports:
        t.rows += 1
        t.complete += r.verdict == Verdict.COMPLETE  # by this run's verdict, as "failed" is
        t.failed += r.verdict == Verdict.FAILED
        t.not_run += r.verdict == Verdict.NOT_RUN
        t.skipped += r.verdict == Verdict.SKIPPED
        t.incomplete += r.verdict == Verdict.INCOMPLETE
        for a in r.attempts:
            t.attempts += 1
            if a.replayed:
                t.replayed += 1
            elif a.error is None or a.usage != Usage():
                t.live += 1
            price = prices.of(r.plan_path).price(a.model or r.row.model)
            if price and not a.replayed:
                # as billed: a batch call at half price, its writes at the 1-hour rate
                t.caching_saved += price.caching_saved(a.usage, a.batch, a.one_hour_writes)
                if a.batch:
                    t.batch_saved += price.cost(a.usage) - a.cost
        for j in r.judge:
            t.judge_calls += 1
            t.judge_replayed += j.replayed
            t.judge_live += not j.replayed and (j.error is None or j.usage != Usage())
        t.usage = t.usage + r.usage
        t.cost += r.cost
        t.replay_saved += r.replay_saved
        gen = r.generation
        if gen is not None and gen.budget_skipped:
            t.skipped_by_budget += 1
        if gen is not None:
            t.reserved += gen.reserved_usd
    return t


def _tokens(u: Usage) -> str:
    return f"{u.input_tokens}/{u.output_tokens}/{u.cache_creation_input_tokens}/{u.cache_read_input_tokens}"


def _unanswered(n: int) -> str:
    """The calls that got no reply, when there are: neither live nor replayed, and not paid."""
    return f", {n} without a reply" if n else ""


def plural(n: int, word: str) -> str:
    """``1 call``, ``2 calls``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _money(x: float) -> str:
    return f"${x:.4f}"


def summary_lines(reports: Sequence[RowReport], prices: PlanPrices, budget_note: str = "") -> list[str]:
    """The terminal summary: one line per row, then totals."""
    header = ("phase", "file", "model", "status", "att", "tokens in/out/cw/cr", "cost", "failed checks")
    table: list[tuple[str, ...]] = [header]
    several = len({r.plan for r in reports}) > 1  # two plans may hold the same filename
    for r in reports:
        gen = r.generation
        not_run = r.verdict == Verdict.NOT_RUN
        if not_run and gen is None and not r.judge:
            continue  # deselected (-k, a node id) or never reached (-x): counted in the totals
        attempts = str(len(r.attempts)) if gen is not None else "-"
        if (r.attempts or r.judge) and all(a.replayed for a in r.attempts) and all(j.replayed for j in r.judge):
            cost = "replayed"
        elif gen is not None and gen.outcome == Outcome.SKIPPED:
            cost = "skipped"
        else:
            cost = _money(r.cost) if gen is not None or r.judge else "-"
        failed = ", ".join(dict.fromkeys(f.check for f in r.failures)) or "-"
        table.append(
            (
                r.row.phase,
                f"{r.plan}::{r.row.filename}" if several else r.row.filename,
                r.row.model,
                f"{r.status_before} -> {r.status_after}" + (" (not run)" if not_run else ""),
                attempts,
                _tokens(r.usage) if gen is not None or r.judge else "-",
                cost,
                failed,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = (
        ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in table]
        if len(table) > 1
        else []
    )
    t = totals(reports, prices)
    lines.append(
        f"total: {plural(t.rows, 'row')}, {t.verdicts()}; {plural(t.attempts, 'call')} "
        f"({t.live} live, {t.replayed} replayed{_unanswered(t.unanswered)}); "
        + (
            f"{plural(t.judge_calls, 'judge call')} ({t.judge_live} live, {t.judge_replayed} replayed"
            f"{_unanswered(t.judge_unanswered)}); "
            if t.judge_calls
            else ""
        )
        + f"tokens {_tokens(t.usage)} (in/out/cache write/cache read); estimated cost {_money(t.cost)}"
    )
    saved = []
    if round(t.caching_saved, 4) > 0:
        saved.append(f"prompt caching saved {_money(t.caching_saved)}")
    elif round(t.caching_saved, 4) < 0:  # cache writes no later call read: 1.25 x input (a batch's: 2 x)
        saved.append(f"prompt caching cost {_money(-t.caching_saved)} more than plain input (cache writes not read)")
    if t.replay_saved:
        saved.append(f"replay saved {_money(t.replay_saved)}")
    if t.batch_saved:
        saved.append(f"Message Batches saved {_money(t.batch_saved)} against the messages path (half the list price)")
    if t.reserved:
        saved.append(f"reserved {_money(t.reserved)} (worst case) against --batch-max-cost, spent {_money(t.cost)}")
    if saved:
        lines.append("; ".join(saved))
    if t.attempts + t.judge_calls and t.replayed + t.judge_replayed == t.attempts + t.judge_calls:
        lines.append("every call was replayed from cassettes: nothing was sent, nothing was spent")
    if budget_note:
        lines.append(budget_note)
    return lines


def json_report(
    reports: Sequence[RowReport],
    prices: PlanPrices,
    *,
    meta: Mapping[str, Any],
    budget_note: str = "",
    judged: bool = False,
) -> dict[str, Any]:
    """The ``--batch-report`` document (schema ``pytest-batchgen-report``, version 1).

    With ``judged`` (a plan has judge rules) each row has ``judge_attempts`` and the totals the
    ``judge_*`` counts: keys added only then, so a report without judges is as before."""
    t = totals(reports, prices)
    plans: dict[str, list[dict[str, Any]]] = {}
    for r in reports:
        gen = r.generation
        plans.setdefault(r.plan, []).append(
            {
                "phase": r.row.phase,
                "filename": r.row.filename,
                "title": r.row.title,
                "model": r.row.model,
                "plan_line": r.row.line,
                "status_before": r.status_before,
                "status_after": r.status_after,
                "verdict": r.verdict,
                "generation": None
                if gen is None
                else {"outcome": gen.outcome, "error": gen.error, "hint": gen.hint, "wrote_output": gen.wrote},
                "attempts": [
                    {
                        "number": a.number,
                        "call": "replayed" if a.replayed else ("failed" if a.error and a.usage == Usage() else "live"),
                        "model": a.model,
                        "stop_reason": a.stop_reason,
                        "usage": a.usage.as_dict(),
                        "cost_usd": round(a.cost, 6),
                        "seconds": round(a.seconds, 3),
                        "error": a.error,
                        "failed_checks": list(a.failures),
                        # batch mode only (schema v1 documents stay as they were otherwise)
                        **({"batch": True} if a.batch else {}),
                    }
                    for a in r.attempts
                ],
                "repairs": max(len(r.attempts) - 1, 0),
                **({"judge_attempts": [j.to_dict() for j in r.judge]} if judged else {}),
                "usage": r.usage.as_dict(),
                "cost_usd": round(r.cost, 6),
                "failures": [
                    {
                        "check": f.check,
                        "message": f.message,
                        "plan_line": f.checklist_line,
                        "output": f.output,
                        "output_line": f.output_line,
                    }
                    for f in r.failures
                ],
            }
        )
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "prices_source": PRICES_SOURCE,
        "plans": [{"plan": plan, "rows": rows} for plan, rows in plans.items()],
        "totals": {
            "rows": t.rows,
            "complete": t.complete,
            "failed": t.failed,
            "skipped": t.skipped,
            "incomplete": t.incomplete,
            "not_run": t.not_run,
            "calls": t.attempts,
            "calls_live": t.live,
            "calls_replayed": t.replayed,
            "calls_without_reply": t.unanswered,
            "all_replayed": bool(t.attempts + t.judge_calls)
            and t.replayed + t.judge_replayed == t.attempts + t.judge_calls,
            "usage": t.usage.as_dict(),
            "cost_usd": round(t.cost, 6),
            "replay_saved_usd": round(t.replay_saved, 6),
            "caching_saved_usd": round(t.caching_saved, 6),
            "skipped_by_budget": t.skipped_by_budget,
            **(
                {
                    "judge_calls": t.judge_calls,
                    "judge_calls_live": t.judge_live,
                    "judge_calls_replayed": t.judge_replayed,
                    "judge_calls_without_reply": t.judge_unanswered,
                    "judge_cost_usd": round(sum(j.cost for r in reports for j in r.judge), 6),
                }
                if judged
                else {}
            ),
            # batch mode only: what Message Batches saved, and the budget's worst-case reservation
            **(
                {"batch_saved_usd": round(t.batch_saved, 6), "reserved_usd": round(t.reserved, 6)}
                if t.batch_saved or t.reserved
                else {}
            ),
            "budget_note": budget_note or None,
        },
    }


def write_json(
    path: Path, document: Mapping[str, Any], secrets: tuple[str, ...] = (), *, user_file: bool = False
) -> None:
    """Write the report, without the credentials ``secrets`` anywhere in it (a generation's
    failed checks and errors come from the dispatcher, not the tally). A file the user named
    (``user_file``: ``--batch-report``) is written through a symlink, FIFO or device
    (:func:`~pytest_batchgen.fsutil.write_through`); the plugin's own files are replaced."""
    text = redact(json.dumps(document, indent=2, sort_keys=False) + "\n", secrets)
    (write_through if user_file else atomic_write)(path, text)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


#: lines of a failure's detail (a linter's report) an annotation carries under its message
ANNOTATION_DETAIL = 10


def annotation_path(shown: str, rootdir: Path | None, workspace: Path | None) -> str:
    """A file as an annotation names it: relative to the repository's checkout (``workspace``,
    ``$GITHUB_WORKSPACE``) when the file lies in it, since GitHub attaches an annotation to the
    diff by that path; else as shown (relative to pytest's rootdir). In a monorepo whose rootdir
    is ``docs/``, ``output/quorum.md`` is ``docs/output/quorum.md``."""
    if workspace is None or rootdir is None:
        return shown
    path = rootdir / shown  # an absolute 'shown' (outside the rootdir) stays itself
    for base, full in ((workspace, path), (Path(os.path.realpath(workspace)), Path(os.path.realpath(path)))):
        try:
            return full.relative_to(base).as_posix()
        except ValueError:
            continue
    return shown


def github_workspace() -> Path | None:
    """``$GITHUB_WORKSPACE`` as an absolute folder, or None when it is unset or relative."""
    value = os.environ.get("GITHUB_WORKSPACE", "")
    return Path(value) if value and os.path.isabs(value) else None


def github_annotations(
    reports: Iterable[RowReport], rootdir: Path | None = None, workspace: Path | None = None
) -> list[str]:
    """One ``::error`` workflow command per failing check, at the output file and line (paths
    relative to ``workspace`` when given: see :func:`annotation_path`)."""
    lines = []
    for r in reports:
        for f in r.failures:
            props = []
            if f.output:
                props.append(f"file={_escape_property(annotation_path(f.output, rootdir, workspace))}")
                if f.output_line:
                    props.append(f"line={f.output_line}")
            else:
                props.append(f"file={_escape_property(annotation_path(r.plan, rootdir, workspace))}")
                props.append(f"line={r.row.line}")
            props.append(f"title={_escape_property(f'batchgen {r.row.filename}: {f.check}')}")
            # a linter's findings under its exit status: the annotation is what a reviewer reads
            text = f.message + ("\n" + "\n".join(f.detail.splitlines()[:ANNOTATION_DETAIL]) if f.detail else "")
            lines.append(f"::error {','.join(props)}::{_escape_data(text)}")
    return lines


class Counted(Protocol):
    """What the progress line reads of a dispatcher: this process's, or the sending process's
    as it last reported (:class:`pytest_batchgen.sender.RemoteDispatch`)."""

    @property
    def jobs(self) -> Sized: ...
    @property
    def done(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def replies(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def spent(self) -> float: ...
    @property
    def note(self) -> str: ...


class Progress:
    """The live line while generating: rows done / in flight / failed, replies, tokens, cost.

    On a terminal ``rewrite`` redraws it in place at every update (it draws only what changed,
    see :class:`~pytest_batchgen.terminal.LiveLine`) and the final count is a plain line;
    elsewhere (CI logs) a plain line is written when another tenth of the rows is done or
    ``plain_every`` seconds passed with a change, and always when generation ends. Replies are
    counted apart from rows: a row whose draft is being repaired is not done, but its first
    reply's tokens are already spent.
    """

    def __init__(self, write: Callable[[str], None], rewrite: Callable[[str], None] | None, plain_every: float = 15.0):
        self._write = write
        self._rewrite = rewrite
        self.plain_every = plain_every
        self._last = float("-inf")  # the first line at once (monotonic() may start near 0)
        self._last_text = ""  # the last text shown
        self._last_done = 0  # rows done when the last plain line was written
        self.finished = False

    @staticmethod
    def text(d: Counted) -> str:
        total = len(d.jobs)
        pacer = getattr(d, "pacer", None)  # what holds requests back (pacing.Pacer.status)
        status = pacer.status if pacer is not None and d.done < total else ""
        pacing = f" ({status})" if status else ""
        return (
            f"[batchgen] {d.done}/{total} rows done, {d.in_flight} in flight{pacing}, {d.failed} failed; "
            f"{d.replies} {'reply' if d.replies == 1 else 'replies'}, {d.tokens:,} tokens, ${d.spent:.4f} so far"
        ) + (f"; {d.note}" if d.note else "")  # batch mode: request_counts

    def update(self, dispatcher: Counted) -> None:
        """Called after every test: off a terminal the text is only made when a line is due."""
        if self.finished:
            return
        total = len(dispatcher.jobs)
        done = dispatcher.done == total
        if self._rewrite is not None:
            # every time: the line is not drawn again when nothing changed, but it may have
            # been taken down by pytest's output since; the final count is a plain line
            text = self.text(dispatcher)
            (self._write if done else self._rewrite)(text)
            self._last_text = text
        else:
            now = time.monotonic()
            step = max(1, -(-total // 10))  # a tenth of the rows, rounded up
            if done or now - self._last >= self.plain_every or dispatcher.done - self._last_done >= step:
                text = self.text(dispatcher)
                if text != self._last_text:
                    self._write(text)
                    self._last = now
                    self._last_text = text
                    self._last_done = dispatcher.done
        if done:
            self.finished = True
