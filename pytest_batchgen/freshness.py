"""Freshness: whether each row's output was made from the prompt the plan would send now.

Every recorded row's cassette holds the exact request it was generated from, so the evidence
is on disk: the row's first recorded request is compared with the request built from the plan
today. A row is

- ``fresh``: an output, and its recording's first request equals the request of today (or a
  later generation's does, and the output is that generation's reply);
- ``stale``: an output, and the requests differ; the reasons name what changed (the format
  reference, the content rules, the title, the model, max_tokens, the plugin's prompt template,
  the output path). Also an output kept over a regeneration that failed (its drafts failed
  their checks, the model refused, the reply was cut off): today's request is recorded after
  the older generation, which stays in the cassette until a new draft replaces the output
  (``Recordings.hold_previous``), and the output is that older generation's reply; or it is
  none of the replies while the new draft waits in ``.batchgen-drafts/`` (see
  :func:`_latest_generation`);
- ``unrecorded``: an output with no (readable) recording: hand-written, or validated only;
- ``missing``: no output.

Reasons are attributed by refilling today's templates with the values read back from the
recorded request (:func:`~pytest_batchgen.prompts.render_system`,
:func:`~pytest_batchgen.prompts.render_user`): a differing value names its input, and a
recorded text that the refilled template does not reproduce names the template.

Only YAML and the prompt builder are used here: no SDK, no vcrpy, no network, so validate-only
runs can afford it. Cassettes are read with libyaml's ``CSafeLoader`` where it is available, and
judging a row parses only the YAML events up to its first request's body (about 0.2 ms a row);
the recorded usage (for the cost estimate and the baselines) is read in full, on demand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cassettes import KEY_PREFIX, CassetteLoader, CorruptCassette, read_cassette
from .client import FINISHED, Usage
from .plan import Plan, Row
from .pricing import PlanPrices, PriceTable
from .prompts import Prompt, build_prompt, normalise_output, render_system, render_user, shared_prefix
from .rowid import plan_option

FRESH, STALE, UNRECORDED, MISSING = "fresh", "stale", "unrecorded", "missing"
STATES = (FRESH, STALE, UNRECORDED, MISSING)

#: what a stale row's reasons may name, in this order
REASONS = (
    "format reference",
    "content rules",
    "title",
    "model",
    "max_tokens",
    "output path",
    "prompt template",
    "output",
)

#: the reason of an output that is none of the replies recorded for today's request
NOT_THE_REPLY = "output"

#: the estimate's rule of thumb: a token is about four characters of English prose or Markdown
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Recording:
    """What a cassette says about how its row was generated."""

    first: Mapping[str, Any]  # the first request's JSON body
    usage: Usage  # every recorded interaction's usage, summed (repairs included)
    calls: tuple[tuple[str, Usage], ...]  # (model, usage) of each interaction, for its price
    #: the requests that open a generation (one message: a repair carries the conversation), in
    #: order: record mode new_episodes appends a row's later generations after its first
    openers: tuple[Mapping[str, Any], ...] = ()
    #: each opener's drafts: the texts its replies (repairs included) wrote, as outputs are
    #: written (``prompts.normalise_output``); a refusal wrote none
    drafts: tuple[frozenset[str], ...] = ()
    #: each opener's partial drafts: the texts of its replies that did not finish (cut off at
    #: ``max_tokens``, say), which wait in the drafts folder and never replace an output
    #: (``dispatch.reply_path``)
    partials: tuple[frozenset[str], ...] = ()
    #: the index in ``calls`` of the latest generation's first call (its opener)
    latest_from: int = 0

    @property
    def latest_usage(self) -> Usage:
        """The usage of the latest generation, its repairs included: what generating the row
        again costs, where :attr:`usage` also counts the older generations an output kept over
        a failed regeneration leaves ahead of it."""
        total = Usage()
        for _, u in self.calls[self.latest_from :]:
            total = total + u
        return total

    @property
    def latest_prompt_chars(self) -> int:
        """The characters of the latest generation's prompt, which :attr:`latest_usage` is of."""
        system, user = _texts(self.openers[-1] if self.openers else self.first)
        return len(system) + len(user)


class UnreadableRecording(Exception):
    """A cassette that is not a vcrpy cassette of Messages requests (corrupt, conflicted, foreign)."""


def _raw(path: Path) -> bytes | None:
    """A recording's bytes; None when there is none (no file, or a blank one)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableRecording(f"cannot be read: {exc.strerror}") from None
    return raw if raw.strip() else None


def read_recording(path: Path) -> Recording | None:
    """The row's recording; None when there is none (no file, or a blank one).

    Read as a replay reads it (:func:`~pytest_batchgen.cassettes.read_cassette`, as strictly), so
    a recording that a replay could not use is never called fresh. Raises
    :class:`UnreadableRecording` for a file that is there but cannot be used."""
    try:
        interactions = read_cassette(path)
    except CorruptCassette as exc:
        raise UnreadableRecording(exc.why) from None
    except OSError as exc:
        raise UnreadableRecording(f"cannot be read: {exc.strerror}") from None
    if interactions is None:
        return None
    if not interactions:
        raise UnreadableRecording("holds no recorded request")
    try:
        first = json.loads(interactions[0].body or b"")
        calls: list[tuple[str, Usage]] = []
        openers = []
        drafts: list[set[str]] = []
        partials: list[set[str]] = []
        latest_from = 0
        for interaction in interactions:
            request = json.loads(interaction.body or b"")
            if isinstance(request, dict) and len(request.get("messages") or ()) == 1:
                openers.append(request)
                drafts.append(set())
                partials.append(set())
                latest_from = len(calls)
            reply = json.loads(interaction.response["body"]["string"])
            if drafts and reply.get("stop_reason") != "refusal":
                drafts[-1].add(_reply_text(reply))
                if reply.get("stop_reason") not in FINISHED:
                    partials[-1].add(_reply_text(reply))
            u = reply.get("usage") or {}
            calls.append(
                (
                    str(request.get("model", "")),
                    Usage(
                        int(u.get("input_tokens") or 0),
                        int(u.get("output_tokens") or 0),
                        int(u.get("cache_creation_input_tokens") or 0),
                        int(u.get("cache_read_input_tokens") or 0),
                    ),
                )
            )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableRecording(f"is not a readable recording ({type(exc).__name__})") from None
    if not isinstance(first, dict):
        raise UnreadableRecording("its first request is not a Messages request")
    total = Usage()
    for _, u in calls:
        total = total + u
    return Recording(
        first=first,
        usage=total,
        calls=tuple(calls),
        openers=tuple(openers),
        drafts=tuple(frozenset(d) for d in drafts),
        partials=tuple(frozenset(d) for d in partials),
        latest_from=latest_from,
    )


_REQUEST_BODY = ["interactions", 0, "request", "body"]
_REPLY_BODY = ["interactions", 0, "response", "body", "string"]


def _first_bodies(raw: bytes) -> tuple[str | None, str | None]:
    """The first request's body and its reply's body read from the YAML events, stopping at the
    reply (vcrpy writes ``request`` before ``response``; the later interactions are not
    parsed); None for what is not laid out as vcrpy writes it."""
    import base64

    loader = CassetteLoader(raw)
    stack: list[list[Any]] = []  # [kind, current key or index, expecting a key]
    request: str | None = None
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return request, None
            if isinstance(event, (yaml.StreamStartEvent, yaml.DocumentStartEvent)):
                continue
            if isinstance(event, yaml.MappingStartEvent):
                stack.append(["map", None, True])
            elif isinstance(event, yaml.SequenceStartEvent):
                stack.append(["seq", 0, False])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                _advance(stack)
                if len(stack) == 2 and stack[1][1] != 0:  # past the first interaction
                    return request, None
            elif isinstance(event, yaml.ScalarEvent):
                top = stack[-1] if stack else None
                if top is not None and top[0] == "map" and top[2]:
                    top[1], top[2] = event.value, False
                    continue
                where = [level[1] for level in stack]
                if where in (_REQUEST_BODY, _REPLY_BODY):
                    if event.tag and event.tag.endswith(":binary"):
                        value = base64.b64decode(event.value).decode("utf-8")
                    else:
                        value = str(event.value)
                    if where == _REPLY_BODY:
                        return request, value
                    request = value
                _advance(stack)
            else:  # aliases, documents after the first: not vcrpy's layout
                return request, None
    finally:
        loader.dispose()


def _advance(stack: list[list[Any]]) -> None:
    if stack:
        top = stack[-1]
        if top[0] == "map":
            top[2] = True
        else:
            top[1] += 1


def read_first_interaction(path: Path) -> tuple[dict[str, Any], str | None] | None:
    """The first recorded request's JSON body and the draft its reply wrote (as
    :attr:`Recording.drafts` has it; None for a refusal or a reply not read), fast: only the
    YAML up to that reply is parsed.

    None when there is no recording; :class:`UnreadableRecording` when the file cannot be used
    (anything unusual is read in full by :func:`read_recording`, which says why)."""
    raw = _raw(path)
    if raw is None:
        return None
    try:
        body, reply = _first_bodies(raw)
        first = json.loads(body) if body is not None else None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, IndexError, TypeError):
        first = reply = None
    if isinstance(first, dict):
        return first, _draft_of(reply)
    recording = read_recording(path)
    if recording is None:
        return None
    return dict(recording.first), None


def _draft_of(reply: str | None) -> str | None:
    """What a recorded reply's body wrote to disk, as :func:`read_recording` keeps it."""
    try:
        body = json.loads(reply) if reply is not None else None
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("stop_reason") == "refusal":
        return None
    return _reply_text(body)


def _reply_text(body: Mapping[str, Any]) -> str:
    content = body.get("content") or ()
    text = "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    return normalise_output(text).replace("\r\n", "\n")


# -- what changed -----------------------------------------------------------------------------

_SYSTEM_RE = re.compile(
    r'\A(?P<head>.*?)<format_reference path="(?P<path>[^"]*)">\n(?P<reference>.*)\n</format_reference>'
    r"(?P<mid>.*?)<content_rules>\n(?P<rules>.*)\n</content_rules>(?P<tail>.*)\Z",
    re.DOTALL,
)
_TITLE_RE = re.compile(r"<title>(.*?)</title>", re.DOTALL)
_PATH_RE = re.compile(r"<output_path>(.*?)</output_path>", re.DOTALL)


def _texts(params: Mapping[str, Any]) -> tuple[str, str]:
    """The system text and the first user message's text of a request."""
    system = params.get("system") or ""
    if not isinstance(system, str):
        system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
    messages = params.get("messages") or [{}]
    content = messages[0].get("content", "") if isinstance(messages[0], dict) else ""
    if not isinstance(content, str):
        content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return system, content


def _shape(params: Mapping[str, Any]) -> Any:
    """The request without its texts: block types, cache_control, roles, other keys."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("text", "content", "model", "max_tokens")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return None if isinstance(value, str) else value

    shape = strip(dict(params))
    shape["messages"] = [strip(m) for m in (params.get("messages") or [])[:1]]
    return shape


def changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between a recorded first request and today's: reasons of :data:`REASONS`,
    empty when the two requests are the same."""
    if recorded == now:
        return ()
    found: set[str] = set()
    if recorded.get("model") != now.get("model"):
        found.add("model")
    if recorded.get("max_tokens") != now.get("max_tokens"):
        found.add("max_tokens")
    old_system, old_user = _texts(recorded)
    new_system, new_user = _texts(now)
    old, new = _SYSTEM_RE.match(old_system), _SYSTEM_RE.match(new_system)
    if old is None or new is None:
        if old_system != new_system:
            found.add("prompt template")
    else:
        if old["path"] != new["path"] or old["reference"] != new["reference"]:
            found.add("format reference")
        if old["rules"] != new["rules"]:
            found.add("content rules")
        if render_system(old["path"], old["reference"], old["rules"]) != old_system or (
            (old["head"], old["mid"], old["tail"]) != (new["head"], new["mid"], new["tail"])
        ):
            found.add("prompt template")
    old_title, new_title = _TITLE_RE.search(old_user), _TITLE_RE.search(new_user)
    old_path, new_path = _PATH_RE.search(old_user), _PATH_RE.search(new_user)
    if old_title is None or old_path is None or new_title is None or new_path is None:
        if old_user != new_user:
            found.add("prompt template")
    else:
        if old_title.group(1) != new_title.group(1):
            found.add("title")
        if old_path.group(1) != new_path.group(1):
            found.add("output path")
        if render_user(old_title.group(1), old_path.group(1)) != old_user:
            found.add("prompt template")
    if not found and (_shape(recorded) != _shape(now) or recorded != now):
        found.add("prompt template")  # the same texts in another request shape
    return tuple(r for r in REASONS if r in found)


@dataclass(frozen=True)
class Freshness:
    """A row's freshness, and what its recording says (for the cost estimate)."""

    state: str
    reasons: tuple[str, ...] = ()
    #: ``matches`` / ``differs`` (the recording against today's request), ``none`` or ``unreadable``
    recording: str = "none"
    cassette: Path | None = None  # the recording's file, when there is a readable one
    note: str = ""  # why a recording could not be used

    @property
    def stale(self) -> bool:
        return self.state == STALE

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": list(self.reasons), "recording": self.recording}


def assess(plan: Plan, row: Row, prompt: Prompt) -> Freshness:
    """The row's freshness against ``prompt`` (the request the plan would send now)."""
    output = plan.output_path(row)
    has_output = output.exists()
    cassette = plan.cassette_path(row)
    try:
        found = read_first_interaction(cassette)
    except UnreadableRecording as exc:
        note = f"the recording {plan.rel(cassette)} {exc}"
        return Freshness(UNRECORDED if has_output else MISSING, recording="unreadable", note=note)
    if found is None:
        return Freshness(UNRECORDED if has_output else MISSING)
    first, first_draft = found
    params = prompt.params()
    reasons = changes(first, params)
    note = ""
    # The whole file is read only when the recording opens with an older request (a later
    # generation may follow it), or with today's but the output is not its first reply (a
    # repaired draft, an edit by hand, or a regeneration whose draft failed and left the old output).
    if reasons or (has_output and (first_draft is None or _output_text(output) != first_draft)):
        draft = plan.draft_path(row)
        reasons, note = _latest_generation(cassette, params, reasons, output if has_output else None, draft)
        if reasons == (NOT_THE_REPLY,):
            note = f"the draft of today's prompt failed its checks and waits in {plan.rel(draft)}"
    return _against_recording(has_output, cassette, reasons, note)


#: why a row whose recording holds today's request is stale all the same
KEPT_NOTE = "a generation of today's prompt was recorded, but its draft did not replace this output"


def _latest_generation(
    cassette: Path, params: Mapping[str, Any], reasons: tuple[str, ...], output: Path | None, draft: Path | None = None
) -> tuple[tuple[str, ...], str]:
    """What differs from today's request in the generation that made ``output``, and a note.

    Record mode ``new_episodes`` (the default) appends a row generated again after its old
    recording, so a generation whose request is today's may follow older ones; and a row
    regenerated over a passing output (``--batch-regenerate-stale``, record mode ``all``) keeps
    its old generation ahead of the new one until a new draft replaces the output. A
    regenerated draft that fails its checks never replaces a passing output (it waits in
    ``draft``, under ``.batchgen-drafts/``; a refusal writes none), yet its request is recorded:
    calling the old output fresh let a format change pass over an output of the old format. So
    a generation of today's request makes the row fresh unless the output is the draft of an
    older generation (then that one's reasons, in any checkout), or is none of the recorded
    drafts while a new draft waits beside it (:data:`NOT_THE_REPLY`). An output that is no
    recorded draft and has none waiting (or only the partial draft of a reply that did not
    finish, which could not have replaced it) was edited by hand: an edit never makes a row stale.
    When no generation is of today's request, the reasons are those of the latest generation
    the output is a reply of, else the latest generation's (``output`` None: no output yet)."""
    try:
        recording = read_recording(cassette)
    except UnreadableRecording:
        return reasons, ""
    if recording is None or not recording.openers:
        return reasons, ""
    found = [changes(request, params) for request in recording.openers]
    today = [i for i, r in enumerate(found) if not r]
    text = _output_text(output) if output is not None else None
    if not today:
        # every generation differs from today's request (a second plan change after a failed
        # regeneration): the reasons are those of the generation the output is a reply of, which
        # is not the latest when its draft failed; the latest's alone would drop what changed first
        made = [r for r, drafts in zip(found, recording.drafts, strict=True) if text is not None and text in drafts]
        return (made or found)[-1], ""
    if output is None:
        return (), ""
    if text is None or any(text in recording.drafts[i] for i in today):
        return (), ""  # (an output that cannot be read is the checks' to fail, not freshness's)
    made_it = [r for r, drafts in zip(found, recording.drafts, strict=True) if r and text in drafts]
    if made_it:
        return made_it[-1], KEPT_NOTE
    if draft is not None and draft.exists() and not _partial(draft, [recording.partials[i] for i in today]):
        return (NOT_THE_REPLY,), ""
    return (), ""


def _partial(draft: Path, partials: Sequence[frozenset[str]]) -> bool:
    """Whether the file waiting in the drafts folder is the partial draft of a reply that did not
    finish (one of ``partials``): such a draft never replaces an output, so the output beside it
    is no older reply kept over today's (an output written by hand after a cut-off reply was
    called stale). Read only when some reply of today's request did not finish."""
    if not any(partials):
        return False
    text = _output_text(draft)
    return text is not None and any(text in p for p in partials)


def _output_text(output: Path) -> str | None:
    """The output as the drafts of :class:`Recording` are kept: line endings as written (a
    checkout that turned them into ``\r\n`` changed no text)."""
    try:
        return output.read_bytes().decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    except OSError:
        return None


def _against_recording(has_output: bool, cassette: Path, reasons: tuple[str, ...], note: str = "") -> Freshness:
    """The freshness of a row with a readable recording, whose first request differs from
    today's in ``reasons`` (none: it matches)."""
    kind = "differs" if reasons else "matches"
    if not has_output:
        return Freshness(MISSING, reasons, kind, cassette)
    return Freshness(STALE if reasons else FRESH, reasons, kind, cassette, note)


class FreshnessBook:
    """Every row's freshness in a session, computed once per row (the shared prefix once per plan)."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._prefixes: dict[Path, str] = {}
        self._rows: dict[tuple[Path, str], Freshness] = {}
        #: the outputs regenerated in this run as they were before it (see :mod:`.baseline`)
        self.baselines: dict[str, Any] = {}
        #: the regenerated rows beside their baselines, once the session ended (baseline.changes)
        self.changes: dict[str, Any] | None = None
        #: rows judged again after this run generated them (plan -> filenames)
        self.rejudged: dict[str, set[str]] = {}

    def prompt(self, plan: Plan, row: Row) -> Prompt:
        prefix = self._prefixes.get(plan.path)
        if prefix is None:
            prefix = self._prefixes[plan.path] = shared_prefix(plan)
        return build_prompt(plan, row, self.max_tokens, prefix)

    def of(self, plan: Plan, row: Row) -> Freshness:
        key = (plan.path, row.filename)
        found = self._rows.get(key)
        if found is None:
            found = self._rows[key] = assess(plan, row, self.prompt(plan, row))
        return found

    def sent_as_recorded(self, plan: Plan, row: Row) -> Freshness:
        """The row's freshness when this run sent its first request and the row's recording opens
        with that very request (:attr:`~pytest_batchgen.dispatch.RowResult.recorded_as_sent`): the
        request of today, so the recording matches, and only the output's presence is read.
        Reading the cassette again for it cost 0.1 to 0.2 ms a replayed row."""
        found = self._rows[(plan.path, row.filename)] = _against_recording(
            plan.output_path(row).exists(), plan.cassette_path(row), ()
        )
        return found

    def forget(self, plan: Plan, row: Row) -> None:
        """After the row was generated in this run: its freshness is read again."""
        self._rows.pop((plan.path, row.filename), None)


# -- what regenerating costs ------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The estimated usage and cost of generating a row live now."""

    usage: Usage
    cost: float
    basis: str  # "recorded" (its recording's usage, scaled to today's prompt) or "estimated"
    replays: bool = False  # a missing row whose recording matches: a replay makes it for $0


@dataclass
class Estimator:
    """Estimates, row by row, what generating the rows live costs.

    - A row with a readable recording: the recorded usage of every interaction (repairs
      included), its input-side tokens (input, cache write, cache read) scaled by today's
      prompt length over the recorded one; the output tokens as recorded. Priced with the
      row's model of today.
    - A row without: input ~ characters / 4 of the system text and the user message; the system
      text is a cache write for the first such row of a plan and model, a cache read for the
      next ones (the prefix is shared and marked for caching); output ~ the average recorded
      output tokens of the plan's recordings, else the format reference's characters / 4.
    """

    prices: PlanPrices
    _written: set[tuple[Path, str]] = field(default_factory=set)
    _average: dict[Path, int] = field(default_factory=dict)

    def average_output(self, plan: Plan, recordings: Iterable[Recording]) -> int:
        found = self._average.get(plan.path)
        if found is None:
            outs = [r.latest_usage.output_tokens for r in recordings]
            found = round(sum(outs) / len(outs)) if outs else max(1, len(plan.format_reference_text) // CHARS_PER_TOKEN)
            self._average[plan.path] = found
        return found

    def estimate(
        self, plan: Plan, row: Row, prompt: Prompt, freshness: Freshness, average_output: int, rec: Recording | None
    ) -> Estimate:
        if rec is not None:
            # one generation's usage: the latest's, not the older ones kept ahead of it
            scale = (len(prompt.system) + len(prompt.user)) / max(1, rec.latest_prompt_chars)
            u = rec.latest_usage
            usage = Usage(
                round(u.input_tokens * scale),
                u.output_tokens,
                round(u.cache_creation_input_tokens * scale),
                round(u.cache_read_input_tokens * scale),
            )
            basis = "recorded"
        else:
            prefix = len(prompt.system) // CHARS_PER_TOKEN
            key = (plan.path, prompt.model)
            first = key not in self._written
            self._written.add(key)
            usage = Usage(
                max(1, len(prompt.user) // CHARS_PER_TOKEN),
                average_output,
                prefix if first else 0,
                0 if first else prefix,
            )
            basis = "estimated"
        replays = freshness.state == MISSING and freshness.recording == "matches"
        return Estimate(usage, self.prices.of(plan.path).cost(prompt.model, usage), basis, replays)


def estimates(
    book: FreshnessBook, rows: Sequence[tuple[Plan, Row]], prices: PlanPrices
) -> list[tuple[Freshness, Estimate]]:
    """Each row's freshness and the estimated live cost of (re)generating it, in order."""
    estimator = Estimator(prices)
    found = [(plan, row, book.of(plan, row)) for plan, row in rows]
    recordings = {(plan.path, row.filename): _recording(f) for plan, row, f in found}
    averages: dict[Path, int] = {}
    for plan, _, _ in found:
        if plan.path not in averages:
            recs = [r for (path, _), r in recordings.items() if path == plan.path and r is not None]
            averages[plan.path] = estimator.average_output(plan, recs)
    return [
        (
            f,
            estimator.estimate(
                plan, row, book.prompt(plan, row), f, averages[plan.path], recordings[(plan.path, row.filename)]
            ),
        )
        for plan, row, f in found
    ]


def _recording(freshness: Freshness) -> Recording | None:
    if freshness.cassette is None:
        return None
    try:
        return read_recording(freshness.cassette)
    except UnreadableRecording:
        return None


def recorded_cost(recording: Recording, prices: PriceTable) -> float:
    """What a recording's calls cost (each at its recorded model's price)."""
    return sum(prices.cost(model, usage) for model, usage in recording.calls)


# -- the session's book -----------------------------------------------------------------------


def book_of(state: Any) -> FreshnessBook:
    """The session's :class:`FreshnessBook` (made on first use, kept on the state)."""
    book = getattr(state, "freshness", None)
    if book is None:
        book = state.freshness = FreshnessBook(state.settings.max_tokens)
    return book


def regenerate_command(plans: Iterable[Path], has_key: bool, options: str = "") -> str:
    """The command that regenerates the stale rows of ``plans``: it calls the model, so a run
    without a credential prints the key's placeholder in front; ``options`` are the run's that
    shape its requests (:meth:`~pytest_batchgen.settings.Settings.command_options`)."""
    key = "" if has_key else KEY_PREFIX
    return f"{key}pytest{options} " + " ".join(plan_option(p) for p in plans) + " --batch-regenerate-stale"


def regenerates(state: Any, plan: Plan, row: Row) -> bool:
    """Whether ``--batch-regenerate-stale`` regenerates this row: its output is stale."""
    return bool(state.settings.regenerate_stale) and book_of(state).of(plan, row).stale


# -- the dry run's table ----------------------------------------------------------------------


def freshness_table(state: Any, rows: Iterable[tuple[Any, Row]]) -> list[str]:
    """``--batch-dry-run``'s table: each selected row's state, reasons and the estimated cost
    of (re)generating it live, then totals (see :class:`Estimator` for the estimate)."""
    book = book_of(state)
    seen: set[tuple[Path, str]] = set()
    pairs: list[tuple[Plan, Row]] = []
    for run, row in rows:
        if (run.plan.path, row.filename) not in seen:
            seen.add((run.plan.path, row.filename))
            pairs.append((run.plan, row))
    several = len({plan.path for plan, _ in pairs}) > 1
    header = ("file", "model", "state", "reasons", "estimate from", "tokens in/out", "est. cost")
    table: list[tuple[str, ...]] = [header]
    sums: dict[str, list[float]] = {}
    replayed = 0
    every = 0.0
    for (plan, row), (f, e) in zip(pairs, estimates(book, pairs, state.prices), strict=True):
        u = e.usage
        name = f"{plan.rel(plan.path)}::{row.filename}" if several else row.filename
        reasons = ", ".join(f.reasons) if f.reasons else (f.note or "-")
        if f.state == MISSING and f.recording == "differs":
            reasons = "recording differs: " + reasons
        cost = f"${e.cost:.4f}" + (" (replays: $0)" if e.replays else "")
        table.append(
            (
                name,
                row.model,
                f.state,
                reasons,
                e.basis,
                f"{u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens}/{u.output_tokens}",
                cost,
            )
        )
        entry = sums.setdefault(f.state, [0, 0.0])
        entry[0] += 1
        entry[1] += 0.0 if e.replays else e.cost
        replayed += e.replays
        every += e.cost
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]
    stale = sums.get(STALE, [0, 0.0])
    missing = sums.get(MISSING, [0, 0.0])
    lines.append(f"to regenerate the {int(stale[0])} stale row(s): ~${stale[1]:.4f} (--batch-regenerate-stale)")
    extra = f"; {replayed} of them replay a matching recording for $0" if replayed else ""
    lines.append(f"to generate the {int(missing[0])} missing row(s): ~${missing[1]:.4f}{extra}")
    lines.append(f"to regenerate every row listed, live: ~${every:.4f}")
    return lines
