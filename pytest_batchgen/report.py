"""Reporting: the run summary, the JSON report, CI annotations and the live progress line.

Everything here works on plain data (row tallies from the reports, generation results from
the dispatcher, the price table), so the same numbers reach the terminal, the JSON file and
the JUnit properties.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .client import Usage
from .fsutil import atomic_write
from .outcomes import Outcome, Verdict
from .plan import Row
from .pricing import PRICES_SOURCE, PriceTable
from .results import ItemFailure, RowTally

if TYPE_CHECKING:  # dispatch imports asyncio: not on the validate-only path
    from .dispatch import Attempt, Dispatcher, RowResult

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

    @property
    def attempts(self) -> list[Attempt]:
        return list(self.generation.attempts) if self.generation is not None else []

    @property
    def usage(self) -> Usage:
        return self.generation.usage if self.generation is not None else Usage()

    @property
    def cost(self) -> float:
        return sum(a.cost for a in self.attempts)

    @property
    def replay_saved(self) -> float:
        return sum(a.would_cost for a in self.attempts if a.replayed)


def build_rows(
    plan_rel: str,
    rows: Sequence[Row],
    tallies: Mapping[str, RowTally],
    results: Mapping[str, RowResult],
    key_of: Callable[[Row], str],
    readonly: bool,
) -> list[RowReport]:
    """One report per row, from the session's tallies (by filename) and generation results."""
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
            )
        )
    return out


@dataclass
class Totals:
    rows: int = 0
    complete: int = 0
    failed: int = 0
    attempts: int = 0
    live: int = 0
    replayed: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    replay_saved: float = 0.0
    caching_saved: float = 0.0
    skipped_by_budget: int = 0


def totals(reports: Iterable[RowReport], prices: PriceTable) -> Totals:
    t = Totals()
    for r in reports:
        t.rows += 1
        t.complete += r.verdict == Verdict.COMPLETE  # by this run's verdict, as "failed" is
        t.failed += r.verdict == Verdict.FAILED
        for a in r.attempts:
            t.attempts += 1
            if a.replayed:
                t.replayed += 1
            elif a.error is None or a.usage != Usage():
                t.live += 1
            price = prices.price(a.model or r.row.model)
            if price and not a.replayed:
                t.caching_saved += price.caching_saved(a.usage)
        t.usage = t.usage + r.usage
        t.cost += r.cost
        t.replay_saved += r.replay_saved
        gen = r.generation
        if gen is not None and gen.budget_skipped:
            t.skipped_by_budget += 1
    return t


def _tokens(u: Usage) -> str:
    return f"{u.input_tokens}/{u.output_tokens}/{u.cache_creation_input_tokens}/{u.cache_read_input_tokens}"


def _money(x: float) -> str:
    return f"${x:.4f}"


def summary_lines(reports: Sequence[RowReport], prices: PriceTable, budget_note: str = "") -> list[str]:
    """The terminal summary: one line per row, then totals."""
    header = ("phase", "file", "model", "status", "att", "tokens in/out/cw/cr", "cost", "failed checks")
    table: list[tuple[str, ...]] = [header]
    for r in reports:
        gen = r.generation
        attempts = str(len(r.attempts)) if gen is not None else "-"
        if gen is not None and r.attempts and all(a.replayed for a in r.attempts):
            cost = "replayed"
        elif gen is not None and gen.outcome == Outcome.SKIPPED:
            cost = "skipped"
        else:
            cost = _money(r.cost) if gen is not None else "-"
        failed = ", ".join(dict.fromkeys(f.check for f in r.failures)) or "-"
        table.append(
            (
                r.row.phase,
                r.row.filename,
                r.row.model,
                f"{r.status_before} -> {r.status_after}",
                attempts,
                _tokens(r.usage) if gen is not None else "-",
                cost,
                failed,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    t = totals(reports, prices)
    lines.append(
        f"total: {t.rows} rows, {t.complete} complete, {t.failed} failed; {t.attempts} calls "
        f"({t.live} live, {t.replayed} replayed); tokens {_tokens(t.usage)} (in/out/cache write/cache read); "
        f"estimated cost {_money(t.cost)}"
    )
    saved = []
    if t.caching_saved:
        saved.append(f"prompt caching saved {_money(t.caching_saved)}")
    if t.replay_saved:
        saved.append(f"replay saved {_money(t.replay_saved)}")
    if saved:
        lines.append("; ".join(saved))
    if t.attempts and t.replayed == t.attempts:
        lines.append("every call was replayed from cassettes: nothing was sent, nothing was spent")
    if budget_note:
        lines.append(budget_note)
    return lines


def json_report(
    reports: Sequence[RowReport], prices: PriceTable, *, meta: Mapping[str, Any], budget_note: str = ""
) -> dict[str, Any]:
    """The ``--batch-report`` document (schema ``pytest-batchgen-report``, version 1)."""
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
                else {"outcome": gen.outcome, "error": gen.error, "wrote_output": gen.wrote},
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
                    }
                    for a in r.attempts
                ],
                "repairs": max(len(r.attempts) - 1, 0),
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
            "calls": t.attempts,
            "calls_live": t.live,
            "calls_replayed": t.replayed,
            "all_replayed": bool(t.attempts) and t.replayed == t.attempts,
            "usage": t.usage.as_dict(),
            "cost_usd": round(t.cost, 6),
            "replay_saved_usd": round(t.replay_saved, 6),
            "caching_saved_usd": round(t.caching_saved, 6),
            "skipped_by_budget": t.skipped_by_budget,
            "budget_note": budget_note or None,
        },
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(reports: Iterable[RowReport]) -> list[str]:
    """One ``::error`` workflow command per failing check, at the output file and line."""
    lines = []
    for r in reports:
        for f in r.failures:
            props = []
            if f.output:
                props.append(f"file={_escape_property(f.output)}")
                if f.output_line:
                    props.append(f"line={f.output_line}")
            else:
                props.append(f"file={_escape_property(r.plan)}")
                props.append(f"line={r.row.line}")
            props.append(f"title={_escape_property(f'batchgen {r.row.filename}: {f.check}')}")
            lines.append(f"::error {','.join(props)}::{_escape_data(f.message)}")
    return lines


class Progress:
    """The live line while generating: rows done / in flight / failed, tokens, cost so far.

    On a terminal it is redrawn in place; elsewhere (CI logs) a plain line is written at most
    every ``plain_every`` seconds, and when generation ends.
    """

    def __init__(self, write: Callable[[str], None], rewrite: Callable[[str], None] | None, plain_every: float = 15.0):
        self._write = write
        self._rewrite = rewrite
        self.plain_every = plain_every
        self._last = float("-inf")  # the first line at once (monotonic() may start near 0)
        self._last_text = ""  # the last text shown
        self.finished = False

    @staticmethod
    def text(d: Dispatcher) -> str:
        total = len(d.jobs)
        pacer = getattr(d, "pacer", None)  # what holds requests back (pacing.Pacer.status)
        status = pacer.status if pacer is not None and d.done < total else ""
        pacing = f" ({status})" if status else ""
        return (
            f"[batchgen] {d.done}/{total} rows done, {d.in_flight} in flight{pacing}, {d.failed} failed; "
            f"{d.tokens:,} tokens, ${d.spent:.4f} so far"
        )

    def update(self, dispatcher: Dispatcher) -> None:
        if self.finished:
            return
        text = self.text(dispatcher)
        done = dispatcher.done == len(dispatcher.jobs)
        now = time.monotonic()
        if self._rewrite is not None:
            if text != self._last_text:
                self._rewrite(text)
                self._last_text = text
        elif done or now - self._last >= self.plain_every:
            if text != self._last_text:
                self._write(text)
                self._last = now
                self._last_text = text
        if done:
            self.finished = True
