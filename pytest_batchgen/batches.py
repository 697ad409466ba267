"""DISPATCH through Message Batches (``--batch-api batches``): half the price, resumable.

The rows that would be sent one request each are sent as Message Batches instead, one batch
per plan and round (split at the API's 100,000 requests / 256 MB). A round's results are
streamed as soon as its batches end; each one is filed in its row's cassette, then judged
exactly as the messages path judges a reply (refusal, truncation, the checklist on the
draft, written atomically). Rows that fail their checks with attempts left go into the next
round's batch with the repair turn; ``errored``, ``expired`` and ``canceled`` results are sent
again in the next round, bounded by the same attempts, then fail the row with the API's error.

Nothing is lost and nothing is paid twice (see :mod:`pytest_batchgen.journal`): a batch is in
the plan's journal before it is created; a request whose reply is in its row's cassette is
replayed, never sent; a request already in a journal batch waits for that batch. A batch
result is filed as the Messages API interaction the messages path would have had (the
row's exact ``POST /v1/messages`` body, the message as the reply), so a batch-made cassette
replays in either API mode. Only the batch's wire copy carries the 1-hour cache duration.

Same interface as :class:`pytest_batchgen.dispatch.Dispatcher` (start, result, join, cancel,
results and the progress counters), so items, xdist and reports do not know which one ran.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import datetime as _dt
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batchwire import BadBatch, BatchStatus, check_batch_id, parse_batch, parse_result, results_url
from .client import CUT_OFF, FINISHED, Usage, server_text
from .dispatch import (
    Attempt,
    BackgroundDispatch,
    Job,
    RowResult,
    _discard_draft,
    discard_partial,
    empty_ending,
    empty_reply,
    repair_turn,
    repairable_failures,
    reply_path,
    truncated,
    unwritable,
)
from .errors import BatchgenError
from .fsutil import atomic_write, sync_deferred
from .journal import (
    HEARTBEAT,
    BatchEntry,
    Journal,
    Owner,
    RequestEntry,
    custom_id,
    describe,
    journal_path,
    request_digest,
)
from .outcomes import Outcome
from .pricing import PlanPrices, PriceTable
from .prompts import (
    Prompt,
    build_prompt,
    normalise_output,
)
from .run import PlanRun
from .settings import redact_json

#: the API's limits for one batch
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
#: what we allow ourselves: a margin for the envelope of the create request
BYTES_BUDGET = MAX_BYTES - 1024 * 1024
#: how long the API keeps a batch's results after the batch was created (29 days + 24 h)
RETENTION = _dt.timedelta(days=29, hours=24)
#: polls that fail in a row (after the SDK's own retries) before the batch's rows give up
MAX_POLL_FAILURES = 5

MESSAGES_PATH = "/v1/messages"
#: the host of a batch-made interaction (requests match on method, path and body, not host)
RECORDED_HOST = "https://api.anthropic.com"
#: marks a batch-made interaction in a cassette (a response header)
BATCH_HEADER = "x-batchgen-message-batch"


def batch_params(params: dict[str, Any]) -> dict[str, Any]:
    """The wire copy of a row's request inside a batch: the shared prefix cached for 1 hour
    (Anthropic's advice for batches, which may run longer than the 5-minute default)."""
    wire = copy.deepcopy(params)
    for block in wire.get("system") or []:
        if isinstance(block, dict) and "cache_control" in block:
            block["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    return wire


def worst_case_cost(prices: PriceTable, model: str, params: dict[str, Any]) -> float:
    """The most one request can cost at the batch price, known before it is sent.

    Input: every byte of the request counted as a token (a token is at least one byte, so this
    bounds the count from above) at the 1-hour cache write rate (2 x input, the dearest input
    rate); output: ``max_tokens``. Pessimistic on purpose: no batch may exceed the cap."""
    price = prices.price(model)
    if price is None:
        return 0.0
    size = len(json.dumps(params, ensure_ascii=False).encode("utf-8"))
    input_rate = max(price.input * 2, price.cache_write, price.input)
    dollars = (size * input_rate + int(params.get("max_tokens", 0)) * price.output) / 1_000_000
    return dollars * 0.5


def _one_hour_tokens(message: dict[str, Any]) -> int:
    """The reply's 1-hour cache writes (``usage.cache_creation.ephemeral_1h_input_tokens``)."""
    split = (message.get("usage") or {}).get("cache_creation") or {}
    return int(split.get("ephemeral_1h_input_tokens") or 0) if isinstance(split, dict) else 0


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        int(data.get("input_tokens") or 0),
        int(data.get("output_tokens") or 0),
        int(data.get("cache_creation_input_tokens") or 0),
        int(data.get("cache_read_input_tokens") or 0),
    )


def _describe(result: dict[str, Any]) -> str:
    """An ``errored``, ``expired`` or ``canceled`` result as the row's error."""
    kind = result.get("type")
    if kind == "errored":
        outer = result.get("error")
        err = outer.get("error") if isinstance(outer, dict) else None
        err = err if isinstance(err, dict) else {}
        said = server_text(f"{err.get('type', 'error')}: {err.get('message', '')}".rstrip(": "))
        return f"Message Batches errored: {said}"
    if kind == "expired":
        return "Message Batches expired: the request was not processed before its batch expired (24 h)"
    if kind == "canceled":
        return "Message Batches canceled: the batch was canceled before this request was processed"
    return f"Message Batches: unknown result type {server_text(repr(kind), 80)}"


@dataclass
class RowState:
    """One row's progress through the rounds."""

    job: Job
    prompt: Prompt
    path: Path  # where drafts go
    output: Path
    result: RowResult
    history: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] | None = None  # the request of this round (messages path's parameters)
    digest: str = ""
    attempt: Attempt | None = None
    ended: bool = False
    afresh: bool = False
    sent_at: float = 0.0

    @property
    def key(self) -> str:
        return self.job.key

    def body(self) -> bytes:
        """The request as the messages path sends it; made when needed, never kept (it holds the
        shared prefix, which ``params`` shares by reference: 100,000 copies would not fit)."""
        return json.dumps(self.params, ensure_ascii=False).encode("utf-8")

    @property
    def filename(self) -> str:
        return self.job.row.filename


def split_batches(rows: Sequence[RowState]) -> list[list[tuple[RowState, dict[str, Any], int]]]:
    """The rows' wire requests cut into batches within the API's limits (count and bytes),
    in order: (row, wire parameters, serialised size)."""
    chunks: list[list[tuple[RowState, dict[str, Any], int]]] = [[]]
    size = 0
    for st in rows:
        wire = batch_params(st.params or {})
        n = len(json.dumps(wire, ensure_ascii=False).encode("utf-8")) + 100  # + its custom_id and envelope
        if chunks[-1] and (len(chunks[-1]) >= MAX_REQUESTS or size + n > BYTES_BUDGET):
            chunks.append([])
            size = 0
        chunks[-1].append((st, wire, n))
        size += n
    return [c for c in chunks if c]


class BatchDispatcher(BackgroundDispatch):
    """Generates ``jobs`` through Message Batches in a background thread.

    :meth:`cancel` stops waiting and sends nothing more; the batches out keep running (they
    are paid for) and stay in the journal, unless ``--batch-cancel`` asked to cancel them."""

    def __init__(
        self,
        jobs: Sequence[Job],
        client_factory: Callable[[], Any],
        recorder: Any,
        prices: PlanPrices,
        *,
        max_attempts: int = 2,
        max_tokens: int = 8192,
        max_cost: float | None = None,
        poll_start: float = 5.0,
        poll_max: float = 120.0,
        cancel_on_stop: bool = False,
        resume_command: str = "",
        workers: int = 8,
        secrets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(jobs, thread_name="batchgen-batches", secrets=secrets)
        self.workers = max(1, workers)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="batchgen-results")
        self._lock = threading.Lock()
        self._client_factory = client_factory
        self._client: Any = None
        self.recorder = recorder
        self.prices = prices
        self.max_attempts = max(1, max_attempts)
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.poll_start = poll_start
        self.poll_max = max(poll_max, poll_start)
        self.cancel_on_stop = cancel_on_stop
        self.resume_command = resume_command
        self._journals: dict[str, Journal] = {}
        self._states: dict[str, RowState] = {}
        self.reserved = 0.0  # worst case of the batches out, not yet collected
        self._reserved_for: set[str] = set()  # journal entries whose reservation is counted
        #: said at the end when batches were left running (Ctrl-C): how to collect them
        self.resume_note = ""
        #: said at the end when the journal held requests the plan no longer sends (dropped)
        self.journal_note = ""
        #: said at the end when rows were left to another live run of their plan
        self.elsewhere_note = ""
        #: (plan, filename) of the rows another live run of their plan generates (see _register)
        self._elsewhere: set[tuple[str, str]] = set()
        #: this run, as the journals name it: the batches it begins or adopts are its own
        self.owner = Owner.current()
        self._beating = threading.Event()
        self._swept = False
        self.batches_created: list[str] = []
        self.orphans = 0
        #: the lines of results streams that were not results (why, and of which batch)
        self.unreadable: list[str] = []

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # never leave a test waiting forever
            # a user's problem (an unreadable journal) as itself; anything else names its type
            error = (
                str(exc) if isinstance(exc, BatchgenError) else f"batch dispatcher stopped: {type(exc).__name__}: {exc}"
            )
            for key in self._row_results.pending():
                self._row_results.set(key, RowResult(key, Outcome.ERROR, error=error))
        finally:
            self._pool.shutdown(wait=True)
            if self._client is not None:
                with contextlib.suppress(Exception):  # best effort: the results are already filed
                    self._client.close()
            self._finished.set()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _journal(self, run: PlanRun) -> Journal:
        key = str(run.plan.path)
        journal = self._journals.get(key)
        if journal is None:
            journal = self._journals[key] = Journal.load(journal_path(run.plan.cassette_dir), self.owner)
        return journal

    def _run(self) -> None:
        self.recorder.load_all()
        for job in self.jobs:
            st = self._prepare(job)
            if st is not None:
                self._states[job.key] = st
        for job in self.jobs:
            self._journal(job.run)
        self._register()
        beat = threading.Thread(target=self._heartbeats, name="batchgen-journal-heartbeat", daemon=True)
        beat.start()
        try:
            self._reconcile()
            while True:
                pending = [st for st in self._states.values() if not st.ended]
                if not pending:
                    break
                if self._stop.is_set():
                    self._stop_rows(pending)
                    break
                self._round(pending)
            self._leave_batches()
        finally:
            self._beating.set()
            beat.join()
            for journal in self._journals.values():
                with contextlib.suppress(OSError):  # a journal that cannot be written: the pid tells
                    journal.release()

    # -- sharing the journal with other runs of the plan ----------------------------------------

    def _rows_of(self, key: str) -> list[str]:
        """The rows of plan ``key`` this run still generates."""
        return [st.filename for st in list(self._states.values()) if not st.ended and str(st.job.run.plan.path) == key]

    def _register(self) -> None:
        """Register this run in each plan's journal (adopting the batches of runs that are gone);
        a row another live run of the plan registered first is its own: this run skips it,
        sending nothing (it would pay for the row twice, and both runs would file it)."""
        notes = []
        for key, journal in self._journals.items():
            try:
                taken = journal.register(self._rows_of(key))
            except OSError:  # a journal that cannot be written: nothing of it can be sent either
                continue
            left = [st for st in self._states.values() if str(st.job.run.plan.path) == key and st.filename in taken]
            self._elsewhere.update((key, st.filename) for st in left)
            for st in left:
                by = describe(taken[st.filename])
                self._end(
                    st,
                    Outcome.SKIPPED,
                    f"not sent: another run of this plan is generating this row ({by}); "
                    "run again once it has finished to check the row",
                )
            if left:
                owners = "; ".join(sorted({describe(taken[st.filename]) for st in left}))
                plan = left[0].job.run.plan
                notes.append(
                    f"{len(left)} row(s) of {plan.rel(plan.path)} skipped: another run of the plan is generating them "
                    f"({owners}); this run sent none of them. Run again once it has finished"
                )
        self.elsewhere_note = "\n".join(notes)

    def _heartbeats(self) -> None:
        """Say in each journal, every HEARTBEAT seconds, that this run is alive (what a run on
        another machine sharing the journal goes by), and which rows it still generates."""
        while not self._beating.wait(HEARTBEAT):
            for key, journal in list(self._journals.items()):
                with contextlib.suppress(Exception):  # best effort: a missed beat is not an error
                    journal.heartbeat(self._rows_of(key))

    def _prepare(self, job: Job) -> RowState | None:
        run, row = job.run, job.row
        output = path = run.output_path(row)
        if output.exists():
            existing = run.draft_failures(row)
            if not existing and not job.rerecord:
                self._finish(job.key, RowResult(job.key, Outcome.KEPT))
                return None
            if not existing or row.complete:
                path = run.plan.draft_path(row)
                self.recorder.hold_previous(job.key)  # until a draft replaces the output (Dispatcher)
        prompt = build_prompt(run.plan, row, self.max_tokens, self._prefixes[str(run.plan.path)])
        return RowState(job, prompt, path, output, RowResult(job.key, Outcome.FAILED))

    def _finish(self, key: str, result: RowResult) -> None:
        with self._lock:
            self.done += 1
            if result.outcome.counts_as_failed:
                self.failed += 1
        self._row_results.set(key, result)

    def _end(self, st: RowState, outcome: Outcome, error: str | None = None) -> None:
        st.ended = True
        st.params = None  # its request holds the shared prefix: not kept for 100,000 rows
        self.recorder.release(st.key)
        st.result.outcome = outcome
        if error is not None:
            st.result.error = error
        self._finish(st.key, st.result)

    def _stop_rows(self, rows: Sequence[RowState]) -> None:
        for st in rows:
            if self._awaits(st) and st.attempt in st.result.attempts:
                st.result.attempts.remove(st.attempt)  # sent in no batch, or its batch still runs
            waiting = self._waiting_on(st)
            why = f"not collected: {self.stop_reason}" + (f"; its batch {waiting} keeps running" if waiting else "")
            st.result.budget_skipped = self.budget_stopped and not st.result.attempts and not waiting
            self._end(st, Outcome.FAILED if st.result.wrote else Outcome.SKIPPED, why)

    def _waiting_on(self, st: RowState) -> str | None:
        if not st.digest:
            return None
        found = self._journal(st.job.run).find(st.filename, st.digest)
        return found[0].id if found else None

    # -- one round ----------------------------------------------------------------------------

    @staticmethod
    def _build(st: RowState) -> None:
        """The row's next request: the first, or the repair (kept as is after an errored result)."""
        if st.params is None:
            st.params = st.prompt.params(st.history)
            st.digest = request_digest(st.params)

    def _request(self, st: RowState) -> None:
        """A new attempt for the row's current request."""
        self._build(st)
        st.attempt = Attempt(len(st.result.attempts) + 1, model=st.prompt.model, batch=True)
        st.result.attempts.append(st.attempt)

    #: how a batch's request is filed in its row's cassette: as the Messages request it stands for
    RECORDED_URL = RECORDED_HOST + MESSAGES_PATH
    RECORDED_HEADERS = {"content-type": "application/json"}

    def _round(self, pending: list[RowState]) -> None:
        to_send: dict[str, list[RowState]] = {}
        waits: dict[str, tuple[Journal, BatchEntry]] = {}
        if self._swept:  # the batches another run of the plan created since: this run waits for them too
            for journal in {id(j): j for j in (self._journal(st.job.run) for st in pending)}.values():
                journal.refresh()
        for st in pending:
            while not st.ended:  # replayed requests move the row on (a repair may be recorded too)
                self._build(st)
                if not self._replay_or_none(st):
                    break
            if st.ended:
                continue
            journal = self._journal(st.job.run)
            found = journal.find(st.filename, st.digest)
            self._request(st)
            if found is not None:  # already in a batch (an earlier run's): wait for it, send nothing
                entry = found[0]
                waits[entry.local] = (journal, entry)
                with self._lock:
                    self.in_flight += 1
                    if entry.local not in self._reserved_for:  # its reservation holds until collected
                        self._reserved_for.add(entry.local)
                        self.reserved += entry.reserved_usd
                continue
            if self.recorder.write_protected(st.key) or not self.recorder.may_record:
                message = self.recorder.miss_message(st.key, st.body())
                st.attempt.error = message  # type: ignore[union-attr]
                self._end(st, Outcome.ERROR, message)
                continue
            to_send.setdefault(str(st.job.run.plan.path), []).append(st)
        if not self._swept:  # once, when every row of this run has its first request
            self._swept = True
            self._drop_unsent(set(waits))
        for rows in to_send.values():
            for entry in self._submit(rows):
                waits[entry.local] = (self._journal(rows[0].job.run), entry)
        unread = len(self.unreadable)
        if waits:
            self._collect(list(waits.values()))
        unread_now = self.unreadable[unread:]
        # a row whose request got no result from its batch (never happens with the real API)
        for st in pending:
            if self._awaits(st) and st.attempt is not None:
                if self._stop.is_set():
                    return
                error = "its batch ended without a result for this request"
                if unread_now:
                    error += (
                        f"; {len(unread_now)} line(s) of the results were not results "
                        f"({unread_now[0]}{', ...' if len(unread_now) > 1 else ''})"
                    )
                st.attempt.error = error
                if len(st.result.attempts) >= self.max_attempts:
                    self._end(st, Outcome.ERROR, error)

    def _drop_unsent(self, waited: set[str]) -> None:
        """Drop from the journal the requests this plan no longer sends: those of a row that
        left the plan, and those of a row of this run whose request now differs (the plan was
        edited between the run that created the batch and this one) or that needs none (kept,
        replayed). Nothing would ever wait for them, so they stayed, and a later stop listed
        their batch as running. Requests of rows outside this run (``-k``, another phase) stay:
        a later run collects them."""
        in_run = {(str(j.run.plan.path), j.row.filename) for j in self.jobs}
        in_plan = {str(j.run.plan.path): {r.filename for r in j.run.plan.rows} for j in self.jobs}
        sent_now = {
            (str(st.job.run.plan.path), st.filename, st.digest)
            for st in self._states.values()
            if not st.ended and st.digest
        }
        dropped = []
        for plan, journal in self._journals.items():
            for entry in journal.own():  # another run's batches since are its own to sweep
                if entry.id is None or entry.local in waited:
                    continue
                stale = {
                    cid
                    for cid, req in entry.requests.items()
                    if req["row"] not in in_plan.get(plan, ())
                    or ((plan, req["row"]) in in_run and (plan, req["row"], req["digest"]) not in sent_now)
                }
                if stale:
                    rows = ", ".join(sorted({entry.requests[cid]["row"] for cid in stale}))
                    journal.collected(entry, stale)
                    dropped.append(f"{entry.id} ({rows})")
        if dropped:
            self.journal_note = (
                f"dropped from the batch journal the requests the plan no longer sends, in {'; '.join(dropped)}: "
                "their results are not collected (a batch of them still running can be canceled in the Console)"
            )

    def _replay_or_none(self, st: RowState) -> bool:
        """Replay the row's current request if recorded; True when it was (the row moved on)."""
        broken = self.recorder.corrupt_message(st.key)
        if broken:
            self._request(st)
            st.attempt.error = broken  # type: ignore[union-attr]
            self._end(st, Outcome.ERROR, broken)
            return True
        recorded = self.recorder.play(st.key, "POST", self.RECORDED_URL, st.body(), self.RECORDED_HEADERS)
        if recorded is None:
            return False
        self._request(st)
        try:
            self._judge(st, json.loads(recorded.response["body"]["string"]), replayed=True)
        except Exception as exc:  # noqa: BLE001  (a recorded reply the checks cannot take: this row only)
            if not st.ended:
                where = self.recorder.label(st.key)
                error = f"the reply recorded in {where} cannot be used ({type(exc).__name__}: {exc})"
                st.attempt.error = error  # type: ignore[union-attr]
                self._end(st, Outcome.ERROR, error)
        return True

    # -- submission ---------------------------------------------------------------------------

    def _within_budget(self, rows: list[RowState]) -> list[RowState]:
        """Reserve the worst case of each request; the rows that do not fit are not sent."""
        if self.max_cost is None:
            return rows
        kept = []
        for st in rows:
            worst = worst_case_cost(self._prices(st), st.prompt.model, batch_params(st.params or {}))
            if self.spent + self.reserved + worst <= self.max_cost + 1e-12:
                self.reserved += worst
                st.result.reserved_usd += worst
                kept.append(st)
                continue
            self.budget_stopped = True
            self.stop_reason = self.stop_reason or (
                f"a request's worst case at the batch price did not fit in --batch-max-cost ${self.max_cost:g}"
            )
            if st.attempt in st.result.attempts:
                st.result.attempts.remove(st.attempt)
            st.result.budget_skipped = not st.result.attempts
            self._end(
                st,
                Outcome.FAILED if st.result.wrote else Outcome.SKIPPED,
                f"not sent: its worst case (${worst:.4f} at the batch price) does not fit in --batch-max-cost "
                f"${self.max_cost:g} (spent ${self.spent:.4f}, reserved ${self.reserved:.4f})",
            )
        return kept

    def _submit(self, rows: list[RowState]) -> list[BatchEntry]:
        """Create the batches of one plan's rows, each in the journal before it is created."""
        import anthropic

        rows = self._within_budget(rows)
        journal = self._journal(rows[0].job.run) if rows else None
        entries = []
        for chunk in split_batches(rows):
            if self._stop.is_set():
                break
            assert journal is not None
            taken: set[str] = set()
            requests: dict[str, RequestEntry] = {}
            wire_requests = []
            reserved = 0.0
            for st, wire, _ in chunk:
                cid = custom_id(st.filename, taken)
                taken.add(cid)
                requests[cid] = RequestEntry(row=st.filename, digest=st.digest, attempt=st.attempt.number)  # type: ignore[union-attr]
                wire_requests.append({"custom_id": cid, "params": wire})
                if self.max_cost is not None:
                    reserved += worst_case_cost(self._prices(st), st.prompt.model, wire)
                st.sent_at = time.monotonic()
            entry = journal.begin(requests, reserved)  # on disk before the create is sent
            self._reserved_for.add(entry.local)
            try:
                batch = self.client.messages.batches.create(requests=wire_requests)
            except anthropic.APIStatusError as exc:  # refused (after the SDK's retries): nothing was made
                journal.forget(entry)
                self.reserved = max(0.0, self.reserved - reserved)
                error = f"creating the Message Batch failed: {type(exc).__name__}: {server_text(str(exc))}"
                for st, _, _ in chunk:
                    st.attempt.error = error  # type: ignore[union-attr]
                    self._end(st, Outcome.ERROR, error)
                continue
            try:
                batch_id = check_batch_id(getattr(batch, "id", None))
            except BadBatch as exc:  # made, perhaps: the next run looks for it (_reconcile)
                error = (
                    f"the answer to creating a Message Batch is not one: {exc}; it stays in {journal.path.name} "
                    f"without an id, and the next run looks for the batch before sending these rows again"
                )
                for st, _, _ in chunk:
                    st.attempt.error = error  # type: ignore[union-attr]
                    self._end(st, Outcome.ERROR, error)
                continue
            journal.created(entry, batch_id)
            self.batches_created.append(batch_id)
            self.in_flight += len(chunk)
            entries.append(entry)
        return entries

    # -- reattaching after a crash -----------------------------------------------------------

    def _reconcile(self) -> None:
        """Entries without a batch id: the run died around the create. Adopt the batch the API
        made of it (created since, with as many requests, in no other entry), else forget it."""
        for journal in self._journals.values():
            for entry in journal.own():  # adopted: a live run's entry without an id is being created
                if entry.id is not None:
                    continue
                found = self._find_created(entry, journal)
                if found is None:
                    journal.forget(entry)  # the create never reached the API
                else:
                    journal.created(entry, found)

    def _find_created(self, entry: BatchEntry, journal: Journal) -> str | None:
        known = set().union(*(j.ids() for j in self._journals.values()))
        since = entry.created_at - _dt.timedelta(minutes=5)
        for batch in self.client.messages.batches.list(limit=100):
            try:
                if batch.created_at < since:
                    break  # newest first
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            except (AttributeError, TypeError):  # not a batch (a server's junk): not this one
                continue
            try:
                batch_id = check_batch_id(getattr(batch, "id", None))
            except BadBatch:
                continue  # no id this run can poll
            if batch_id not in known and total == len(entry.requests):
                return batch_id
        return None

    # -- polling and results ------------------------------------------------------------------

    def _collect(self, waits: list[tuple[Journal, BatchEntry]]) -> None:
        import anthropic
        import httpx2

        live = list(waits)
        delay = self.poll_start
        failures: dict[tuple[str, str], int] = {}  # (entry, "poll" or "read") -> failures in a row
        counts: dict[str, Any] = {}

        def failed(journal: Journal, entry: BatchEntry, what: str, exc: Exception | str, kind: str = "poll") -> None:
            """One more failure of ``what`` for the batch; at the last one its rows fail (the
            batch stays in the journal for a rerun to collect). Polls and reads of the results
            are counted apart: a good poll before each broken read kept the count at one, and
            the batch was polled and read for ever."""
            key = (entry.local, kind)
            failures[key] = failures.get(key, 0) + 1
            if failures[key] >= MAX_POLL_FAILURES:
                self._fail_waiting(
                    journal,
                    entry,
                    f"{what} failed {MAX_POLL_FAILURES} times: {server_text(str(exc))}; "
                    f"it stays in the journal, rerun to collect it: {self.resume_command}",
                )
                live.remove((journal, entry))

        while live:
            for journal, entry in list(live):
                if self._stop.is_set():
                    return
                try:
                    batch = self._poll(entry)
                except anthropic.NotFoundError:
                    self._gone(journal, entry)
                    live.remove((journal, entry))
                    continue
                except anthropic.APIError as exc:
                    failed(journal, entry, f"polling batch {entry.id}", exc)
                    continue
                except BadBatch as exc:  # an answer that is not this batch: a failed poll, never trusted
                    failed(journal, entry, f"polling batch {entry.id}", f"the answer is not a Message Batch: {exc}")
                    continue
                failures.pop((entry.local, "poll"), None)
                counts[entry.local] = batch.counts
                self._show(counts, len(live))
                if batch.ended:
                    try:
                        self._results(journal, entry, batch)
                    except (anthropic.APIConnectionError, anthropic.APIStatusError, httpx2.RequestError) as exc:
                        # the stream broke (its bytes are read after the SDK returned it, so httpx's
                        # own errors, a dropped connection or a body its Content-Encoding cannot
                        # decode, come as they are): what was filed stays filed; the rest is read again
                        failed(journal, entry, f"reading the results of batch {entry.id}", exc, "read")
                        continue
                    live.remove((journal, entry))
            if live and self._stop.wait(delay):
                return
            delay = min(delay * 2, self.poll_max)

    def _poll(self, entry: BatchEntry) -> BatchStatus:
        """The batch as the API says it is now, read from the raw answer and checked (the SDK's
        object is built without validation): :class:`BadBatch` when it is not this batch."""
        batch_id = check_batch_id(entry.id)  # a journal's id, edited by hand perhaps: never a path
        raw = self.client.messages.batches.with_raw_response.retrieve(batch_id)
        batch = parse_batch(raw.http_response.content)
        if batch.id != batch_id:
            raise BadBatch(f"it is batch {batch.id}, not {batch_id}")
        return batch

    def _show(self, counts: dict[str, dict[str, int]], live: int) -> None:
        total = {"processing": 0, "succeeded": 0, "errored": 0, "expired": 0, "canceled": 0}
        for c in counts.values():
            for k in total:
                total[k] += c.get(k, 0)
        self.note = f"{live} batch(es): " + ", ".join(f"{v} {k}" for k, v in total.items() if v or k == "processing")

    @staticmethod
    def _awaits(st: RowState) -> bool:
        """The row's current attempt was sent (or attached to a batch) and has no result yet."""
        a = st.attempt
        return not st.ended and a is not None and a.stop_reason is None and a.error is None

    def _waiting(self, journal: Journal, entry: BatchEntry) -> dict[str, RowState]:
        """custom_id -> the row of this run whose current request it is."""
        by_row = {st.filename: st for st in self._states.values() if self._journal(st.job.run) is journal}
        out = {}
        for cid, req in entry.requests.items():
            st = by_row.get(req["row"])
            if st is not None and st.digest == req["digest"] and self._awaits(st):
                out[cid] = st
        return out

    def _results(self, journal: Journal, entry: BatchEntry, batch: BatchStatus) -> None:
        """Stream the batch's results; each is filed and judged before the next is read.

        Read from the raw stream, line by line: a line that is not a result (not JSON, not an
        object, no custom_id) is counted in :attr:`unreadable` and skipped, never the end of
        the others; its request has no result, so it is sent again (see :meth:`_round`)."""
        import anthropic
        import httpx2

        waiting = self._waiting(journal, entry)
        # Filing a result costs two writes (cassette, output) and its checks: a few workers do
        # them while the stream is read, at most 2 x workers results ahead. A crash loses none:
        # the batch leaves the journal only once every result is filed, else it is read again.
        ahead = threading.BoundedSemaphore(2 * self.workers)
        settling: list[concurrent.futures.Future[None]] = []
        filed: set[str] = set()
        unrecorded: set[str] = set()  # paid for, in no cassette: they stay in the journal

        def settle(st: RowState, result: dict[str, Any], cid: str) -> None:
            try:
                if not self._settle(st, result, entry, cid):
                    unrecorded.add(cid)
            finally:
                ahead.release()

        url = results_url(batch, str(self.client.base_url))  # on the API's host only
        try:
            response = self.client.get(
                url, cast_to=httpx2.Response, options={"headers": {"Accept": "application/binary"}}, stream=True
            )
            for line in _lines(response):
                if not line.strip():
                    continue  # a blank line holds no result
                parsed = parse_result(line)
                if isinstance(parsed, str):
                    with self._lock:
                        self.unreadable.append(f"batch {entry.id}: {parsed}")
                    continue
                cid, result = parsed
                st = waiting.pop(cid, None)
                if st is None:
                    self.orphans += 1  # a row outside this run, or already settled
                    continue
                with self._lock:
                    self.in_flight = max(0, self.in_flight - 1)
                ahead.acquire()
                filed.add(cid)
                settling.append(self._pool.submit(settle, st, result, cid))
        except anthropic.NotFoundError:
            concurrent.futures.wait(settling)
            self._gone(journal, entry)
            return
        finally:
            for fut in concurrent.futures.as_completed(settling):
                fut.result()  # a bug in filing or judging fails the rows (see _main)
        self.reserved = max(0.0, self.reserved - entry.reserved_usd)
        entry.reserved_usd = 0.0
        # this run's rows are done with the batch: filed now, replayed from their cassettes, kept
        # (their output passes), or asking something else since (a changed prompt); only the
        # results of rows outside this run stay
        ours = {  # kept ones too; not the rows another live run generates (its requests are its own)
            job.row.filename
            for job in self.jobs
            if self._journal(job.run) is journal and (str(job.run.plan.path), job.row.filename) not in self._elsewhere
        }
        sync_deferred()  # the filed outputs and recordings are on disk before the journal lets go
        done = filed | {cid for cid, req in entry.requests.items() if req["row"] in ours}
        journal.collected(entry, done - unrecorded)

    def _gone(self, journal: Journal, entry: BatchEntry) -> None:
        """The API no longer has the batch: deleted, or its results passed the retention."""
        age = _dt.datetime.now(_dt.timezone.utc) - entry.created_at
        why = "its results were kept 29 days and are gone" if age >= RETENTION else "it was deleted"
        message = (
            f"Message Batch {entry.id} (created {entry.created[:19]}Z) is no longer on the API: {why}. "
            f"It is removed from {journal.path.name}; the next run sends this row again (and pays for it again)"
        )
        self._fail_waiting(journal, entry, message)
        journal.forget(entry)

    def _fail_waiting(self, journal: Journal, entry: BatchEntry, message: str) -> None:
        for st in self._waiting(journal, entry).values():
            if st.attempt is not None:
                st.attempt.error = message
            self._end(st, Outcome.ERROR, message)

    def _settle(self, st: RowState, result: dict[str, Any], entry: BatchEntry, cid: str) -> bool:
        """File and judge one result. False when it was paid for but is neither in a cassette
        nor kept in the row's output: it stays in the journal, for the next run to read again
        from the batch rather than pay for it again. Whatever goes wrong ends this row only."""
        attempt = st.attempt
        assert attempt is not None
        attempt.seconds = time.monotonic() - st.sent_at if st.sent_at else 0.0
        message = result.get("message") if result.get("type") == "succeeded" else None
        # a credential echoed back is <redacted> in the output as in the recording (see Recorder.redact_reply)
        message = redact_json(message, self.secrets)
        from .cassettes import body_problem

        problem = body_problem(message) if message is not None else None
        if message is not None and problem is None:
            try:
                self._file(st, message, entry, cid)  # on disk before the next result is read
            except OSError as exc:  # a read-only cassette folder, a full disk: the reply is still paid for
                return self._unrecorded(st, message, exc)  # kept in the output: a rerun goes on from it
            except Exception as exc:  # noqa: BLE001  (a bug, a library's surprise: this row only)
                self._unfiled(st, entry, exc, recorded=False)
                return False
            try:
                self._judge(st, message, replayed=False)
            except Exception as exc:  # noqa: BLE001  (a reply the checks cannot take: this row only)
                self._unfiled(st, entry, exc, recorded=True)
            return True
        error = _describe(result) if message is None else f"Message Batches: the result is not a message: {problem}"
        attempt.error = error
        if len(st.result.attempts) >= self.max_attempts:
            self._end(st, Outcome.ERROR, error)
        # else: the same request goes into the next round's batch
        return True

    def _unfiled(self, st: RowState, entry: BatchEntry, exc: Exception, *, recorded: bool) -> None:
        """A result that raised something other than an OSError while it was filed or judged
        (a reply that cannot be read, a bug): the row ends in error, the others go on (it used
        to stop the dispatcher, failing every pending row)."""
        if st.ended:
            return
        where = (
            f"it is recorded in {self.recorder.label(st.key)}"
            if recorded
            else f"it stays in the journal: the next run reads it again from the batch ({self.resume_command})"
        )
        error = f"the result of Message Batch {entry.id} could not be filed ({type(exc).__name__}: {exc}); {where}"
        if st.attempt is not None:
            st.attempt.error = error
        self._end(st, Outcome.ERROR, error)

    def _file(self, st: RowState, message: dict[str, Any], entry: BatchEntry, cid: str) -> None:
        response = {
            "status": {"code": 200, "message": "OK"},
            "headers": {
                "content-type": ["application/json"],
                BATCH_HEADER: [f"{entry.id} {cid}"],
            },
            "body": {"string": json.dumps(message, ensure_ascii=False).encode("utf-8")},
        }
        self.recorder.record(st.key, "POST", self.RECORDED_URL, st.body(), self.RECORDED_HEADERS, response)

    def _unrecorded(self, st: RowState, message: dict[str, Any], error: OSError) -> bool:
        """A result whose recording could not be written: it is paid for, so it is counted (and
        toward --batch-max-cost); no later run could replay it, so its text is kept in the row's
        output, where a rerun keeps it if it passes (a reply that did not finish: in the drafts
        folder, :func:`~pytest_batchgen.dispatch.reply_path`); the row ends in error naming the cassette.
        The other rows of the batch go on (the messages path does the same: Dispatcher).

        True when this result's text was kept. (``st.result.wrote`` may be an earlier attempt's
        draft: a refusal or an empty repair, or a failed write, kept nothing, and such a result
        left the journal all the same, to be paid for again.)"""
        run, attempt = st.job.run, st.attempt
        assert attempt is not None
        text = self._count(st, message, replayed=False)
        kept = False
        path = reply_path(run, st.job.row, attempt.stop_reason, st.path)  # an unfinished one: aside
        if attempt.stop_reason != "refusal" and text.strip():
            with contextlib.suppress(OSError):
                atomic_write(path, text, sync=False)
                run.docs.forget(path)
                st.result.wrote = kept = True
        where = f"; its text is kept in {run.plan.rel(path)}" if kept else ""
        attempt.error = unwritable(run, error, "recorded in") + where
        self._end(st, Outcome.ERROR, attempt.error)
        return kept

    def _count(self, st: RowState, message: dict[str, Any], *, replayed: bool) -> str:
        """Count the reply in the row's attempt and the run's totals (before anything that may
        fail: it is paid for); its text."""
        attempt = st.attempt
        assert attempt is not None
        usage = _usage(message.get("usage") or {})
        attempt.usage = usage
        attempt.stop_reason = message.get("stop_reason")
        attempt.replayed = replayed
        prices = self._prices(st)
        attempt.one_hour_writes = _one_hour_tokens(message)
        attempt.would_cost = prices.cost(st.prompt.model, usage, batch=True) + self._one_hour_writes(st, attempt)
        attempt.cost = 0.0 if replayed else attempt.would_cost
        with self._lock:
            self.spent += attempt.cost
            self.replies += 1
            self.tokens += (
                usage.input_tokens
                + usage.output_tokens
                + usage.cache_creation_input_tokens
                + usage.cache_read_input_tokens
            )
        return normalise_output(
            "".join(
                b.get("text", "") or ""
                for b in message.get("content") or []
                if isinstance(b, dict) and b.get("type") == "text"
            )
        )

    def _judge(self, st: RowState, message: dict[str, Any], *, replayed: bool) -> None:
        """The messages path's verdict on a reply: refusal, draft written, truncation, checks,
        and the repair turn when checks fail with attempts left. A draft or output that cannot
        be written ends this row in error naming the file, its attempts kept; the other rows go
        on (it used to stop the whole dispatcher, dropping every pending row's paid attempts)."""
        attempt = st.attempt
        assert attempt is not None
        text = self._count(st, message, replayed=replayed)
        if attempt.stop_reason == "refusal":
            attempt.error = "the model refused to write this output"
            self._end_or_afresh(st, Outcome.REFUSED, attempt.error)
            return
        if not text.strip() and attempt.stop_reason not in CUT_OFF:
            # never written nor pasted into a repair turn (Dispatcher): the same request goes
            # into the next round's batch while attempts remain
            attempt.error = empty_reply(attempt.stop_reason)
            if len(st.result.attempts) >= self.max_attempts:
                ending = empty_ending(st.job.run, st.path, st.result, attempt.stop_reason)
                self._end_or_afresh(st, Outcome.ERROR, ending)
            return
        try:
            self._check(st, text)
        except OSError as exc:
            if not st.ended:
                attempt.error = unwritable(st.job.run, exc)
                self._end(st, Outcome.ERROR, attempt.error)

    def _check(self, st: RowState, text: str) -> None:
        """Write the draft, then end the row, or set its repair for the next round."""
        run, row = st.job.run, st.job.row
        attempt = st.attempt
        assert attempt is not None
        empty = not text.strip()  # (only when cut off: an empty reply is not checked, see _judge)
        if not empty:
            # an unfinished reply's text waits aside, never at the output (dispatch.reply_path)
            path = reply_path(run, row, attempt.stop_reason, st.path)
            atomic_write(path, text, sync=False)  # fsynced at the end of the run (fsutil.sync_deferred)
            run.docs.forget(path)
            st.result.wrote = True
            if path == st.output:
                discard_partial(run, row)
        if attempt.stop_reason not in FINISHED:  # cut off, or it may be unfinished: not checked
            draft = None if empty else run.plan.rel(run.plan.draft_path(row))
            error = truncated(st.prompt.max_tokens, draft, attempt.stop_reason)
            attempt.error = error
            self._end(st, Outcome.TRUNCATED, error)
            return
        failures = run.draft_failures(row, st.path)
        attempt.failures = [f"{rule.name}: {f.message}" for rule, f in failures]
        if not failures:
            if st.path != st.output:
                atomic_write(st.output, text, sync=False)
                _discard_draft(st.path)
                run.docs.forget(st.output)
                self.recorder.supersede(st.key)
            self._end(st, Outcome.PASSED)
            return
        repairable = repairable_failures(failures)
        if repairable and len(st.result.attempts) < self.max_attempts:
            st.history += [
                {"role": "assistant", "content": text.rstrip("\n")},
                repair_turn(repairable, self.secrets),
            ]
            st.params = None  # the repair request, in the next round
            return
        self._end_or_afresh(st, Outcome.FAILED, None)

    def _one_hour_writes(self, st: RowState, attempt: Attempt) -> float:
        """What the price table misses: its cache write rate is the 5-minute one (1.25 x input),
        and a 1-hour cache write costs 2 x input. Added at the batch price."""
        price = self._prices(st).price(st.prompt.model)
        tokens = attempt.one_hour_writes
        if price is None or not tokens:
            return 0.0
        return tokens * (price.one_hour_write - price.cache_write) / 1_000_000 * 0.5

    def _prices(self, st: RowState) -> PriceTable:
        """The price table of the row's plan (a plan's ## Prices are its own)."""
        return self.prices.of(st.job.run.plan.path)

    def _end_or_afresh(self, st: RowState, outcome: Outcome, error: str | None) -> None:
        """A row whose replayed attempts ended in failure is generated again, live, where the
        run may record (as the messages path does); otherwise it ends."""
        attempts = st.result.attempts
        if not st.afresh and attempts and all(a.replayed for a in attempts) and not self._stop.is_set():
            if self.recorder.start_afresh(st.key):
                st.afresh = True
                if st.path != st.output:
                    self.recorder.hold_previous(st.key)
                st.history, st.params, st.attempt = [], None, None
                st.result = RowResult(st.key, Outcome.FAILED)
                return
            hint = (
                f"replayed from {self.recorder.label(st.key)}; "
                f"to generate it again: {self.recorder.retry_command(st.key)}"
            )
            error = "; ".join(filter(None, [error, hint]))
        self._end(st, outcome, error)

    # -- leaving ------------------------------------------------------------------------------

    def _leave_batches(self) -> None:
        """After a stop: cancel the batches out when asked (``--batch-cancel``), else say how to
        collect them."""
        left = [(j, e) for j in self._journals.values() for e in j.own() if e.id]  # not another run's
        if not left or not self._stop.is_set():
            return
        if self.cancel_on_stop:
            import anthropic

            failed = []
            for _, entry in left:
                try:
                    self.client.messages.batches.cancel(entry.id)
                except anthropic.APIError as exc:
                    failed.append(f"{entry.id} ({type(exc).__name__}: {server_text(str(exc))})")
            self.resume_note = (
                f"canceled {len(left) - len(failed)} Message Batch(es) (--batch-cancel); "
                f"what they finished is collected by the next run: {self.resume_command}"
            ) + (f"; could not cancel {', '.join(failed)}" if failed else "")
            return
        ids = ", ".join(e.id for _, e in left if e.id)
        self.resume_note = (
            f"{len(left)} Message Batch(es) still running ({ids}); they are in the journal. "
            f"To collect them: {self.resume_command}"
        )


def make_batch_dispatcher(
    settings: Any, prices: PlanPrices, jobs: Sequence[Job], recorder: Any, resume_command: str
) -> BatchDispatcher:
    """The batch dispatcher of ``--batch-api batches`` with the run's SDK client (sync: the
    thread polls and streams, nothing runs concurrently)."""

    def client() -> Any:
        import anthropic

        from .pacing import cap_retry_after

        def capped(response: Any) -> None:
            # a retry-after of days (999999 s) held the poll, and the run, that long in the SDK's
            # sleep before its retry: held to the pacer's cap, as on the messages path
            cap_retry_after(response.headers)

        http = anthropic.DefaultHttpxClient(event_hooks={"response": [capped]})
        return anthropic.Anthropic(
            api_key=settings.api_key, max_retries=settings.max_retries, timeout=settings.timeout, http_client=http
        )

    return BatchDispatcher(
        jobs,
        client,
        recorder,
        prices,
        max_attempts=settings.max_attempts,
        max_tokens=settings.max_tokens,
        max_cost=settings.max_cost,
        poll_start=settings.batch_poll_start,
        poll_max=settings.batch_poll_max,
        cancel_on_stop=settings.batch_cancel,
        resume_command=resume_command,
        workers=settings.concurrency,  # results filed and checked at once (--batch-concurrency)
        secrets=settings.secrets,  # scrubbed from repair turns: no request carries the key
    )


def dry_run_lines(rows: Sequence[tuple[PlanRun, Any]], prices: PlanPrices, max_tokens: int) -> list[str]:
    """What ``--batch-dry-run --batch-api batches`` shows: the batches that would be created
    and their price at the batch rate, estimated (about 4 characters a token; an output as long
    as the format reference) and at worst (what ``--batch-max-cost`` would reserve)."""
    by_plan: dict[str, list[RowState]] = {}
    estimate = worst = 0.0
    for run, row in rows:
        prompt = build_prompt(run.plan, row, max_tokens)
        params = prompt.params()
        wire = batch_params(params)
        job = Job(run, row)
        st = RowState(
            job, prompt, run.output_path(row), run.output_path(row), RowResult(job.key, Outcome.SKIPPED), params=params
        )
        by_plan.setdefault(run.plan.rel(run.plan.path), []).append(st)
        first = len(by_plan[run.plan.rel(run.plan.path)]) == 1
        system = len(prompt.system) // 4
        user = len(prompt.user) // 4
        output = min(max_tokens, len(run.plan.format_reference_text) // 4)
        usage = Usage(user, output, system if first else 0, 0 if first else system)
        table = prices.of(run.plan.path)
        estimate += table.cost(prompt.model, usage, batch=True)
        worst += worst_case_cost(table, prompt.model, wire)
    lines = []
    for plan, states in by_plan.items():
        chunks = split_batches(states)
        sizes = ", ".join(str(len(c)) for c in chunks)
        lines.append(f"{plan}: {len(states)} request(s) in {len(chunks)} Message Batch(es) of {sizes}")
    lines.append(
        f"estimated price at the batch rate (half the list price): ${estimate:.4f}; "
        f"worst case (what --batch-max-cost reserves): ${worst:.4f}"
    )
    return lines


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed response, as bytes (a JSON line is UTF-8, checked when parsed);
    the last one even without its newline. The response is closed at the end."""
    buffer = b""
    try:
        for chunk in response.iter_bytes():
            buffer += chunk
            *whole, buffer = buffer.split(b"\n")
            yield from whole
        if buffer:
            yield buffer
    finally:
        response.close()
