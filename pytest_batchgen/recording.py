"""Recording of model calls with vcrpy, one cassette file per row.

vcrpy's ``use_cassette`` patches HTTP globally, so overlapping contexts in concurrent
coroutines would all write into one cassette. Instead the run has one recorder and one
transport under the SDK's HTTP client; each request carries its row (a context variable set by
:class:`~pytest_batchgen.client.ModelClient`), and the transport answers it from that row's
recording (:mod:`pytest_batchgen.cassettes`: read and matched as vcrpy matches, without vcrpy)
or sends it and records the reply through the row's own vcrpy :class:`~vcr.cassette.Cassette`.
vcrpy still writes every cassette: its record modes, its layout and its YAML (a new file's
nodes are built as its representer builds them, see :class:`_CassetteYaml`).

vcrpy is not on the way to the first request: the transport starts importing it on a thread
once that request's body is on the wire (:func:`_load_vcrpy_once_sent`), so that it is loaded by
the time the first reply is recorded. Importing vcrpy imports every HTTP library it can patch
(a third of a second with requests and botocore installed), which had delayed every run's first
request.

Every reply that is a message is saved to its cassette before the run goes on (the client
calls :meth:`Recorder.commit` once it has read the reply and the run may use it; the file is
fsynced with the run's other writes at its end, see :mod:`pytest_batchgen.fsutil`), so a crash
never makes the user pay for that reply twice. A live run's sending process hands the file's
text to the pytest process, which writes it before the row's draft (:attr:`Recorder.hand_over`):
a ``kill -9`` of the pytest process loses the texts it had not written yet, as it loses the
replies in flight.
A 2xx reply that is not a message (malformed JSON, an HTML page, a wrong schema) is never saved,
so it cannot be replayed forever. A compressed reply (a gateway's ``content-encoding: gzip``) is
checked, redacted and recorded decoded, as vcrpy's ``decode_compressed_response`` records it
(:func:`_decoded`). Cassettes are read before any request: a corrupt one is a
clear error naming the file, or, in a mode that may record and with a key, is set aside as
``<name>.corrupt`` and recorded again.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx2

from .cassettes import (
    KEY_PREFIX,
    CorruptCassette,
    Interaction,
    Recordings,
    ReplayClient,
    _Unusual,
    is_message_body,
    read_cassette,
    represent_cassette,
)
from .client import CallInfo, Unwritten, current_call
from .fsutil import atomic_write
from .preload import import_now, import_soon

__all__ = ["KEY_PREFIX", "CorruptCassette", "Recorder", "ReplayClient", "ReplayMiss", "is_message_body"]

_SECRET_WORDS = ("api-key", "apikey", "authorization", "auth-token", "cookie", "organization", "secret", "token")


@functools.lru_cache(maxsize=1024)
def _is_secret(header: str) -> bool:
    """(Cached: the same few names come with every request and reply of a run.)"""
    h = header.lower()
    return any(w in h for w in _SECRET_WORDS)


#: request headers that describe the client, not the request: the SDK's user agent and
#: ``x-stainless-*`` (OS, architecture, Python and SDK versions, retry count), the host and
#: port, transport details. A replay matches on method, path and body, so they are not recorded:
#: a cassette re-recorded on another machine differs only where the replies do, and it is a
#: quarter smaller, half the time to dump and two thirds to read (benchmarks/bench_cassette.py)
_CLIENT_HEADERS = frozenset({"host", "user-agent", "accept", "accept-encoding", "connection", "content-length"})


@functools.lru_cache(maxsize=1024)
def _recorded_header(header: str) -> bool:
    h = header.lower()
    return not (_is_secret(h) or h in _CLIENT_HEADERS or h.startswith("x-stainless-"))


def recorded_uri(url: str) -> str:
    """``url`` as a cassette records it: scheme, host, port and path, without the userinfo
    (``http://user:password@gateway``: the password of an authenticating gateway in
    ``ANTHROPIC_BASE_URL``), the query or the fragment. The plugin's requests carry no query of
    their own, so whatever one holds came from the base URL (a gateway's ``?key=...``); a replay
    matches on the path, so nothing it needs is lost."""
    try:
        parts = urlsplit(url)
    except ValueError:  # (a malformed IPv6 address): cut by hand
        scheme, sep, rest = url.partition("://")
        rest = rest.split("?", 1)[0].split("#", 1)[0]
        netloc, slash, path = rest.partition("/")
        return scheme + sep + netloc.rpartition("@")[2] + slash + path
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


#: what recording a reply imports (see :func:`load_vcrpy_soon`)
VCRPY_MODULES = ("vcr", "vcr.stubs.httpx_stubs")


def load_vcrpy_soon() -> None:
    """Start importing vcrpy on a thread (once): see :func:`need_vcrpy`."""
    import_soon(VCRPY_MODULES)


def need_vcrpy() -> None:
    """Have vcrpy imported before any use of it here: after the import :func:`load_vcrpy_soon`
    started, if any (vcrpy cannot be imported from two threads at once), raising its error."""
    import_now(VCRPY_MODULES)


def _load_vcrpy_once_sent(request: httpx2.Request) -> None:
    """Start importing vcrpy (:func:`load_vcrpy_soon`) once ``request`` is on the wire: when
    httpcore2 has handed its body to the socket (its ``trace`` extension). Started before the
    send, the import's thread took the interpreter lock from the event loop while it connected
    and wrote the first requests: 30 ms more before the first one left, in every run."""
    previous = request.extensions.get("trace")

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):
            load_vcrpy_soon()
        if previous is not None:
            await previous(event, info)

    request.extensions["trace"] = trace


class ReplayMiss(Exception):
    """No recording for a request in a mode that may not record (see :func:`_sdk_miss`)."""

    replay_miss = True


@functools.cache
def _sdk_miss() -> type[ReplayMiss]:
    """:class:`ReplayMiss` as the SDK's own error type, raised under the SDK (in the recording
    transport): the SDK passes an ``AnthropicError`` through untouched, where it would wrap any
    other exception as a connection error and retry it. Built on first use, so that importing
    this module never loads the SDK."""
    from anthropic import AnthropicError

    return type("ReplayMiss", (ReplayMiss, AnthropicError), {"__module__": __name__})


class _AtomicPersister:
    """vcrpy's filesystem persister, but strict on load (:func:`~pytest_batchgen.cassettes.
    read_cassette`) and written through a temporary file and a rename."""

    @staticmethod
    def load_cassette(cassette_path: str, serializer: Any) -> tuple[list, list]:
        from vcr.persisters.filesystem import CassetteNotFoundError
        from vcr.request import Request as VcrRequest

        interactions = read_cassette(Path(cassette_path))
        if interactions is None:
            raise CassetteNotFoundError()
        requests = [VcrRequest._from_dict(dict(i.request)) for i in interactions]
        return requests, [i.response for i in interactions]

    @staticmethod
    def save_cassette(cassette_path: str, cassette_dict: dict[str, Any], serializer: Any) -> None:
        from vcr.serialize import serialize

        atomic_write(Path(cassette_path), serialize(cassette_dict, serializer), sync=False)  # see fsutil


class _CassetteYaml:
    """vcrpy's YAML serializer (``vcr.serializers.yamlserializer``), for the cassettes the
    recorder writes itself: its dumper's emitter, given the nodes its representer would make
    (:func:`~pytest_batchgen.cassettes.represent_cassette`), so the file is the same, byte for
    byte; a value that function does not know goes through vcrpy's serializer whole."""

    @staticmethod
    def serialize(data: dict[str, Any]) -> str:
        import io

        from vcr.serializers import yamlserializer

        try:
            node = represent_cassette(data, set())
        except _Unusual:
            return cast(str, yamlserializer.serialize(data))
        stream = io.StringIO()
        # vcrpy private API (9.4.2); yaml.dump's defaults, which yamlserializer.serialize passes
        dumper = yamlserializer._CassetteDumper(stream, default_flow_style=False, sort_keys=True)
        try:
            dumper.open()
            dumper.serialize(node)
            dumper.close()
        finally:
            dumper.dispose()
        return stream.getvalue()

    @staticmethod
    def deserialize(text: str) -> Any:
        from vcr.serializers import yamlserializer

        return yamlserializer.deserialize(text)


class _NewCassette:
    """A row's cassette that starts empty (record mode ``all``, a file being replaced, or no file
    yet), with the two methods of vcrpy's ``Cassette`` that :meth:`Recorder.record` calls.

    With nothing loaded, a vcrpy cassette saves every interaction appended, in order, through
    its persister and its YAML serializer; this one does the same with the same functions
    (``vcr.serialize``, and ``yamlserializer``'s dumper given the nodes its representer would
    make: :class:`_CassetteYaml`), so the file is vcrpy's, byte for byte (tests/test_cassettes.py
    holds it to one). It leaves out what a cassette does per reply that this recorder does not
    need: a deep copy of each reply before the filters (the reply is made for it and no one
    else holds it), the record-mode bookkeeping, and making a cassette
    with its matchers and options per row. A cassette that has interactions to keep (record
    mode ``new_episodes`` on an existing file) is still vcrpy's own. The one exception: the
    interactions :meth:`Recorder.hold_previous` holds, which it writes ahead of the new ones, as
    vcrpy wrote them, until the row's output is replaced (:meth:`Recorder.supersede`)."""

    def __init__(self, path: str, recorder: Recorder, held: Sequence[Interaction] = ()) -> None:
        self.path = path
        self.recorder = recorder
        self.requests: list[Any] = []
        self.responses: list[dict[str, Any]] = []
        #: the file's earlier interactions, written ahead of the new ones until the row's output
        #: is replaced (:meth:`Recorder.hold_previous`); as the file had them, so not scrubbed again
        self.held_requests: list[Any] = []
        self.held_responses: list[dict[str, Any]] = []
        if held:
            from vcr.request import Request as VcrRequest

            for interaction in held:
                self.held_requests.append(VcrRequest._from_dict(dict(interaction.request)))
                response = dict(interaction.response)
                response["body"] = dict(response["body"])  # (the serializer decodes it in place)
                self.held_responses.append(response)

    def append(self, request: Any, response: dict[str, Any]) -> None:
        self.requests.append(self.recorder._scrub_request(request))
        self.responses.append(self.recorder._scrub_response(response))

    def release_held(self) -> bool:
        """Leave the held interactions out of the file from now on; True when it was written
        with them (it is written again without them by the caller)."""
        written = bool(self.held_requests and self.requests)
        self.held_requests, self.held_responses = [], []
        return written

    def text(self) -> str:
        """The file's whole text, as vcrpy's persister would write it."""
        from vcr.serialize import serialize

        interactions = {
            "requests": self.held_requests + self.requests,
            "responses": self.held_responses + self.responses,
        }
        return cast(str, serialize(interactions, _CassetteYaml))

    def _save(self) -> None:
        atomic_write(Path(self.path), self.text(), sync=False)  # (as _AtomicPersister.save_cassette)


class Recorder(Recordings):
    """The run's recorder: the rows' recordings (:class:`~pytest_batchgen.cassettes.Recordings`),
    and a vcrpy cassette for each row that records a reply, made at its first."""

    #: Hand a new file's text over (:meth:`take_unwritten`) instead of writing it: set in the
    #: sending process of a live run, whose pytest process writes each recording with its draft
    #: (:class:`~pytest_batchgen.sender.AskChecks`): the sending process is the one such a run
    #: waits for (the figures are there). A file vcrpy loaded to add to (record mode
    #: ``new_episodes``) is still written here.
    hand_over = False

    def __init__(
        self,
        paths: Mapping[str, Path],
        mode: str,
        hints: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(paths, mode, hints, secrets)
        #: key -> the cassette its new replies go into: vcrpy's, or a :class:`_NewCassette`
        self._cassettes: dict[str, Any] = {}
        self._afresh: set[str] = set()  # rows whose file is replaced, not added to
        #: rows whose file is replaced, but whose earlier interactions stay ahead of the new ones
        #: until the row's output is replaced (see :meth:`hold_previous`)
        self._held: dict[str, tuple[Interaction, ...]] = {}
        #: key -> its recording's text, recorded but not written (see :attr:`hand_over`)
        self._unwritten: dict[str, Unwritten] = {}

    def _options(self, key: str) -> dict[str, Any]:
        need_vcrpy()
        from vcr import matchers
        from vcr.record_mode import RecordMode

        return {
            "path": str(self.path(key)),
            "record_mode": RecordMode(self.mode),
            "match_on": (matchers.method, matchers.path, matchers.body),
            "before_record_request": self._scrub_request,
            "before_record_response": self._scrub_response,
            "persister": _AtomicPersister,
            "drop_unused_requests": self.mode == "all",
        }

    def _cassette(self, key: str) -> Any:
        """The cassette that records the row's new replies: the file's, loaded by vcrpy so that
        its record mode decides what is kept; an empty one (:class:`_NewCassette`) when the file
        is replaced or there is none. Record mode all keeps only what it records (vcrpy's
        ``drop_unused_requests``): nothing to load; but a row whose output stays until a new
        draft passes keeps its earlier interactions ahead of the new ones until then
        (:meth:`hold_previous`)."""
        with self._lock:
            c = self._cassettes.get(key)
            if c is None:
                if key in self._afresh or self.mode == "all" or not self.recording(key).rewound:
                    c = _NewCassette(str(self.path(key)), self, self._held.get(key, ()))
                else:
                    from vcr.cassette import Cassette

                    c = Cassette.load(**self._options(key))
                    for index in sorted(self.recording(key).dropped, reverse=True):
                        del c.data[index]  # vcrpy private API (9.4.2): its data is the file's, in order
                self._cassettes[key] = c
            return c

    def release(self, key: str) -> None:
        with self._lock:
            super().release(key)
            self._cassettes.pop(key, None)
            self._afresh.discard(key)
            self._held.pop(key, None)

    def start_afresh(self, key: str) -> bool:
        with self._lock:
            if not super().start_afresh(key):
                return False
            self._afresh.add(key)
            self._cassettes.pop(key, None)
            self._held.pop(key, None)  # (held again by the row's next generation, if it holds)
            return True

    def hold_previous(self, key: str) -> None:
        with self._lock:
            if key in self._cassettes or not (key in self._afresh or self.mode == "all"):
                return  # a reply is recorded already, or the file is added to (new_episodes)
            row = self._rows.get(key)
            if row is not None and row.rewound:
                previous: tuple[Interaction, ...] = tuple(row.interactions)  # mode all: read, never played
            else:  # started afresh: the recording was forgotten, the file is as it was
                try:
                    previous = read_cassette(self.path(key)) or ()
                except (CorruptCassette, OSError):
                    previous = ()  # (set aside and recorded again: nothing to keep)
            if previous:
                self._held[key] = previous

    def supersede(self, key: str) -> None:
        with self._lock:
            if self._held.pop(key, None) is None:
                return
            c = self._cassettes.get(key)
            if isinstance(c, _NewCassette) and c.release_held():
                # (a file that cannot be written keeps them ahead of the new generation, whose
                # reply the output now is: freshness reads that right, and the next save drops them)
                with contextlib.suppress(OSError):
                    c._save()

    def drop(self, key: str, index: int) -> bool:
        with self._lock:
            row = self.recording(key)
            if index in row.dropped:
                return True
            if not super().drop(key, index):
                return False
            c = self._cassettes.get(key)
            if c is not None and not isinstance(c, _NewCassette):
                # vcrpy's, loaded from the file: its first entries are the file's, less those dropped
                del c.data[index - sum(1 for i in row.dropped if i < index)]
            return True

    def corrupt_message(self, key: str) -> str | None:
        with self._lock:
            was_corrupt = key in self.corrupt
            message = super().corrupt_message(key)
            if was_corrupt and message is None:  # set aside: recorded again from nothing
                self._afresh.add(key)
                self._cassettes.pop(key, None)
            return message

    def _scrub_request(self, request: Any) -> Any:
        request.uri = recorded_uri(request.uri)
        for name in list(request.headers):
            if not _recorded_header(name):  # a secret, or the client's own (see _CLIENT_HEADERS)
                del request.headers[name]
            elif self._secrets:
                request.headers[name] = self._redact(request.headers[name])
        if self._secrets and request.body:
            request.body = self._redact(request.body)
        return request

    def _scrub_response(self, response: dict[str, Any]) -> dict[str, Any]:
        """The reply as its cassette records it: no header named like a credential, and no
        credential's value in any other header's values (a server or gateway that echoes the
        request's ``Authorization``) or in the body."""
        headers = {k: v for k, v in response.get("headers", {}).items() if not _is_secret(k)}
        if self._secrets:
            headers = {
                k: [self._redact(x) for x in v] if isinstance(v, list) else self._redact(v) for k, v in headers.items()
            }
        response["headers"] = headers
        body = response.get("body", {}).get("string")
        if self._secrets and isinstance(body, (bytes, str)):
            response["body"]["string"] = self._redact(body)
        return response

    def redact_reply(self, response: httpx2.Response, content: bytes) -> bytes:
        """A live reply as the rest of the run sees it: with a credential's value (echoed back by
        a server or a gateway) ``<redacted>`` in its body and headers, as its recording has it,
        so that the output written now is the one a replay of that recording writes, and no file
        holds the key."""
        if not self._secrets:
            return content
        for name, value in response.headers.multi_items():
            if self._redact(value) != value:
                response.headers[name] = ", ".join(self._redact(v) for v in response.headers.get_list(name))
        redacted = self._redact(content)
        if len(redacted) != len(content) and "content-length" in response.headers:
            response.headers["content-length"] = str(len(redacted))  # (the body's, as recorded)
        return redacted

    def transport(self, inner: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        return _RecordingTransport(self, inner)

    def record(self, key: str, method: str, url: str, body: bytes, headers: Mapping[str, str], response: dict) -> bool:
        """Add one interaction (``response`` in vcrpy's serialised form) to the row's cassette and
        save it now (without an fsync: fsutil.sync_deferred makes it durable). True when the file
        now opens with this request as it was sent: a new file (no interaction kept or held
        ahead of it) and a body that held no secret to redact."""
        need_vcrpy()
        from vcr.request import Request as VcrRequest

        # (items(): dict() of httpx's Headers looks each name up again, through every header;
        # filtered here, so vcrpy's request is not built with headers only to delete them)
        request = VcrRequest(method, url, body, {k: v for k, v in headers.items() if _recorded_header(k)})
        with self._lock:
            cassette = self._cassette(key)
            cassette.append(request, response)
            if self.hand_over and isinstance(cassette, _NewCassette):
                self._unwritten[key] = Unwritten(Path(cassette.path), cassette.text())
            else:
                cassette._save()  # vcrpy private API (9.4.2): persist now
            return (
                isinstance(cassette, _NewCassette)
                and not cassette.held_requests
                and len(cassette.requests) == 1
                and self._redact(body) == body
            )

    def take_unwritten(self, key: str) -> Unwritten | None:
        """The row's recording as :meth:`commit` left it unwritten (:attr:`hand_over`): the
        caller writes it before the run goes on."""
        with self._lock:
            return self._unwritten.pop(key, None)

    def commit(self, call: CallInfo) -> bool:
        """Save the replies of ``call`` that are messages the run may use, before the run goes
        on (or, with :attr:`hand_over`, serialise them for the caller to write). Called on the
        event loop: the save is a YAML dump and a write without an fsync, which costs less than
        a thread hop would. True when the row's recording now opens with the call's request
        (:meth:`record`): the row's freshness is then known without reading the file back
        (``RowResult.recorded_as_sent``)."""
        pending, call.pending = call.pending, []
        if not pending:
            return False
        need_vcrpy()
        from vcr.stubs.httpx_stubs import _serialize_response  # vcrpy private API (9.4.2)

        opens = False
        for request, body, response, content in pending:
            reply = _serialize_response(response, content)
            opens = self.record(call.key, request.method, str(request.url), body, request.headers, reply)
        return opens and len(pending) == 1


def _decoded(response: httpx2.Response, content: bytes) -> bytes:
    """A live reply's body as httpx2 decodes it for the client, from the ``content-encoding`` a
    compressing gateway or proxy sent (the SDK accepts ``gzip, deflate``), with that header gone
    and ``content-length`` the decoded body's: what vcrpy records with its
    ``decode_compressed_response`` option (``vcr.filters.decode_response``). So the recording
    holds the message itself, checked, redacted, matched and replayed as a reply sent plain, and
    the client reads the body as its recording has it. (Kept compressed, it was not taken for a
    message and never recorded, and a credential echoed in it reached the output.) A body that
    does not decode is left as it came, header and all: httpx2 fails on it in the client as
    before, and it is never recorded."""
    coding = response.headers.get("content-encoding")
    if coding is None:
        return content
    try:  # (httpx2's own decoders, through a response of its own: the codings it knows, in order)
        decoded = httpx2.Response(response.status_code, headers=[("content-encoding", coding)], content=content).content
    except httpx2.DecodingError:
        return content
    del response.headers["content-encoding"]
    response.headers["content-length"] = str(len(decoded))
    return decoded


def _replayed_response(recorded: Mapping[str, Any]) -> httpx2.Response:
    """A recorded reply as the httpx response it was (what vcrpy's httpx stub builds)."""
    message = recorded["status"].get("message")
    headers = [(name, value) for name, values in recorded["headers"].items() for value in values]
    return httpx2.Response(
        recorded["status"]["code"],
        headers=headers,
        stream=httpx2.ByteStream(recorded["body"]["string"]),
        extensions={"reason_phrase": message.encode("ascii")} if message else None,
    )


class _RecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, recorder: Recorder, inner: httpx2.AsyncBaseTransport) -> None:
        self.recorder = recorder
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        call = current_call.get(None)
        if call is None:  # not a row's request: nothing to file it under
            return await self.inner.handle_async_request(request)
        r = self.recorder
        broken = r.corrupt_message(call.key)
        if broken:
            raise _sdk_miss()(broken)
        body = b"".join([part async for part in cast(AsyncIterable[bytes], request.stream)])
        request.stream = httpx2.ByteStream(body)
        recorded = r.play(call.key, request.method, str(request.url), body, request.headers)
        if recorded is not None:
            call.replayed += 1
            return _replayed_response(recorded.response)
        if r.write_protected(call.key) or r.live_refusal:
            raise _sdk_miss()(r.miss_message(call.key, body))
        if "vcr" not in sys.modules:
            _load_vcrpy_once_sent(request)
        response = await self.inner.handle_async_request(request)
        load_vcrpy_soon()  # (started already, unless the transport below does not trace)
        stream = cast(httpx2.AsyncByteStream, response.stream)
        try:
            content = b"".join([part async for part in stream])
        finally:
            await stream.aclose()
        content = r.redact_reply(response, _decoded(response, content))  # (what a replay of its recording writes)
        response.stream = httpx2.ByteStream(content)  # read once, here; the client reads it again
        call.live += 1
        if response.is_success and is_message_body(content):
            # Only messages are kept: a recorded 429/529/5xx, HTML page or malformed body would be
            # replayed, and fail, forever. The client commits it once it has read it.
            call.pending = [(request, body, response, content)]
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
