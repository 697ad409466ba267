"""Recording and replay of model calls with vcrpy, one cassette file per row.

vcrpy's ``use_cassette`` patches HTTP globally, so overlapping contexts in concurrent
coroutines would all write into one cassette. Instead the run has one recorder and one
transport under the SDK's HTTP client; each request carries its row (a context variable set by
:class:`~pytest_batchgen.client.ModelClient`), and the transport plays or records it through
that row's own vcrpy :class:`~vcr.cassette.Cassette`. vcrpy still does what it is good at:
record modes, matching, serialisation and filtering.

Every reply the SDK parsed into a message is saved to its cassette before the run goes on (the
client calls :meth:`Recorder.commit` right after the parse; the file is fsynced with the run's
other writes at its end, see :mod:`pytest_batchgen.fsutil`), so a crash never makes the user
pay for that reply twice; a 2xx reply that is not a message (malformed JSON, an HTML page, a
wrong schema) is never saved, so it cannot be replayed forever. Cassettes are loaded before any
request: a corrupt one is a clear error naming the file, or, in a mode that may record and with
a key, is set aside as ``<name>.corrupt`` and recorded again. A replay-only run (record mode
``none``) reads each at its row's turn instead, without the SDK: :class:`ReplayClient`.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import AsyncIterable, Mapping
from pathlib import Path
from typing import Any, cast

import httpx2
import yaml
from vcr import matchers
from vcr.cassette import Cassette
from vcr.persisters.filesystem import CassetteNotFoundError
from vcr.record_mode import RecordMode
from vcr.request import Request as VcrRequest
from vcr.stubs.httpx_stubs import _deserialize_response, _serialize_response  # private API, vcrpy 9.4.2

from .client import (
    NO_KEY_REFUSAL,
    RECORD_MODES,
    CallInfo,
    Completion,
    ModelCallError,
    completion_from_body,
    current_call,
)
from .fsutil import atomic_write
from .prompts import prompt_parts

_SECRET_WORDS = ("api-key", "apikey", "authorization", "auth-token", "cookie", "organization", "secret", "token")


def _is_secret(header: str) -> bool:
    h = header.lower()
    return any(w in h for w in _SECRET_WORDS)


class ReplayMiss(Exception):
    """No recording for a request in a mode that may not record (see :func:`_sdk_miss`)."""

    replay_miss = True


@functools.cache
def _sdk_miss() -> type[ReplayMiss]:
    """:class:`ReplayMiss` as the SDK's own error type, raised under the SDK (in the recording
    transport): the SDK passes an ``AnthropicError`` through untouched, where it would wrap any
    other exception as a connection error and retry it. Built on first use, so that importing
    this module (and replaying without the SDK, :class:`ReplayClient`) never loads the SDK."""
    from anthropic import AnthropicError

    return type("ReplayMiss", (ReplayMiss, AnthropicError), {"__module__": __name__})


class CorruptCassette(Exception):
    """A cassette that cannot be read (found when it is loaded, before any request)."""

    replay_miss = True

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


def is_message_body(body: Any) -> bool:
    """Whether a reply body has the shape of a Messages API message (what the SDK can use)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return False
    return (
        isinstance(body, dict)
        and body.get("type") == "message"
        and isinstance(body.get("content"), list)
        and isinstance(body.get("usage"), dict)
    )


def read_cassette(path: Path, serializer: Any) -> tuple[list, list]:
    """Load a cassette strictly: anything vcrpy would choke on later is a :class:`CorruptCassette`.

    A missing or blank file is "no recording" (recorded in a mode that may record). Not UTF-8,
    merge-conflict markers, YAML errors, missing keys and recorded replies that are not messages
    are corrupt: vcrpy would otherwise treat bad bytes as empty, or fail inside the request with
    a ScannerError that the SDK retries and reports without the path.
    """
    from vcr.serialize import deserialize

    if not path.is_file():
        raise CassetteNotFoundError()
    raw = path.read_bytes()
    if not raw.strip():
        raise CassetteNotFoundError()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise CorruptCassette(path, f"is not UTF-8 (line {bad_line}, byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line.rstrip() == "=======":
            raise CorruptCassette(path, f"has a merge-conflict marker at line {number}") from None
    try:
        requests, responses, *_ = deserialize(text, serializer)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CorruptCassette(path, f"is not valid YAML{where} ({problem}); it may be truncated") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CorruptCassette(path, f"is not a vcrpy cassette ({type(exc).__name__}: {exc})") from None
    for n, response in enumerate(responses, 1):
        try:
            code = response["status"]["code"]
            body = response["body"]["string"]
            response["headers"]
        except (KeyError, TypeError) as exc:
            raise CorruptCassette(path, f"interaction {n} has no response {exc}") from None
        if not (200 <= int(code) < 300 and is_message_body(body)):
            raise CorruptCassette(path, f"interaction {n}'s reply is not a message (HTTP {code})") from None
    return requests, responses


class _AtomicPersister:
    """vcrpy's filesystem persister, but strict on load and written through a temporary file
    and a rename."""

    @staticmethod
    def load_cassette(cassette_path, serializer):
        return read_cassette(Path(cassette_path), serializer)

    @staticmethod
    def save_cassette(cassette_path, cassette_dict, serializer):
        from vcr.serialize import serialize

        atomic_write(Path(cassette_path), serialize(cassette_dict, serializer), sync=False)  # see fsutil


#: what a "To record it" command needs in front when the run has no key
KEY_PREFIX = "ANTHROPIC_API_KEY=sk-ant-... "


class Recorder:
    """The run's recorder: one cassette per row key, at ``paths[key]``."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        mode: str,
        hints: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        if mode not in RECORD_MODES:
            raise ValueError(f"unknown record mode {mode!r}; use one of {', '.join(RECORD_MODES)}")
        self.paths = dict(paths)
        self.mode = mode
        self.hints = dict(hints or {})
        #: how to show each cassette's path in messages (relative to the rootdir)
        self.labels: dict[str, str] = {}
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        #: why no request may go out in this run, whatever the mode (set when there is no key)
        self.live_refusal: str | None = None
        #: rows whose cassette cannot be read (found by load_all before any request)
        self.corrupt: dict[str, CorruptCassette] = {}
        #: corrupt cassettes moved aside to be recorded again (key -> where they went)
        self.set_aside: dict[str, Path] = {}
        self._cassettes: dict[str, Cassette] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.paths[key]

    def label(self, key: str) -> str:
        return str(self.labels.get(key, self.path(key)))

    def _options(self, key: str) -> dict[str, Any]:
        return {
            "path": str(self.path(key)),
            "record_mode": RecordMode(self.mode),
            "match_on": (matchers.method, matchers.path, matchers.body),
            "before_record_request": self._scrub_request,
            "before_record_response": self._scrub_response,
            "persister": _AtomicPersister,
            "drop_unused_requests": self.mode == "all",
        }

    def cassette(self, key: str) -> Cassette:
        with self._lock:
            c = self._cassettes.get(key)
            if c is None:
                c = Cassette.load(**self._options(key))
                self._cassettes[key] = c
            return c

    def release(self, key: str) -> None:
        """Forget a finished row's cassette (it is on disk; a later request of the row would load
        it again): a run of 100,000 rows need not hold every recorded request in memory."""
        with self._lock:
            self._cassettes.pop(key, None)

    @property
    def may_record(self) -> bool:
        """Whether this run may send requests and record them at all (a mode and a key)."""
        return self.mode != "none" and not self.live_refusal

    def load_all(self) -> None:
        """Load every row's cassette before any request is sent; note the corrupt ones.

        What happens to a corrupt one is decided at its row's first request (a row whose output
        already passes sends none, and its file is left alone): see :meth:`corrupt_message`.
        """
        for key, path in self.paths.items():
            if path.exists():  # else nothing to read: its (empty) cassette is made at its first request
                self.load(key)

    def load(self, key: str) -> None:
        """Read the row's cassette now (if not in memory already); one that cannot be read is
        noted in :attr:`corrupt` (see :meth:`corrupt_message`) rather than raised."""
        try:
            self.cassette(key)
        except CorruptCassette as exc:
            self.corrupt[key] = exc

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
                self._cassettes[key] = Cassette(**self._options(key))
                return None
        fix = (
            "resolve the merge conflict in it or delete it"
            if "merge-conflict" in exc.why
            else "restore it from version control or delete it"
        )
        hint = f", then record it again: {self.retry_command(key)}" if key in self.hints else ""
        return f"the recording {self.label(key)} cannot be read: it {exc.why}. To go on, {fix}{hint}"

    def start_afresh(self, key: str) -> bool:
        """Forget a row's recording so that its next requests go out live and replace it.

        Called when the row's replayed attempts ended in failure (failed checks or a refusal);
        the file is rewritten only when a new reply is recorded. False when this run may not
        record (no key, mode ``none``, or ``once`` with a recording).
        """
        with self._lock:
            old = self._cassettes.get(key)
            if not self.may_record or (old is not None and old.write_protected):
                return False
            self._cassettes[key] = Cassette(**self._options(key))
            return True

    def retry_hint(self, key: str) -> str:
        """How to generate a row again whose replayed attempts ended in failure."""
        why = f" ({self.live_refusal})" if self.live_refusal else f" (record mode {self.mode!r} replays it)"
        return f"replayed from {self.label(key)}{why}; to generate it again: {self.retry_command(key)}"

    def retry_command(self, key: str) -> str:
        """The command that records the row again, with the key in front when the run had none."""
        hint = self.hints.get(key, "pytest --batch-record-mode all")
        return (KEY_PREFIX if self.live_refusal else "") + hint

    def _redact(self, data: Any) -> Any:
        for secret in self._secrets:
            if isinstance(data, bytes):
                data = data.replace(secret.encode(), b"<redacted>")
            elif isinstance(data, str):
                data = data.replace(secret, "<redacted>")
        return data

    def _scrub_request(self, request: VcrRequest) -> VcrRequest:
        for name in list(request.headers):
            if _is_secret(name):
                del request.headers[name]
        if self._secrets and request.body:
            request.body = self._redact(request.body)
        return request

    def _scrub_response(self, response: dict[str, Any]) -> dict[str, Any]:
        response["headers"] = {k: v for k, v in response.get("headers", {}).items() if not _is_secret(k)}
        body = response.get("body", {}).get("string")
        if self._secrets and isinstance(body, (bytes, str)):
            response["body"]["string"] = self._redact(body)
        return response

    def transport(self, inner: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        return _RecordingTransport(self, inner)

    def commit(self, call: CallInfo) -> None:
        """Save the replies of ``call`` that the SDK parsed into a message, before the run goes
        on. Called on the event loop: the save is a YAML dump and a write without an fsync
        (fsutil.sync_deferred makes it durable), which costs less than a thread hop would."""
        pending, call.pending = call.pending, []
        if not pending:
            return
        cassette = self.cassette(call.key)
        for vreq, response in pending:
            cassette.append(vreq, response)
        cassette._save()

    def replay_directly(self, key: str, url: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The recorded reply (its JSON body) to the request ``params`` would make, played from the
        row's cassette by vcrpy's own matching, or None when vcrpy would not play one.

        The replay fast path (issue 12): a replayed call needs neither the SDK's request building
        and parsing nor httpx; the request is matched as vcrpy matches it (method, path, and body
        compared as JSON), and each recorded reply plays once, as in the transport. Anything it
        does not answer (no match, record mode ``all``, a corrupt cassette) goes the usual way."""
        if self.mode == "all" or key in self.corrupt:
            return None
        vreq = VcrRequest("POST", url, json.dumps(params).encode("utf-8"), {"content-type": "application/json"})
        cassette = self.cassette(key)
        if not cassette.can_play_response_for(vreq):
            return None
        response = cassette.play_response(vreq)
        try:
            data = json.loads(response["body"]["string"])
        except (KeyError, TypeError, ValueError):
            return None
        return data if is_message_body(data) else None

    def miss_message(self, key: str, cassette: Cassette, body: bytes) -> str:
        path = self.label(key)
        if not cassette.data:  # vcrpy internal attribute (9.4.2): the loaded (request, response) pairs
            what = f"no recording for this row ({path} does not exist or is empty)"
        else:
            what = f"no recorded request in {path} matches this one: " + self._diff(cassette, body)
        hint = f" To record it: {self.retry_command(key)}" if key in self.hints else ""
        if self.live_refusal and self.mode == "none":
            return f"{what} ({self.live_refusal}, and record mode 'none' never calls the API).{hint}"
        if self.live_refusal:
            return f"{what} ({self.live_refusal}).{hint}"
        if cassette.write_protected and self.mode == "once":
            return f"{what} (record mode 'once' adds nothing to an existing recording).{hint}"
        return f"{what} (record mode {self.mode!r} never calls the API).{hint}"

    @staticmethod
    def _diff(cassette: Cassette, body: bytes) -> str:
        try:
            now = prompt_parts(json.loads(body))
        except ValueError:
            return "the request body is not JSON"
        best: list[str] | None = None
        for request in cassette.requests:
            try:
                then = prompt_parts(json.loads(request.body or b"{}"))
            except ValueError:
                continue
            changed = [k for k in now if k != "conversation" and now.get(k) != then.get(k)]
            if not changed and now.get("conversation") != then.get("conversation"):
                changed = ["conversation (an earlier reply or repair turn)"]
            if best is None or len(changed) < len(best):
                best = changed
        if not best:
            return "the request differs from the recorded ones"
        return "the " + ", the ".join(best) + " changed since it was recorded"


class _RecordingTransport(httpx2.AsyncBaseTransport):
    # vcrpy private API (checked against vcrpy 9.4.2): _serialize_response/_deserialize_response
    # (the httpx stub's, so cassettes keep vcrpy's own httpx format), Cassette.append and
    # Cassette._save; an upgrade of vcrpy must check them first
    def __init__(self, recorder: Recorder, inner: httpx2.AsyncBaseTransport) -> None:
        self.recorder = recorder
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        call = current_call.get(None)
        if call is None:  # not a row's request: nothing to file it under
            return await self.inner.handle_async_request(request)
        broken = self.recorder.corrupt_message(call.key)
        if broken:
            raise _sdk_miss()(broken)
        body = b"".join([part async for part in cast(AsyncIterable[bytes], request.stream)])
        request.stream = httpx2.ByteStream(body)
        cassette = self.recorder.cassette(call.key)
        vreq = VcrRequest(request.method, str(request.url), body, dict(request.headers))
        if cassette.can_play_response_for(vreq):
            call.replayed += 1
            return _deserialize_response(cassette.play_response(vreq), httpx2)
        if cassette.write_protected or self.recorder.live_refusal:
            raise _sdk_miss()(self.recorder.miss_message(call.key, cassette, body))
        response = await self.inner.handle_async_request(request)
        content = b"".join([part async for part in cast(AsyncIterable[bytes], response.stream)])
        await response.aclose()
        call.live += 1
        replay = httpx2.Response(
            response.status_code,
            headers=response.headers.multi_items(),
            stream=httpx2.ByteStream(content),
            extensions=response.extensions,
        )
        if response.is_success and is_message_body(content):
            # Only messages are kept: a recorded 429/529/5xx, HTML page or malformed body would be
            # replayed, and fail, forever. The client commits it once the SDK parsed it.
            call.pending = [(vreq, _serialize_response(replay, content))]
        return replay

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayClient:
    """The model client of a run in record mode ``none``: every reply comes from the rows'
    cassettes, so neither the SDK nor httpx is needed (issue 12: replay costs what validating
    costs). A request is matched as the recording transport matches it (vcrpy's method, path and
    body matchers) and each recorded reply plays once; a request with no recording fails as a
    replay miss with the same message the SDK path gives. The :class:`~pytest_batchgen.dispatch.
    CompletionClient` protocol, like :class:`~pytest_batchgen.client.ModelClient`."""

    #: what a replayed request is matched against (vcrpy matches the path, not the host)
    URL = "https://api.anthropic.com/v1/messages"

    def __init__(self, recorder: Recorder, has_key: bool) -> None:
        if recorder.mode != "none":
            raise ValueError("ReplayClient replays only: record mode 'none'")
        self.recorder = recorder
        if not has_key:
            recorder.live_refusal = NO_KEY_REFUSAL

    async def complete(self, key: str, params: dict[str, Any]) -> Completion:
        r = self.recorder
        # Each cassette is read at its row's turn, not all up front: a replay spends nothing,
        # so nothing is saved by finding a corrupt one early, and holding every recording in
        # memory until its row's turn made a replay's peak half again a validation's.
        r.load(key)
        broken = r.corrupt_message(key)
        if broken:
            raise ModelCallError("ReplayMiss", broken, replay_miss=True)
        recorded = r.replay_directly(key, self.URL, params)
        if recorded is None:
            body = json.dumps(params).encode("utf-8")
            raise ModelCallError("ReplayMiss", r.miss_message(key, r.cassette(key), body), replay_miss=True)
        return completion_from_body(recorded, replayed=True)

    def start_afresh(self, key: str) -> bool:
        return False  # record mode none never records

    def retry_hint(self, key: str) -> str:
        return self.recorder.retry_hint(key)

    def release(self, key: str) -> None:
        self.recorder.release(key)

    async def aclose(self) -> None:
        return None
