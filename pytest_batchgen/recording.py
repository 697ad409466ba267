"""Recording and replay of model calls with vcrpy, one cassette file per row.

vcrpy's ``use_cassette`` patches HTTP globally, so overlapping contexts in concurrent
coroutines would all write into one cassette. Instead the run has one recorder and one
transport under the SDK's HTTP client; each request carries its row (a context variable set
by :class:`~pytest_batchgen.client.ModelClient`), and the transport plays or records it
through that row's own vcrpy :class:`~vcr.cassette.Cassette`. vcrpy still does what it is
good at: record modes, matching, serialisation and filtering.

Every interaction is saved to its cassette as soon as the reply arrives, so a crash never
makes the user pay for that reply twice.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping

import httpx2
from anthropic import AnthropicError
from vcr import matchers
from vcr.cassette import Cassette
from vcr.record_mode import RecordMode
from vcr.request import Request as VcrRequest
from vcr.stubs.httpx_stubs import _deserialize_response, _serialize_response  # private API, vcrpy 9.4.2

from .client import RECORD_MODES, current_call
from .fsutil import atomic_write
from .prompts import prompt_parts

_SECRET_WORDS = ("api-key", "apikey", "authorization", "auth-token", "cookie", "organization", "secret", "token")


def _is_secret(header: str) -> bool:
    h = header.lower()
    return any(w in h for w in _SECRET_WORDS)


class ReplayMiss(AnthropicError):
    """No recording for a request in a mode that may not record. Never retried by the SDK."""

    replay_miss = True


class _AtomicPersister:
    """vcrpy's filesystem persister, but written through a temporary file and a rename."""

    @staticmethod
    def load_cassette(cassette_path, serializer):
        from vcr.persisters.filesystem import FilesystemPersister

        return FilesystemPersister.load_cassette(cassette_path, serializer)

    @staticmethod
    def save_cassette(cassette_path, cassette_dict, serializer):
        from vcr.serialize import serialize

        atomic_write(Path(cassette_path), serialize(cassette_dict, serializer))


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
        self._secrets = tuple(s for s in secrets if s)
        #: why no request may go out in this run, whatever the mode (set when there is no key)
        self.live_refusal: str | None = None
        self._cassettes: dict[str, Cassette] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.paths[key]

    def cassette(self, key: str) -> Cassette:
        with self._lock:
            c = self._cassettes.get(key)
            if c is None:
                c = Cassette.load(
                    path=str(self.path(key)),
                    record_mode=RecordMode(self.mode),
                    match_on=(matchers.method, matchers.path, matchers.body),
                    before_record_request=self._scrub_request,
                    before_record_response=self._scrub_response,
                    persister=_AtomicPersister,
                    drop_unused_requests=self.mode == "all",
                )
                self._cassettes[key] = c
            return c

    def _scrub_request(self, request: VcrRequest) -> VcrRequest:
        for name in list(request.headers):
            if _is_secret(name):
                del request.headers[name]
        return request

    def _scrub_response(self, response: dict[str, Any]) -> dict[str, Any]:
        response["headers"] = {k: v for k, v in response.get("headers", {}).items() if not _is_secret(k)}
        body = response.get("body", {}).get("string")
        if self._secrets and isinstance(body, (bytes, str)):
            for secret in self._secrets:
                if isinstance(body, bytes):
                    body = body.replace(secret.encode(), b"<redacted>")
                else:
                    body = body.replace(secret, "<redacted>")
            response["body"]["string"] = body
        return response

    def transport(self, inner: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        return _RecordingTransport(self, inner)

    def miss_message(self, key: str, cassette: Cassette, body: bytes) -> str:
        path = self.labels.get(key, self.path(key))
        if not cassette.data:  # vcrpy internal attribute (9.4.2): the loaded (request, response) pairs
            what = f"no recording for this row ({path} does not exist or is empty)"
        else:
            what = f"no recorded request in {path} matches this one: " + self._diff(cassette, body)
        hint = f" To record it: {self.hints[key]}" if key in self.hints else ""
        if self.live_refusal and not cassette.write_protected:
            return f"{what} ({self.live_refusal}).{hint}"
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
        return "the " + ", the ".join(best) + (" changed" if len(best) == 1 else " changed") + " since it was recorded"


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
        body = b"".join([part async for part in request.stream])
        request.stream = httpx2.ByteStream(body)
        cassette = self.recorder.cassette(call.key)
        vreq = VcrRequest(request.method, str(request.url), body, dict(request.headers))
        if cassette.can_play_response_for(vreq):
            call.replayed += 1
            return _deserialize_response(cassette.play_response(vreq), httpx2)
        if cassette.write_protected or self.recorder.live_refusal:
            raise ReplayMiss(self.recorder.miss_message(call.key, cassette, body))
        response = await self.inner.handle_async_request(request)
        content = b"".join([part async for part in response.stream])
        await response.aclose()
        call.live += 1
        replay = httpx2.Response(
            response.status_code,
            headers=response.headers.multi_items(),
            stream=httpx2.ByteStream(content),
            extensions=response.extensions,
        )
        if response.is_success:
            # only replies are kept: a recorded 429/529/5xx would be replayed, and fail, forever
            # vcrpy private API (9.4.2): Cassette.append (undocumented) and Cassette._save, which the
            # public API only calls when a use_cassette context exits
            cassette.append(vreq, _serialize_response(replay, content))
            cassette._save()  # on disk before the run goes on
        return replay

    async def aclose(self) -> None:
        await self.inner.aclose()
