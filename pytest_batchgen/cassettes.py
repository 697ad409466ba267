"""Recorded model calls, read and matched without vcrpy; and the client of a replay-only run.

vcrpy writes every cassette (:mod:`pytest_batchgen.recording`); reading one needs none of it.
A cassette is YAML in vcrpy's layout, parsed here with PyYAML's C loader (vcrpy's own loader
is the same one) and checked strictly, and a request is matched as vcrpy's method, path and
body matchers match it: the same method, the same URL path, and bodies equal as JSON when both
requests say ``application/json``, else equal as bytes (chunked, form and XML-RPC bodies are
parsed as vcrpy parses them). Each recorded reply plays once.

Why not vcrpy: importing it imports every HTTP library it knows how to patch (a third of a
second with requests and botocore installed), and its cassettes deep-copy every interaction
they load. A replay reads one cassette a row, so that was most of what a replay cost over a
validation (issue 12); and a validate-only run of a plan with judge lines reads the recorded
verdicts, where vcrpy must not be loaded at all.

:class:`Recordings` is the run's set of cassettes (one a row, read when first needed), with
every message a user sees about them; :class:`~pytest_batchgen.recording.Recorder` adds the
recording. :class:`ReplayClient` answers a replay-only run (record mode ``none``) from them,
without the SDK.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import yaml

from .client import NO_KEY_REFUSAL, Completion, ModelCallError, completion_from_body, message_problem
from .defaults import RECORD_MODES
from .prompts import prompt_parts

#: what a "To record it" command needs in front when the run has no key
KEY_PREFIX = "ANTHROPIC_API_KEY=sk-ant-... "


class CassetteLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (the C one where PyYAML has it), with the two harmless Python tags
    vcrpy's own loader accepts in a request (``!!python/str``, ``!!python/tuple``)."""


CassetteLoader.add_constructor("tag:yaml.org,2002:python/str", lambda loader, node: loader.construct_scalar(node))
CassetteLoader.add_constructor("tag:yaml.org,2002:python/unicode", lambda loader, node: loader.construct_scalar(node))
CassetteLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
)


_TAG = "tag:yaml.org,2002:"


class _Unusual(Exception):
    """A node :func:`_construct` leaves to PyYAML's own constructor."""


def _construct(node: yaml.Node, seen: set[int]) -> Any:
    """The value of a composed node whose tags are those vcrpy writes (strings, decimal
    integers, nulls, base64 bytes, mappings with text keys, sequences), built directly (a
    duplicate key keeps its last value, as PyYAML's does).

    PyYAML's constructor is pure Python around its C parser and spent half of each cassette's
    read (0.13 of 0.27 ms) dispatching on every node. Anything else (another tag, an alias)
    raises :class:`_Unusual`, and the document is loaded the usual way."""
    if isinstance(node, yaml.ScalarNode):
        tag, value = node.tag, node.value
        if tag == _TAG + "str":
            return value
        if tag == _TAG + "int" and value.isascii() and value.isdigit() and (value == "0" or value[0] != "0"):
            return int(value)
        if tag == _TAG + "null" and value in ("", "~", "null", "Null", "NULL"):
            return None
        if tag == _TAG + "binary":
            import base64

            try:
                return base64.decodebytes(value.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise _Unusual from None
        raise _Unusual
    if id(node) in seen:  # an alias: PyYAML shares the object (or builds a cycle)
        raise _Unusual
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, seen)
            if not isinstance(key, str):
                raise _Unusual
            out[key] = _construct(value_node, seen)
        return out
    if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
        return [_construct(item, seen) for item in node.value]
    raise _Unusual


def represent_cassette(data: Any, seen: set[int]) -> yaml.Node:
    """The node PyYAML's representer makes of ``data`` for ``yaml.dump`` (``sort_keys``, block
    style), built directly for the values a cassette holds (text, integers, booleans, None,
    mappings with text keys, lists); the inverse of :func:`_construct`.

    The representer dispatches on every value in pure Python (``represent_data``, alias
    bookkeeping): vcrpy's serializer took 1.68 M instructions a recorded cassette, 1.17 M from
    these nodes (cachegrind). The emitter, in C, writes the same bytes from the same nodes.
    Anything else (bytes, floats, another type, a list or mapping met twice, which PyYAML would
    write as an alias) raises :class:`_Unusual`."""
    kind = type(data)
    if kind is str:
        return yaml.ScalarNode(_TAG + "str", data)
    if kind is int:
        return yaml.ScalarNode(_TAG + "int", str(data))
    if kind is bool:
        return yaml.ScalarNode(_TAG + "bool", "true" if data else "false")
    if data is None:
        return yaml.ScalarNode(_TAG + "null", "null")
    if kind is not dict and kind is not list or id(data) in seen:
        raise _Unusual
    seen.add(id(data))
    if kind is list:
        return yaml.SequenceNode(_TAG + "seq", [represent_cassette(item, seen) for item in data], flow_style=False)
    if not all(type(key) is str for key in data):
        raise _Unusual
    return yaml.MappingNode(
        _TAG + "map",
        [(yaml.ScalarNode(_TAG + "str", key), represent_cassette(value, seen)) for key, value in sorted(data.items())],
        flow_style=False,
    )


def load_cassette_yaml(text: str) -> Any:
    """``yaml.load(text, Loader=CassetteLoader)``, the same value, built faster for the nodes a
    cassette holds (:func:`_construct`); raises ``yaml.YAMLError`` as that call does."""
    loader = CassetteLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is None:
        return None
    try:
        return _construct(node, set())
    except _Unusual:
        return yaml.load(text, Loader=CassetteLoader)


#: the statuses (with every 5xx) the SDK retries: a plain vcrpy cassette records them before the
#: retry's reply
RETRIED = frozenset({408, 409, 429})


class CorruptCassette(Exception):
    """A cassette that cannot be read (found when it is loaded, before any request)."""

    replay_miss = True

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


def body_problem(body: Any) -> str | None:
    """Why a reply body (bytes, text or parsed JSON) is not a message the plugin can use, or None
    (:func:`~pytest_batchgen.client.message_problem`: the same rule for live and recorded replies)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            return f"it is not JSON ({exc})"
    if not isinstance(body, dict):
        return f"it is {type(body).__name__}, not a JSON object"
    return message_problem(body)


def is_message_body(body: Any) -> bool:
    """Whether a reply body has the shape of a Messages API message (what the plugin can use)."""
    return body_problem(body) is None


def _first_values(headers: Mapping[str, Any]) -> dict[str, str]:
    """Header names lower-cased, each with its first value, as vcrpy's ``HeadersDict`` keeps them."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, (list, tuple)):
            value = value[0] if value else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out.setdefault(str(name).lower(), str(value))
    return out


def _body_kinds(headers: Mapping[str, str]) -> tuple[str, ...]:
    """What vcrpy's body matcher parses a body as, from its request's headers, in its order."""
    kinds = []
    if "chunked" in headers.get("transfer-encoding", "").lower():
        kinds.append("chunked")
    content_type = headers.get("content-type", "").lower()
    if "application/x-www-form-urlencoded" in content_type:
        kinds.append("form")
    if "application/json" in content_type:
        kinds.append("json")
    if "text/xml" in content_type and "xmlrpc" in headers.get("user-agent", "").lower():
        kinds.append("xmlrpc")
    return tuple(kinds)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _dechunk(body: Any) -> Any:
    """The data of a chunked-encoded body. One that does not start like a chunk is taken as it
    is (as vcrpy's matcher takes it); one that starts like a chunk and breaks off is an error;
    an empty one is None (vcrpy's too)."""
    if not isinstance(body, bytes):
        return body
    if not body:
        return None
    chunks: list[bytes] = []
    pos = 0
    while True:
        end = pos
        while end < len(body) and body[end] in _HEX:
            end += 1
        if end == pos or body[end : end + 2] != b"\r\n":
            if pos == 0:
                return body
            raise ValueError("malformed chunked body")
        size = int(body[pos:end], 16)
        if size == 0:
            return b"".join(chunks)
        start, stop = end + 2, end + 2 + size
        if body[stop : stop + 2] != b"\r\n":
            raise ValueError("malformed chunked body")
        chunks.append(body[start:stop])
        pos = stop + 2


def _parse(kind: str, body: Any) -> Any:
    if kind == "chunked":
        return _dechunk(body)
    if kind == "json":
        return json.loads(body) if body else None
    if body is None:
        return None
    if kind == "form":
        return parse_qs(body.decode("ascii"))
    import xmlrpc.client

    return xmlrpc.client.loads(body)


def bodies_match(ours: Any, our_kinds: tuple[str, ...], theirs: Any, their_kinds: tuple[str, ...]) -> bool:
    """vcrpy's body matcher: both bodies parsed the same way when their headers agree on how
    (chunked, form, JSON, XML-RPC), else compared as bytes, as they are when either fails to parse."""
    from xml.parsers.expat import ExpatError

    a, b = ours, theirs
    try:
        for kind in our_kinds if our_kinds == their_kinds else ():
            a, b = _parse(kind, a), _parse(kind, b)
    except (ValueError, ExpatError):
        a, b = ours, theirs
    return bool(a == b)


@dataclass(frozen=True)
class Interaction:
    """One recorded request and its reply, as the cassette has them."""

    #: the request as the file has it: method, uri, body, headers (vcrpy's ``Request._to_dict``)
    request: Mapping[str, Any]
    #: the reply as vcrpy serialises it: status, headers (lists of values), body string (bytes)
    response: Mapping[str, Any]

    @property
    def body(self) -> bytes | None:
        body = self.request.get("body")
        return body.encode("utf-8") if isinstance(body, str) else body

    @property
    def kinds(self) -> tuple[str, ...]:
        return _body_kinds(_first_values(self.request.get("headers") or {}))


def _check_request(request: Any) -> None:
    if not isinstance(request, dict) or set(request) != {"method", "uri", "body", "headers"}:
        found = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise TypeError(f"a request has {found}, not method, uri, body and headers")
    if not isinstance(request["uri"], str) or not isinstance(request["method"], str):
        raise TypeError("a request's method and uri are not text")
    if not isinstance(request["headers"], dict) or not isinstance(request["body"], (str, bytes, type(None))):
        raise TypeError("a request's headers are not a mapping, or its body is not text")


def read_cassette(path: Path) -> tuple[Interaction, ...] | None:
    """A cassette's interactions, read strictly; None when there is none (no file, or a blank one).

    Not UTF-8, merge-conflict markers, YAML errors, a layout that is not vcrpy's and recorded
    replies that are not messages raise :class:`CorruptCassette` naming what is wrong: read
    leniently, bad bytes would look like no recording, or fail inside a request without the path.
    """
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise CorruptCassette(path, f"is not UTF-8 (line {bad_line}, byte {exc.start})") from None
    if "\n=======" in text or "<<<<<<< " in text or ">>>>>>> " in text or text.startswith("======="):
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line.rstrip() == "=======":
                raise CorruptCassette(path, f"has a merge-conflict marker at line {number}") from None
    try:
        data = load_cassette_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CorruptCassette(path, f"is not valid YAML{where} ({problem}); it may be truncated") from None
    try:
        found = data["interactions"]
        interactions = []
        for entry in found:
            request, response = entry["request"], entry["response"]
            _check_request(request)
            interactions.append(Interaction(request, response))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CorruptCassette(path, f"is not a vcrpy cassette ({type(exc).__name__}: {exc})") from None
    kept, refused = [], []
    for n, interaction in enumerate(interactions, 1):
        response = interaction.response
        try:
            code = response["status"]["code"]
            body = response["body"]["string"]
            response["headers"]
        except (KeyError, TypeError) as exc:
            raise CorruptCassette(path, f"has an interaction with no response {exc} (interaction {n})") from None
        if isinstance(body, str):  # vcrpy keeps reply bodies as bytes once loaded
            response["body"]["string"] = body = body.encode("utf-8")
        if isinstance(code, int) and (code in RETRIED or code >= 500):
            # a refusal the SDK retried (plain vcrpy records it; this plugin never does): the
            # retry's reply follows it, and is what a replay plays
            refused.append(code)
            continue
        problem = body_problem(body) if isinstance(code, int) and 200 <= code < 300 else ""
        if problem is not None:
            why = f"has a reply that is not a message (interaction {n}, HTTP {code})"
            raise CorruptCassette(path, f"{why}: {problem}" if problem else why) from None
        kept.append(interaction)
    if refused and not kept:
        codes = ", ".join(str(c) for c in sorted(set(refused)))
        raise CorruptCassette(path, f"holds only refused requests (HTTP {codes}): no reply to replay")
    return tuple(kept)


class Played(NamedTuple):
    """A recorded reply found for a request (:meth:`Recordings.replay_directly`)."""

    #: the reply's JSON body, a message
    body: dict[str, Any]
    #: the reply is the recording's first, played for the row's first request in this run, which
    #: held no secret: the recording opens with that very request (see ``RowResult.recorded_as_sent``)
    opens_recording: bool
    #: where the reply is in the recording (what :meth:`Recordings.drop` takes)
    position: int = -1


@dataclass
class RowRecording:
    """A row's cassette in this run: what it held when read, and which replies have played."""

    interactions: list[Interaction] = field(default_factory=list)
    played: set[int] = field(default_factory=set)
    #: read from a file, even one listing no interaction (vcrpy's "rewound"): mode ``once`` adds none
    rewound: bool = False
    #: replies the caller could not use, left out of the file when the row records (:meth:`Recordings.drop`)
    dropped: set[int] = field(default_factory=set)


class Recordings:
    """The run's cassettes, one per row key at ``paths[key]``, each read when first needed.

    Every message about a recording is here: a miss (what changed since it was recorded), a
    corrupt file (and, where the run may record, setting it aside), how to record it again.
    """

    def __init__(
        self,
        paths: Mapping[str, Path],
        mode: str,
        hints: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        if mode not in RECORD_MODES:
            raise ValueError(f"unknown record mode {mode!r}; use one of {', '.join(RECORD_MODES)}")
        self.paths = paths  # (not copied: it may be made per row as asked, see generation.PerRow)
        self.mode = mode
        self.hints: Mapping[str, str] = hints if hints is not None else {}  # (not copied: it may be lazy)
        #: how to show each cassette's path in messages (relative to the rootdir)
        self.labels: Mapping[str, str] = {}
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        #: why no request may go out in this run, whatever the mode (set when there is no key)
        self.live_refusal: str | None = None
        #: rows whose cassette cannot be read
        self.corrupt: dict[str, CorruptCassette] = {}
        #: corrupt cassettes moved aside to be recorded again (key -> where they went)
        self.set_aside: dict[str, Path] = {}
        self._rows: dict[str, RowRecording] = {}
        self._lock = threading.RLock()

    def path(self, key: str) -> Path:
        return self.paths[key]

    def label(self, key: str) -> str:
        return str(self.labels.get(key, self.path(key)))

    @property
    def may_record(self) -> bool:
        """Whether this run may send requests and record them at all (a mode and a key)."""
        return self.mode != "none" and not self.live_refusal

    def recording(self, key: str) -> RowRecording:
        """The row's cassette, read now if it is not in memory (:class:`CorruptCassette` if it
        cannot be read)."""
        with self._lock:
            found = self._rows.get(key)
            if found is None:
                interactions = read_cassette(self.path(key))
                found = RowRecording(list(interactions or ()), rewound=interactions is not None)
                self._rows[key] = found
            return found

    def load(self, key: str) -> None:
        """Read the row's cassette now (if not in memory already); one that cannot be read is
        noted in :attr:`corrupt` (see :meth:`corrupt_message`) rather than raised."""
        try:
            self.recording(key)
        except CorruptCassette as exc:
            self.corrupt[key] = exc

    def load_all(self) -> None:
        """Read every row's cassette before any request is sent; note the corrupt ones.

        What happens to a corrupt one is decided at its row's first request (a row whose output
        already passes sends none, and its file is left alone): see :meth:`corrupt_message`.
        """
        for key in self.paths:
            self.load(key)

    def release(self, key: str) -> None:
        """Forget a finished row's cassette (it is on disk; a later request of the row reads it
        again): a run of 100,000 rows need not hold every recorded request in memory."""
        with self._lock:
            self._rows.pop(key, None)

    def start_afresh(self, key: str) -> bool:
        """Forget a row's recording so that its next requests go out live and replace it.

        Called when the row's replayed attempts ended in failure (failed checks or a refusal);
        the file is rewritten only when a new reply is recorded. False when this run may not
        record (no key, mode ``none``, or ``once`` with a recording).
        """
        with self._lock:
            old = self._rows.get(key)
            if not self.may_record or (old is not None and self.mode == "once" and old.rewound):
                return False
            self._rows[key] = RowRecording()
            return True

    def hold_previous(self, key: str) -> None:
        """The row's output stays until a new draft passes (it passes now; its drafts go aside):
        where its file is replaced (started afresh, record mode ``all``), the interactions it
        holds now stay in it, ahead of the new ones, until :meth:`supersede`. The output may be
        the reply of one of them, and a regeneration that fails (every draft failed, a refusal,
        a truncation) keeps it: without them, the kept output of an older prompt looked like an
        edit by hand, and freshness called it fresh. They are never replayed: the row's
        recording in this run is what :meth:`start_afresh` left (or, in mode ``all``, nothing
        plays). Called before the row's first reply is recorded; nothing here (no recording)."""

    def supersede(self, key: str) -> None:
        """A new draft replaced the row's output: the interactions :meth:`hold_previous` kept
        go, and the file holds only this run's (written again if it was written with them).
        Nothing here (no recording)."""

    def corrupt_message(self, key: str) -> str | None:
        """None when the row's cassette can be used (now); else why not, naming the file and the fix.

        When the run may record, a corrupt cassette is moved aside as ``<name>.corrupt`` (kept
        for the user to inspect) and the row is recorded again.
        """
        with self._lock:
            exc = self.corrupt.get(key)
            if exc is None:
                return None
            if self.may_record:
                path = self.path(key)
                aside = path.with_name(path.name + ".corrupt")
                if path.exists():
                    os.replace(path, aside)
                self.set_aside[key] = aside
                del self.corrupt[key]
                self._rows[key] = RowRecording()
                return None
        fix = (
            "resolve the merge conflict in it or delete it"
            if "merge-conflict" in exc.why
            else "restore it from version control or delete it"
        )
        hint = f", then record it again: {self.retry_command(key)}" if key in self.hints else ""
        return f"the recording {self.label(key)} cannot be read: it {exc.why}. To go on, {fix}{hint}"

    def write_protected(self, key: str) -> bool:
        """Whether the row's cassette may not take a new recording (vcrpy's rule: mode ``none``,
        or ``once`` with a recording already)."""
        return self.mode == "none" or (self.mode == "once" and self.recording(key).rewound)

    def play(
        self, key: str, method: str, url: str, body: bytes | None, headers: Mapping[str, Any]
    ) -> Interaction | None:
        """The recorded interaction that answers this request, marked played; None when none does.

        Matched as vcrpy's method, path and body matchers match (see the module's docstring);
        each recorded reply plays once, in the order recorded, and nothing plays in record mode
        ``all``. Replies recorded during this run are not played again in it.
        """
        if self.mode == "all":
            return None
        with self._lock:
            row = self.recording(key)
            if not row.rewound:
                return None
            path = urlsplit(url).path or "/"
            kinds = _body_kinds(_first_values(headers))
            body = self._redact(body)
            for index, recorded in enumerate(row.interactions):
                if index in row.played or recorded.request["method"] != method:
                    continue
                if (urlsplit(recorded.request["uri"]).path or "/") != path:
                    continue
                if bodies_match(body, kinds, self._redact(recorded.body), recorded.kinds):
                    row.played.add(index)
                    return recorded
        return None

    def unplayed(self, key: str) -> bool:
        """Whether the row's recording has a reply this run has not played yet."""
        with self._lock:
            row = self.recording(key)
            return row.rewound and len(row.played) < len(row.interactions)

    def replay_directly(self, key: str, url: str, params: Mapping[str, Any]) -> Played | None:
        """The recorded reply to the request ``params`` would make, or None.

        The replay fast path (issue 12): a replayed call needs neither the SDK's request building
        and parsing nor httpx. Anything it does not answer (no match, record mode ``all``, a
        corrupt cassette) goes the usual way."""
        if self.mode == "all" or key in self.corrupt or not self.unplayed(key):
            return None  # (a fresh row's request is not even encoded)
        body = json.dumps(params).encode("utf-8")
        with self._lock:
            row = self.recording(key)
            first_request = not row.played
            recorded = self.play(key, "POST", url, body, {"content-type": "application/json"})
            if recorded is None:
                return None
            opens = first_request and recorded is row.interactions[0] and self._redact(body) == body
            index = next(i for i, it in enumerate(row.interactions) if it is recorded)
        try:
            data = json.loads(recorded.response["body"]["string"])
        except (KeyError, TypeError, ValueError):
            return None
        # (every 2xx reply in the file is a message: read_cassette checked each when it read it)
        return Played(data, opens, index) if isinstance(data, dict) else None

    def drop(self, key: str, index: int) -> bool:
        """Leave the played reply ``index`` out of the row's recording, so that its request goes
        out live instead and the new reply takes its place in the file (the row's other replies
        stay). For a reply its caller cannot use: a judge's answer without a verdict, recorded
        before such answers were refused, was replayed by every run and the judge never asked
        again. False when this run may not record (no key, mode ``none``, ``once`` with a
        recording): the reply is what the request gets."""
        with self._lock:
            if not self.may_record or self.write_protected(key):
                return False
            self.recording(key).dropped.add(index)
            return True

    def _redact(self, data: Any) -> Any:
        for secret in self._secrets:
            if isinstance(data, bytes):
                data = data.replace(secret.encode(), b"<redacted>")
            elif isinstance(data, str):
                data = data.replace(secret, "<redacted>")
        return data

    def retry_hint(self, key: str) -> str:
        """How to generate a row again whose replayed attempts ended in failure."""
        why = f" ({self.live_refusal})" if self.live_refusal else f" (record mode {self.mode!r} replays it)"
        return f"replayed from {self.label(key)}{why}; to generate it again: {self.retry_command(key)}"

    def retry_command(self, key: str) -> str:
        """The command that records the row again, with the key in front when the run had none."""
        hint = self.hints.get(key, "pytest --batch-record-mode all")
        return (KEY_PREFIX if self.live_refusal else "") + hint

    def miss_message(self, key: str, body: bytes) -> str:
        """Why a request found no recording to play, what changed since, and how to record it."""
        path = self.label(key)
        row = self.recording(key)
        if not row.interactions:
            what = f"no recording for this row ({path} does not exist or is empty)"
        else:
            what = f"no recorded request in {path} matches this one: " + _diff(row.interactions, body)
        hint = f" To record it: {self.retry_command(key)}" if key in self.hints else ""
        if self.live_refusal and self.mode == "none":
            return f"{what} ({self.live_refusal}, and record mode 'none' never calls the API).{hint}"
        if self.live_refusal:
            return f"{what} ({self.live_refusal}).{hint}"
        if self.mode == "once" and row.rewound:
            return f"{what} (record mode 'once' adds nothing to an existing recording).{hint}"
        return f"{what} (record mode {self.mode!r} never calls the API).{hint}"


def _diff(recorded: list[Interaction], body: bytes) -> str:
    """Which parts of the request (model, title, format reference, ...) differ from the closest
    recorded one."""
    try:
        now = prompt_parts(json.loads(body))
    except ValueError:
        return "the request body is not JSON"
    best: list[str] | None = None
    for interaction in recorded:
        try:
            then = prompt_parts(json.loads(interaction.body or b"{}"))
        except (ValueError, AttributeError):
            continue
        changed = [k for k in now if k != "conversation" and now.get(k) != then.get(k)]
        if not changed and now.get("conversation") != then.get("conversation"):
            changed = ["conversation (an earlier reply or repair turn)"]
        if best is None or len(changed) < len(best):
            best = changed
    if not best:
        return "the request differs from the recorded ones"
    return "the " + ", the ".join(best) + " changed since it was recorded"


class ReplayClient:
    """The model client of a run in record mode ``none``: every reply comes from the rows'
    cassettes, so neither the SDK, httpx nor vcrpy is needed (issue 12: replay costs what
    validating costs). A request is matched as the recording transport matches it and each
    recorded reply plays once; a request with no recording fails as a replay miss with the same
    message the SDK path gives. The :class:`~pytest_batchgen.dispatch.CompletionClient`
    protocol, like :class:`~pytest_batchgen.client.ModelClient`."""

    #: what a replayed request is matched against (vcrpy matches the path, not the host)
    URL = "https://api.anthropic.com/v1/messages"
    #: it never sends a request: nothing it does is held to ``--batch-max-cost`` (a replay is free)
    sends = False

    def __init__(self, recordings: Recordings, has_key: bool) -> None:
        if recordings.mode != "none":
            raise ValueError("ReplayClient replays only: record mode 'none'")
        self.recordings = recordings
        if not has_key:
            recordings.live_refusal = NO_KEY_REFUSAL

    async def complete(self, key: str, params: dict[str, Any], unusable: Any = None) -> Completion:
        """The recorded reply (``unusable`` is the live client's: nothing is recorded here)."""
        r = self.recordings
        # Each cassette is read at its row's turn, not all up front: a replay spends nothing,
        # so nothing is saved by finding a corrupt one early, and holding every recording in
        # memory until its row's turn made a replay's peak half again a validation's.
        r.load(key)
        broken = r.corrupt_message(key)
        if broken:
            raise ModelCallError("ReplayMiss", broken, replay_miss=True)
        played = r.replay_directly(key, self.URL, params)
        if played is None:
            body = json.dumps(params).encode("utf-8")
            raise ModelCallError("ReplayMiss", r.miss_message(key, body), replay_miss=True)
        return completion_from_body(played.body, replayed=True, opens_recording=played.opens_recording)

    def start_afresh(self, key: str) -> bool:
        return False  # record mode none never records

    def hold_previous(self, key: str) -> None:
        return None  # nothing is recorded: the file stays as it is

    def supersede(self, key: str) -> None:
        return None

    def retry_hint(self, key: str) -> str:
        return self.recordings.retry_hint(key)

    def release(self, key: str) -> None:
        self.recordings.release(key)

    async def aclose(self) -> None:
        return None
