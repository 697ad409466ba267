"""Judge rules: checklist lines that a model grades, recorded like every other model call.

``Judge: CRITERION`` or ``Judge (ALIAS): CRITERION`` compiles to a rule named
``judge-<slug of the criterion>``. Its check runs only once the row's mechanical rules pass
(there is no point grading a file with no front matter): until then it raises
:class:`~pytest_batchgen.checklist.CheckSkipped`. The judge answers through a forced tool call
(``record_verdict``: verdict, line, quote, reason); with ``--batch-judge-samples K`` it is
asked K times and the majority wins (a tie fails). There is no temperature to set: API version
2026-10-21, which the SDK 2.x sends, removed the sampling parameters (a request with
``temperature`` is a 400), so the verdict's stability comes from recording and from K samples.

Every judge call goes through the same :class:`~pytest_batchgen.recording.Recorder` as
generation, into a cassette beside the row's (``<filename>.judge.yaml``), matched on the exact
request, which contains the output's text: an unchanged output replays its verdict with no key
and no network, a changed one is judged afresh. A run that may not call the model
(``--batch-validate-only``, ``--batch-readonly``, an xdist worker, no key) replays or skips
(``--batch-judge-required``: fails). The SDK and vcrpy are imported on the first judge call
of a run that may record; a run that only replays verdicts (validate-only among them) reads
them with neither (:mod:`pytest_batchgen.cassettes`).

The judge has its own event loop in a background thread: its calls come from pytest's main
thread (a complete row's items) and from the dispatcher's executor threads (drafts), and both
wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checklist import (
    CheckContext,
    ChecklistForm,
    CheckSkipped,
    CompileContext,
    Failure,
)
from .client import Usage
from .plan import Plan, Row
from .rowid import RowId, plan_option

if TYPE_CHECKING:
    from .client import Completion
    from .pacing import Pacer
    from .pricing import PlanPrices
    from .settings import Settings

#: the tool the judge must call; its input is the verdict
VERDICT_TOOL: dict[str, Any] = {
    "name": "record_verdict",
    "description": "Record whether the file meets the criterion.",
    "input_schema": {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["pass", "fail"]},
            "line": {
                "type": "integer",
                "description": (
                    "the number of the output line the verdict rests on (0 when the fault is something missing)"
                ),
            },
            "quote": {"type": "string", "description": "that line's text, copied exactly"},
            "reason": {"type": "string", "description": "one or two sentences a writer can act on"},
        },
        "required": ["verdict", "line", "quote", "reason"],
    },
}

JUDGE_INSTRUCTIONS = """\
You grade one file of a generated batch against one criterion. Read the criterion and the \
file (its lines are numbered), decide whether the file meets the criterion, and answer only by \
calling the record_verdict tool: verdict "pass" or "fail"; line: the number of the output line \
your verdict rests on (for a fail, the line that shows the fault; 0 when the fault is something \
missing); quote: that line's text, copied exactly; reason: one or two sentences that a writer \
could act on to fix the file.

Judge only this criterion. The file's shape (front matter keys, headings, Markdown style) is \
checked elsewhere; do not fail the file for it."""

#: max_tokens of a judge request (a verdict is a few sentences)
JUDGE_MAX_TOKENS = 1024

#: the word in a criterion that sends the judge the plan's titles (cross-reference criteria)
_PLAN_WORD = re.compile(r"\bplan\b", re.IGNORECASE)

_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "be",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "this",
        "that",
        "to",
        "with",
    ]
)
_FULL_ID = re.compile(r"^claude-[A-Za-z0-9_.\-@:]+$")


def judge_slug(criterion: str, words: int = 5) -> str:
    """``judge-<the criterion's first words>``: stable, lower-case, ``-k`` friendly.

    ``"the Definition is accurate and not circular"`` -> ``judge-definition-accurate-not-circular``."""
    tokens = re.findall(r"[a-z0-9]+", criterion.lower())
    kept = [t for t in tokens if t not in _STOP_WORDS] or tokens
    return "judge-" + ("-".join(kept[:words]) or "criterion")


class JudgeForm(ChecklistForm):
    """The judge form: its rule name is a slug of the criterion, not a format string."""

    def rule_name(self, match: re.Match) -> str:
        return judge_slug(match.group("criterion"))


# -- the request ---------------------------------------------------------------------------


def numbered(text: str) -> str:
    """The output with its line numbers, as the judge sees it (``  12| text``)."""
    lines = text.splitlines()
    width = max(3, len(str(len(lines))))
    return "\n".join(f"{n:>{width}}| {line}" for n, line in enumerate(lines, 1))


def sends_titles(criterion: str) -> bool:
    """Whether the judge gets the plan's titles: only when the criterion mentions the plan, so
    that adding a row re-judges only the rules that cross-reference."""
    return bool(_PLAN_WORD.search(criterion))


def judge_message(plan: Plan, row: Row, criterion: str, text: str) -> str:
    """The judge's user turn: the criterion, the row's title, the content rules, the plan's
    titles when the criterion mentions the plan, and the output with line numbers.

    The output's path is always the row's (never a draft's), so a draft and the output it
    becomes make the same request."""
    parts = [f"<criterion>{criterion}</criterion>", f"<row_title>{row.title}</row_title>"]
    if plan.content_rules:
        rules = "\n".join(f"- {item.text}" for item in plan.content_rules)
        parts.append(f"<content_rules>\n{rules}\n</content_rules>")
    if sends_titles(criterion):
        titles = "\n".join(f"- {r.title} ({r.filename})" for r in plan.rows)
        parts.append(f"<plan_titles>\n{titles}\n</plan_titles>")
    path = plan.rel(plan.output_path(row))
    parts.append(f'<output path="{path}">\n{numbered(text)}\n</output>')
    return "\n\n".join(parts)


def judge_request(
    plan: Plan, row: Row, criterion: str, text: str, model: str, max_tokens: int = JUDGE_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages API parameters of one judge call (the same bytes for the same output)."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        # no "temperature": API version 2026-10-21 (sent by the anthropic SDK 2.x) removed the
        # sampling parameters and answers 400 to any of them; the SDK has no such argument
        "system": JUDGE_INSTRUCTIONS,
        "tools": [VERDICT_TOOL],
        "tool_choice": {"type": "tool", "name": VERDICT_TOOL["name"]},
        "messages": [{"role": "user", "content": judge_message(plan, row, criterion, text)}],
    }


# -- verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One answer of the judge; ``verdict`` is None when the reply could not be read."""

    verdict: str | None
    reason: str = ""
    line: int | None = None
    quote: str = ""


def parse_sample(data: Any) -> Sample:
    """The tool input of a judge reply as a :class:`Sample` (an unreadable one has no verdict)."""
    if not isinstance(data, Mapping):
        return Sample(None, f"the judge did not call {VERDICT_TOOL['name']}")
    verdict = str(data.get("verdict", "")).strip().lower()
    if verdict not in ("pass", "fail"):
        return Sample(None, f"the judge's verdict {data.get('verdict')!r} is neither pass nor fail")
    return Sample(
        verdict,
        str(data.get("reason") or "").strip(),
        _line_number(data.get("line")),
        str(data.get("quote") or "").strip(),
    )


def _line_number(value: Any) -> int | None:
    """The judge's ``line`` as a line number, or None: a whole number from 1 (``3.0`` is 3; a
    boolean, a string, ``2.5`` and a float that is not finite are none, which ``int`` turned
    into an exception out of the check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():  # NaN and the infinities too
        return None
    return int(value) if value >= 1 else None


def read_sample(completion: Completion) -> Sample:
    """A judge reply as a :class:`Sample`: an answer cut off at ``max_tokens`` or by the context
    window (its tool input may lack the reason, or hold half a verdict) or a refusal is no
    verdict, whatever it holds."""
    if completion.stop_reason == "max_tokens":
        return Sample(None, "the judge's answer was cut off at max_tokens")
    if completion.stop_reason == "model_context_window_exceeded":
        return Sample(None, "the judge's answer was cut off by the model's context window")
    if completion.stop_reason == "refusal":
        return Sample(None, "the judge refused to answer")
    return parse_sample(completion.tool_input)


@dataclass(frozen=True)
class JudgeVerdict:
    """The majority of K samples: ``verdict`` pass/fail (or ``error`` when none was readable)."""

    verdict: str
    reason: str
    line: int | None
    agree: int
    samples: int

    @property
    def agreement(self) -> str:
        return f"{self.agree}/{self.samples}"


def majority(samples: Sequence[Sample]) -> JudgeVerdict:
    """Pass only when more samples pass than fail (a tie fails); the reason and line are those
    of the first sample on the winning side."""
    passes = [s for s in samples if s.verdict == "pass"]
    fails = [s for s in samples if s.verdict == "fail"]
    if not passes and not fails:
        why = samples[0].reason if samples else "no answer"
        return JudgeVerdict("error", f"the judge gave no usable verdict ({why})", None, 0, len(samples))
    side, verdict = (passes, "pass") if len(passes) > len(fails) else (fails, "fail")
    return JudgeVerdict(verdict, side[0].reason, side[0].line, len(side), len(samples))


@dataclass
class JudgeAttempt:
    """One judge call of a row: kept apart from the row's generation attempts in the reports."""

    check: str
    sample: int
    model: str
    usage: Usage = field(default_factory=Usage)
    replayed: bool = False
    cost: float = 0.0
    would_cost: float = 0.0
    verdict: str | None = None
    reason: str = ""
    line: int | None = None
    error: str | None = None
    #: the majority of this call's K samples and how many agreed with it ("2/3"), once all answered
    majority: str | None = None
    agreement: str = ""
    #: the sha256 of the judge request (the verdict memo's key): an xdist worker's replay of a
    #: verdict the controller already asked (the drafts it judged) is no second call
    request: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage.as_dict()
        data["call"] = "replayed" if self.replayed else ("failed" if self.error and self.usage == Usage() else "live")
        data["cost_usd"] = round(data.pop("cost"), 6)
        data.pop("would_cost")
        data.pop("request")
        return data

    def to_wire(self) -> dict[str, Any]:
        """Plain data, whole (unrounded costs, the request's digest): what an xdist worker
        sends the controller in a report's payload."""
        data = asdict(self)
        data["usage"] = self.usage.as_dict()
        return data

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JudgeAttempt:
        return cls(**{**data, "usage": Usage(**data["usage"])})


# -- the service ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeSettings:
    """What the judge needs of the run's settings."""

    samples: int = 1
    required: bool = False
    record_mode: str = "none"
    api_key: str | None = None
    #: whether this process may send judge requests (not validate-only, dry run or an xdist worker)
    may_call: bool = False
    why_not: str = "this run makes no model call"
    max_cost: float | None = None
    default_model: str = ""
    max_retries: int = 2
    timeout: float = 600.0
    #: judge calls in flight at most (``--batch-concurrency``), and whether they are paced at
    #: the account's rate limits (not ``--batch-no-pacing``), from remembered budgets
    concurrency: int = 8
    pacing: bool = True
    remember_limits: bool = True
    credential: str | None = None
    #: what no judge cassette may hold (the key, ANTHROPIC_AUTH_TOKEN): see Settings.secrets
    secrets: tuple[str, ...] = ()
    #: the run's options that shape its requests, for the commands it prints (Settings.command_options)
    command_options: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> JudgeSettings:
        from .settings import Role

        if settings.readonly:
            why = "--batch-readonly makes no model call"
        elif settings.validate_only:
            why = "--batch-validate-only makes no model call"
        elif settings.dry_run:
            why = "--batch-dry-run makes no model call"
        elif settings.role is Role.WORKER:
            why = "xdist workers only replay judge verdicts (the controller judges the drafts it generates)"
        else:
            why = ""
        return cls(
            samples=settings.judge_samples,
            required=settings.judge_required,
            record_mode=settings.record_mode,
            api_key=settings.api_key,
            may_call=not why,
            why_not=why,
            max_cost=settings.max_cost,
            default_model=settings.judge_model,
            max_retries=settings.max_retries,
            timeout=settings.timeout,
            concurrency=settings.concurrency,
            pacing=settings.pacing,
            remember_limits=settings.remember_limits,
            credential=settings.credential,
            secrets=settings.secrets,
            command_options=settings.command_options(),
        )


def judge_cassette(plan: Plan, row: Row) -> Path:
    """Beside the row's generation cassette: ``<filename>.judge.yaml``. Apart, so that
    re-recording a row's generation never drops its verdicts, and the reverse."""
    return plan.cassette_path(row).with_name(f"{row.filename}.judge.yaml")


class JudgeService:
    """The session's judge: one client and recorder, started on the first judge call."""

    def __init__(self, settings: JudgeSettings | None = None, prices: PlanPrices | None = None) -> None:
        self.settings = settings or JudgeSettings()
        self.prices = prices
        self.attempts: dict[str, list[JudgeAttempt]] = {}  # by row key
        self.verdicts: dict[str, dict[str, JudgeVerdict]] = {}  # row key -> rule -> latest verdict
        self.spent = 0.0
        #: the generation's spend, for --batch-max-cost (set when a dispatcher starts)
        self.other_spent: Callable[[], float] = lambda: 0.0
        self._memo: dict[str, JudgeVerdict] = {}
        #: on an xdist worker: how many of each row's attempts went to the controller already
        self._sent: dict[str, int] = {}
        #: on the controller: the requests whose verdict a worker's attempts answered (as _memo)
        self._merged: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._recorder: Any = None
        #: the judge's gate when it may call the API: the rate limits, and ``concurrency`` in flight
        self.pacer: Pacer | None = None

    # -- the client, started lazily (the SDK and vcrpy are imported here, where it may record) --

    def _start(self) -> None:
        if self._client is not None:
            return
        from .cassettes import Recordings, ReplayClient
        from .client import ClientSettings, ModelClient

        s = self.settings
        mode = s.record_mode if s.may_call else "none"
        secrets = s.secrets
        live = None
        if mode == "none":  # verdicts replayed only: read without vcrpy (see cassettes.py)
            recorder = Recordings({}, mode, {}, secrets)
        else:
            from .recording import Recorder

            recorder = live = Recorder({}, mode, {}, secrets)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="batchgen-judge", daemon=True).start()
        settings = ClientSettings(
            max_retries=s.max_retries, timeout=s.timeout, api_key=s.api_key, concurrency=s.concurrency
        )

        async def make() -> Any:
            if live is not None:
                from .pacing import Pacer

                self.pacer = Pacer(s.concurrency, enabled=s.pacing)
                return ModelClient(settings, live, self.pacer)
            # verdicts replayed only: no SDK (a second of imports)
            has_key = bool((s.api_key and s.may_call) or os.environ.get("ANTHROPIC_AUTH_TOKEN"))
            return ReplayClient(recorder, has_key)

        self._client = asyncio.run_coroutine_threadsafe(make(), loop).result()
        if not s.may_call:
            recorder.live_refusal = s.why_not
        self._loop, self._recorder = loop, recorder

    def close(self) -> None:
        """Close the client and stop the loop (at the end of the session)."""
        if self._client is None or self._loop is None:
            return
        with contextlib.suppress(Exception):  # closing is best effort: every verdict is already on disk
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
        if self.pacer is not None:
            from .limitstore import remember_pacer

            remember_pacer(self.pacer)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._client = None

    def _register(self, plan: Plan, row: Row, rule: str) -> str:
        key = RowId(plan.path, row.filename).key + "#judge"
        r = self._recorder
        if key not in r.paths:
            path = judge_cassette(plan, row)
            r.paths[key] = path
            r.labels[key] = plan.rel(path)
            r.hints[key] = self.record_command(plan, row, rule)
            r.load(key)
        return key

    def record_command(self, plan: Plan, row: Row, rule: str) -> str:
        row_id = RowId(plan.path, row.filename)
        return f"pytest{self.settings.command_options} {plan_option(plan.path)} {row_id.command_node(rule)}"

    def _complete(self, key: str, params: dict[str, Any]) -> Completion:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._paced(key, params), self._loop).result()

    async def _paced(self, key: str, params: dict[str, Any]) -> Completion:
        """One judge call, through the pacer when this run may call the API: judge calls take
        the account's budgets like generation's, so a judged run does not meet 429s that the
        generation's pacing avoided (on the judge's loop, where the pacer lives)."""
        pacer = self.pacer
        if pacer is None:
            return await self._client.complete(key, params, _no_verdict)
        model = str(params.get("model") or "")
        s = self.settings
        if s.pacing and s.remember_limits and model not in pacer.accounts:
            from .limitstore import seed_pacer

            seed_pacer(pacer, model, s.credential)
        from .client import RecordingFailed

        async with pacer.slot(params) as slot:
            try:
                completion: Completion = await self._client.complete(key, params, _no_verdict)
            except RecordingFailed as exc:  # answered, so charged: the budgets hear of it too
                slot.settle(exc.completion.usage, False)
                raise
            slot.settle(completion.usage, completion.replayed)
            return completion

    def _replay(self, key: str, params: dict[str, Any]) -> Completion | None:
        """The recorded reply to this judge call (the client's replay fast path), or None when
        the call would go out live (or the client replays only in :meth:`_complete`). A recorded
        answer without a verdict is none where the run may record: it is dropped from the judge
        cassette and the judge is asked again (see ModelClient.replay)."""
        replay = getattr(self._client, "replay", None)
        return replay(key, params, _no_verdict) if replay is not None else None

    def _check_budget(self) -> None:
        """Skip a judge call that would go out live once the estimated spend (generation's
        included) reaches ``--batch-max-cost``; a client that never sends (replay only) spends
        nothing, so it is never held back."""
        s = self.settings
        if s.max_cost is None or not s.may_call or not getattr(self._client, "sends", True):
            return
        spent = self.spent + self.other_spent()
        if spent >= s.max_cost:
            raise CheckSkipped(
                f"not judged: the estimated spend (${spent:.4f}) reached --batch-max-cost ${s.max_cost:g}"
            )

    def _no_recording(self, plan: Plan, row: Row, rule: str, detail: str) -> Failure:
        """No verdict recorded for this output, and this run may not ask: skip (or fail)."""
        s = self.settings
        where = plan.rel(judge_cassette(plan, row))
        why = s.why_not or (
            "ANTHROPIC_API_KEY is not set" if not s.api_key else f"record mode {s.record_mode!r} adds no recording"
        )
        message = (
            f"not judged: no recorded verdict for the output as it is in {where} ({why}). "
            f"To record it: ANTHROPIC_API_KEY=sk-ant-... {self.record_command(plan, row, rule)}"
        )
        if s.required:
            return Failure(
                message.replace("not judged:", "judge verdict required:", 1), detail=detail or None, repairable=False
            )
        raise CheckSkipped(message)

    # -- judging --

    def check(self, plan: Plan, row: Row, rule: str, criterion: str, model: str, text: str) -> Failure | None:
        """Judge ``text`` (the row's output) against ``criterion``: None on a pass."""
        params = judge_request(plan, row, criterion, text, model)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        row_key = RowId(plan.path, row.filename).key
        with self._lock:
            verdict = self._memo.get(digest)
        if verdict is None:
            verdict_or_failure = self._ask(plan, row, rule, model, params, digest)
            if isinstance(verdict_or_failure, Failure):
                return verdict_or_failure
            verdict = verdict_or_failure
            if verdict.verdict != "error":  # no usable answer: the next check of it asks again
                with self._lock:
                    self._memo[digest] = verdict
        with self._lock:
            self.verdicts.setdefault(row_key, {})[rule] = verdict
        return verdict_failure(verdict, model, text)

    def _ask(
        self, plan: Plan, row: Row, rule: str, model: str, params: dict[str, Any], digest: str = ""
    ) -> JudgeVerdict | Failure:
        from .client import ModelCallError, RecordingFailed

        with self._lock:
            self._start()
            key = self._register(plan, row, rule)
        s = self.settings
        row_key = RowId(plan.path, row.filename).key
        samples: list[Sample] = []
        mine: list[JudgeAttempt] = []
        for number in range(1, s.samples + 1):
            attempt = JudgeAttempt(rule, number, model, request=digest)
            unrecorded: RecordingFailed | None = None
            try:
                # a recorded verdict is replayed whatever the spend: it costs nothing, and only a
                # call that would go out live is held to --batch-max-cost (as the dispatcher does)
                completion = self._replay(key, params)
                if completion is None:
                    self._check_budget()
                    completion = self._complete(key, params)
            except RecordingFailed as exc:  # answered and paid for: counted below, then the check fails
                completion, unrecorded = exc.completion, exc
            except ModelCallError as exc:
                if exc.replay_miss and key in self._recorder.corrupt:  # the judge cassette is unreadable
                    return Failure(f"the judge's recording cannot be used: {exc.message}", repairable=False)
                if exc.replay_miss:
                    return self._no_recording(plan, row, rule, exc.message)
                attempt.error = str(exc)
                with self._lock:
                    self.attempts.setdefault(row_key, []).append(attempt)
                return Failure(f"the judge's call failed: {exc}", repairable=False)
            sample = read_sample(completion)
            attempt.usage, attempt.replayed = completion.usage, completion.replayed
            attempt.verdict, attempt.reason, attempt.line = sample.verdict, sample.reason, sample.line
            # priced as the row's plan prices it (its ## Prices are its own)
            table = self.prices.of(plan.path) if self.prices is not None else None
            attempt.would_cost = table.cost(model, completion.usage) if table is not None else 0.0
            attempt.cost = 0.0 if completion.replayed else attempt.would_cost
            if unrecorded is not None:
                attempt.error = str(unrecorded)
            with self._lock:
                self.spent += attempt.cost
                self.attempts.setdefault(row_key, []).append(attempt)
            if unrecorded is not None:  # a verdict no later run could replay: not one to gate on
                where = plan.rel(judge_cassette(plan, row))
                return Failure(f"the judge's verdict could not be recorded in {where}: {unrecorded}", repairable=False)
            samples.append(sample)
            mine.append(attempt)
        verdict = majority(samples)
        for attempt in mine:
            attempt.majority, attempt.agreement = verdict.verdict, verdict.agreement
        return verdict

    # -- xdist: the workers' judge calls, counted by the controller --

    def unsent(self, row_key: str) -> list[dict[str, Any]]:
        """On an xdist worker: the row's attempts made since the last call (none twice), as
        plain data for a report's payload (:meth:`merge` on the controller)."""
        with self._lock:
            attempts = self.attempts.get(row_key, [])
            start = self._sent.get(row_key, 0)
            self._sent[row_key] = len(attempts)
            return [a.to_wire() for a in attempts[start:]]

    def merge(self, row_key: str, sent: Sequence[Mapping[str, Any]]) -> None:
        """On the controller: count a worker's judge attempts of the row as its own, but for
        those whose verdict the controller (or an earlier report) already had: a run without
        xdist reuses that verdict (:meth:`check`'s memo) and makes no call."""
        attempts = [JudgeAttempt.from_wire(data) for data in sent]
        with self._lock:
            known = self._memo.keys() | self._merged
            # (a worker only replays; were one to call live, its spend would be counted whatever)
            new = [a for a in attempts if not (a.replayed and a.request and a.request in known)]
            if new:
                self.attempts.setdefault(row_key, []).extend(new)
            self._merged |= {a.request for a in new if a.request and a.majority not in (None, "error")}


def _no_verdict(completion: Completion) -> bool:
    """Whether a judge reply holds no verdict: it is not recorded (a later run would replay it
    for ever, never asking the judge again), though what it cost is counted."""
    return read_sample(completion).verdict is None


def verdict_failure(verdict: JudgeVerdict, model: str, text: str) -> Failure | None:
    """A failing verdict as a check's :class:`Failure`: the judge's reason, at the output line it
    named, with that line's text (what the note, the report and the repair turn show)."""
    if verdict.verdict == "pass":
        return None
    agree = f", {verdict.agreement} samples agree" if verdict.samples > 1 else ""
    lines = text.splitlines()
    line = verdict.line if verdict.line is not None and 1 <= verdict.line <= len(lines) else None
    detail = f"output line {line}: {lines[line - 1].strip()}" if line is not None else None
    if verdict.verdict == "error":
        return Failure(f"judge ({model}): {verdict.reason}", repairable=False)
    return Failure(f"judge ({model}{agree}): {verdict.reason or 'the criterion is not met'}", line, detail)


# -- the checklist form --------------------------------------------------------------------


def resolve_judge_model(alias: str | None, plan: Plan, default: str, ctx: CompileContext) -> str:
    """The line's alias, else the plan's ``judge`` alias (``## Models`` or ``batchgen_models``),
    else ``batchgen_judge_model``; each is an alias of the plan or a full ``claude-...`` id."""
    models = plan.models

    def resolve(name: str, origin: str) -> str:
        value = name.strip().strip("`")
        for _ in range(3):  # judge -> sonnet -> claude-sonnet-...
            if value.lower() in models and models[value.lower()] != value:
                value = models[value.lower()]
            else:
                break
        if _FULL_ID.match(value):
            return value
        known = ", ".join(sorted(k for k in models if k != "judge"))
        raise ctx.error(
            f"unknown judge model {name.strip()!r} ({origin}); use one of the plan's aliases ({known}), "
            "a full model id such as claude-sonnet-5-5, or add it under '## Models'"
        )

    if alias and alias.strip():
        return resolve(alias, "in the line")
    if "judge" in models:
        return resolve("judge", "the plan's 'judge' model alias")
    if default:
        return resolve(default, "ini option batchgen_judge_model")
    raise ctx.error(
        "this judge line names no model and the plan has no judge default: write 'Judge (sonnet): ...', "
        "add '- judge: sonnet' under '## Models', or set batchgen_judge_model in the ini file"
    )


def _build_judge(m: re.Match, ctx: CompileContext):
    service: JudgeService = ctx.options.get("judge") or JudgeService()
    criterion = " ".join(m.group("criterion").split())
    if not criterion:
        raise ctx.error("the judge line has no criterion; write 'Judge: the Definition is not circular'")
    model = resolve_judge_model(m.group("alias"), ctx.plan, service.settings.default_model, ctx)
    name = judge_slug(criterion)

    def check(c: CheckContext) -> Failure | None:
        failing = c.mechanical_failures()
        if failing:
            names = ", ".join(rule.name for rule, _ in failing)
            raise CheckSkipped(f"not judged: the row's other checks fail first ({names})")
        if c.doc.error:
            return Failure(c.doc.error)
        try:
            text = c.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return Failure(f"cannot read the output for the judge: {exc}")
        return service.check(c.plan, c.row, name, criterion, model, text)

    check.judge = (criterion, model)  # type: ignore[attr-defined]  # read by the dry run
    return check


JUDGE_FORM = JudgeForm(
    name="judge",
    pattern=r"judge(?:\s*\((?P<alias>[^)]*)\))?\s*:\s*(?P<criterion>.*)",
    build=_build_judge,
    example="Judge: the Definition is accurate and not circular   (or 'Judge (sonnet): ...')",
    model_graded=True,
)


def has_judge_rules(rules: Sequence[Any]) -> bool:
    return any(getattr(r.form, "model_graded", False) for r in rules)


def dry_run_lines(plan: Plan, row: Row, rules: Sequence[Any]) -> list[str]:
    """Each judge prompt of ``row``, as ``--batch-dry-run`` shows it (the output as it is on
    disk, or a placeholder when it is not written yet)."""
    path = plan.output_path(row)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = "(the row's output, once generated, goes here with its line numbers)"
    lines: list[str] = []
    for rule in rules:
        info = getattr(rule.check, "judge", None)
        if info is None:
            continue
        criterion, model = info
        lines += [
            f"judge {rule.name} -> {model} (forced tool {VERDICT_TOOL['name']}):",
            "system:",
            JUDGE_INSTRUCTIONS,
            "",
            "user:",
            judge_message(plan, row, criterion, text),
            "",
        ]
    return lines


def report_rows(service: JudgeService | None) -> dict[str, list[JudgeAttempt]]:
    """The judge attempts by row key (empty without a judge)."""
    return dict(service.attempts) if service is not None else {}
