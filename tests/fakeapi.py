"""A loopback fake of the Anthropic Messages and Message Batches HTTP API.

This module is a *test fixture*, never part of the ``pytest_batchgen`` plugin.
The real API is unreachable from the test environment, so tests point the real
``anthropic`` SDK (2.x, built on ``httpx2``) at this server via ``base_url=`` or
the ``ANTHROPIC_BASE_URL`` environment variable.  The JSON shapes it returns are
kept faithful to the SDK's own types (``anthropic.types.Message``, ``Usage``,
``messages.MessageBatch``, ``messages.MessageBatchIndividualResponse``,
``shared.ErrorResponse``) so that the SDK parses them exactly as it parses real
responses, including with ``_strict_response_validation=True``.

Stdlib only: ``http.server.ThreadingHTTPServer`` in a daemon thread.

Quick use::

    with FakeAnthropic() as fake:
        fake.script("Quorum", Reply.rate_limited(retry_after=0.01), Reply.ok("# Quorum"))
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="test-key")
        ...
        assert len(fake.requests) == 2

Endpoints (anything else answers a JSON ``404 not_found_error``):

* ``POST   /v1/messages``                       scripted reply (see ``script``/``default``)
* ``POST   /v1/messages/batches``               create a batch (answered immediately; a row's
  ``Reply.expired()`` / ``Reply.canceled()`` makes its request end ``expired`` / ``canceled``)
* ``GET    /v1/messages/batches``               list batches (one page)
* ``GET    /v1/messages/batches/{id}``          retrieve; ends after ``batch_polls_until_ended`` GETs
* ``GET    /v1/messages/batches/{id}/results``  JSONL results (only once ended)
* ``POST   /v1/messages/batches/{id}/cancel``   cancel (all results become ``canceled``)
* ``DELETE /v1/messages/batches/{id}``          delete an ended batch

Like the real API, every ``/v1`` request must carry credentials (``x-api-key``
or ``Authorization: Bearer ...``; note that the 2.x SDK sends an ``api_key`` as
``Authorization: Bearer <key>``, not as ``x-api-key``) and an
``anthropic-version`` header, and ``/v1/messages`` bodies must have ``model``,
``max_tokens`` and a non-empty ``messages`` list; otherwise 401 / 400.  As the
real API, a message with empty content (``""``, ``[]``, only empty text blocks)
is refused with ``400 invalid_request_error`` ("messages.N: all messages must
have non-empty content except for the optional final assistant message").
Streaming (``"stream": true``) is not implemented and answers a 400.

Retries: the SDK retries 408, 409, 429 and every status >= 500 by status code
alone (``anthropic._base_client.BaseClient._should_retry``); the real API does
not send ``x-should-retry`` for those, and neither does this fake.  A
``retry-after`` header is sent only when ``Reply.retry_after`` is set.  NB: the
SDK ignores ``retry-after: 0`` (it only honours values > 0) and then falls back
to its exponential backoff (0.5 s * 2**n, minus up to 25 % jitter), so fast tests
should use a small positive value such as ``retry_after=0.01`` (sent as
``retry-after: 0.01``, which the SDK accepts as a float) or an explicit
``Reply(headers={"retry-after-ms": "10"})``.

Token accounting is deterministic, not a tokenizer: each content block (a text
block's text, or the JSON of any other block, tool definition or string
content) counts ``max(1, len(text) // 4)`` tokens; ``output_tokens`` is
``max(1, len(reply.text) // 4)``.  Prompt caching is simulated: every block
carrying ``cache_control`` (in ``tools``, then ``system``, then ``messages``,
the API's prefix order; a top-level ``cache_control`` marks the last block) is
a breakpoint; the prefix up to it is hashed together with the model.  The
longest prefix seen before is reported as ``cache_read_input_tokens``, the
newly seen part up to the last breakpoint as ``cache_creation_input_tokens``,
and the remainder as ``input_tokens`` (at least 1).  With one ``system``
breakpoint this is simply: first time -> creation, later -> read.  Cache
entries never expire; ``min_cacheable_tokens`` (default 0) can simulate the
API's minimum cacheable prefix length.

Rate limits (off by default): ``FakeAnthropic(limits=RateLimits(requests=30,
input_tokens=..., output_tokens=..., window=1.0))`` enforces the API's three
per-minute limits as token buckets that refill continuously, with ``window``
seconds standing for the minute (short in tests).  Like the API, a request is
admitted only when every bucket holds its cost (1 request; its input tokens,
counted as above but without the prefix already cached, since cache reads do
not count against the limit; its ``max_tokens`` of output), which is taken at
admission; when the reply is written, the output tokens not generated are
given back (and any input the reply's usage did not count).  A request that
does not fit is answered ``429 rate_limit_error`` naming the limit, with
``retry-after`` (seconds until it would fit, as a float, or whole seconds
rounded up with ``RateLimits(whole_seconds=True)``), and nothing is taken.
Every ``/v1/messages`` reply (200 or 429) carries the
``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}``
headers; ``reset`` is the RFC 3339 time at which the bucket is full again
(microseconds, or whole seconds with ``whole_seconds``).  ``fake.limited``
counts the 429s the limits caused and ``fake.admitted`` logs (time, charge) of
every admitted request: what it took, less what was given back once answered.
``fake.limit_model(model, RateLimits(...))`` gives one model buckets of its own
(the API limits each model class apart); its replies' headers tell those.

Compression (off by default): ``Reply(content_encoding="gzip")`` (or ``"deflate"``) answers as a
compressing gateway or proxy in front of the API does (nginx's ``gzip on``, LiteLLM): the body
compressed, with ``content-encoding``, when the request's ``accept-encoding`` lists that coding
(the SDK sends ``gzip, deflate``), and as it is otherwise. ``Logged.response_headers`` shows
what was sent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FakeAnthropic", "Reply", "Logged", "Batch", "RateLimits"]


# --------------------------------------------------------------------------- replies

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a ``POST /v1/messages`` request.

    For a success (``status`` 200) ``text`` is the assistant text.  For an error
    (``status`` >= 400) ``text`` is the error message and ``error_type`` the
    ``error.type`` (derived from the status when None).  ``retry_after`` is sent
    as the ``retry-after`` header, ``headers`` adds any other response headers
    (e.g. ``{"retry-after-ms": "10"}``), ``delay`` is slept before answering,
    and ``usage`` overrides keys of the computed usage dict.

    Faults: ``raw_body`` is sent as the body instead of the message JSON (with ``status`` and
    ``content_type``; see :meth:`raw`); ``stall_after`` sends the headers (with the full
    ``content-length``) and only that many bytes of the body, then holds the connection open
    without a byte more until the server stops (see :meth:`stalled`).

    ``content_encoding`` (``"gzip"`` or ``"deflate"``) compresses the body as a gateway does, when
    the request accepts that coding (see the module docstring's "Compression").
    """

    text: str = "ok"
    stop_reason: str = "end_turn"
    status: int = 200
    error_type: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    usage: dict | None = None
    headers: Mapping[str, str] | None = None
    raw_body: bytes | None = None
    content_type: str = "application/json"
    stall_after: int | None = None
    content_encoding: str | None = None
    #: in a batch only: the request ends with this result type ("expired" or "canceled")
    batch_result: str | None = None

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    @property
    def resolved_error_type(self) -> str:
        return self.error_type or _DEFAULT_ERROR_TYPES.get(self.status, "api_error")

    @classmethod
    def ok(cls, text: str = "ok", delay: float = 0.0, **kw: Any) -> Reply:
        return cls(text=text, delay=delay, **kw)

    @classmethod
    def truncated(cls, text: str = "truncated", delay: float = 0.0, **kw: Any) -> Reply:
        return cls(text=text, stop_reason="max_tokens", delay=delay, **kw)

    @classmethod
    def refused(cls, text: str = "", delay: float = 0.0, **kw: Any) -> Reply:
        """stop_reason "refusal"; empty ``text`` gives ``content == []``."""
        return cls(text=text, stop_reason="refusal", delay=delay, **kw)

    @classmethod
    def raw(cls, body: bytes | str, status: int = 200, content_type: str = "application/json", **kw: Any) -> Reply:
        """Any body with any status: malformed JSON, an HTML page, a message of the wrong shape."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        return cls(status=status, raw_body=data, content_type=content_type, **kw)

    @classmethod
    def stalled(cls, text: str = "ok", after: int = 20, **kw: Any) -> Reply:
        """A good reply of which only the first ``after`` bytes of the body are ever sent."""
        return cls(text=text, stall_after=after, **kw)

    @classmethod
    def error(
        cls,
        status: int,
        error_type: str | None = None,
        message: str = "error",
        retry_after: float | None = None,
        delay: float = 0.0,
        **kw: Any,
    ) -> Reply:
        return cls(text=message, status=status, error_type=error_type, retry_after=retry_after, delay=delay, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0, delay: float = 0.0, **kw: Any) -> Reply:
        return cls.error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            retry_after=retry_after,
            delay=delay,
            **kw,
        )

    @classmethod
    def overloaded(cls, retry_after: float | None = None, delay: float = 0.0, **kw: Any) -> Reply:
        return cls.error(529, "overloaded_error", "Overloaded", retry_after=retry_after, delay=delay, **kw)

    @classmethod
    def server_error(cls, retry_after: float | None = None, delay: float = 0.0, **kw: Any) -> Reply:
        return cls.error(500, "api_error", "Internal server error", retry_after=retry_after, delay=delay, **kw)

    @classmethod
    def expired(cls, **kw: Any) -> Reply:
        """In a Message Batch: the request was not processed before the batch expired (24 h)."""
        return cls(batch_result="expired", **kw)

    @classmethod
    def canceled(cls, **kw: Any) -> Reply:
        """In a Message Batch: the request was canceled before it was processed."""
        return cls(batch_result="canceled", **kw)

    @classmethod
    def invalid_request(cls, message: str = "invalid request", **kw: Any) -> Reply:
        return cls.error(400, "invalid_request_error", message, **kw)


def _empty_content(content: Any) -> bool:
    """Whether a request message's content is empty as the API sees it: ``""``, ``[]``, or text
    blocks that are all empty (the API refuses such a message unless it is the final assistant
    turn, a prefill; a repair turn that pasted an empty draft was refused so)."""
    if content == "" or content == []:
        return True
    return isinstance(content, list) and all(
        isinstance(block, dict) and block.get("type") == "text" and not block.get("text") for block in content
    )


def _default_reply(body: dict) -> Reply:
    return Reply.ok("ok")


# --------------------------------------------------------------------------- rate limits

#: limit kind -> its header family and its name in a 429's message
_LIMIT_KINDS = {
    "requests": ("requests", "requests per minute"),
    "input_tokens": ("input-tokens", "input tokens per minute"),
    "output_tokens": ("output-tokens", "output tokens per minute"),
}


@dataclass(frozen=True)
class RateLimits:
    """The account's per-minute limits (None: unlimited); ``window`` seconds stand for the minute."""

    requests: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    window: float = 60.0
    whole_seconds: bool = False  # retry-after and reset rounded to whole seconds, like a coarse API

    def kinds(self) -> dict[str, float]:
        return {k: float(v) for k in _LIMIT_KINDS if (v := getattr(self, k)) is not None}


class _Buckets:
    """Token buckets for :class:`RateLimits`, full at the start; the caller holds the fake's lock."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        now = time.monotonic()
        self.level = dict(limits.kinds())
        self.at = {k: now for k in self.level}

    def rate(self, kind: str) -> float:
        return self.limits.kinds()[kind] / self.limits.window

    def _refill(self, now: float) -> None:
        for kind, cap in self.limits.kinds().items():
            self.level[kind] = min(cap, self.level[kind] + self.rate(kind) * (now - self.at[kind]))
            self.at[kind] = now

    def try_take(self, cost: dict[str, float]) -> tuple[bool, str, float]:
        """(admitted, the limit that refused, seconds until it would fit)."""
        now = time.monotonic()
        self._refill(now)
        short = [(min(cost[k], cap) - self.level[k]) / self.rate(k) for k, cap in self.limits.kinds().items()]
        kinds = list(self.limits.kinds())
        worst = max(range(len(short)), key=lambda i: short[i], default=None)
        if worst is not None and short[worst] > 1e-9:
            return False, kinds[worst], short[worst]
        for k in kinds:
            self.level[k] -= cost[k]
        return True, "", 0.0

    def give(self, amounts: dict[str, float]) -> None:
        self._refill(time.monotonic())
        caps = self.limits.kinds()
        for k, amount in amounts.items():
            if k in caps:
                self.level[k] = min(caps[k], self.level[k] + amount)

    def headers(self) -> dict[str, str]:
        now, wall = time.monotonic(), time.time()
        self._refill(now)
        out: dict[str, str] = {}
        fullness: list[tuple[float, str]] = []
        for kind, cap in self.limits.kinds().items():
            family = _LIMIT_KINDS[kind][0]
            level = max(0.0, self.level[kind])
            reset = wall + (cap - level) / self.rate(kind)
            if self.limits.whole_seconds:
                reset = math.ceil(reset)
            out[f"anthropic-ratelimit-{family}-limit"] = str(int(cap))
            out[f"anthropic-ratelimit-{family}-remaining"] = str(int(level))
            out[f"anthropic-ratelimit-{family}-reset"] = _rfc3339(datetime.fromtimestamp(reset, timezone.utc)) or ""
            if kind != "requests":
                fullness.append((level / cap, family))
        if fullness:  # the most restrictive token limit
            family = min(fullness)[1]
            for part in ("limit", "remaining", "reset"):
                out[f"anthropic-ratelimit-tokens-{part}"] = out[f"anthropic-ratelimit-{family}-{part}"]
        return out


# --------------------------------------------------------------------------- log


@dataclass
class Logged:
    """One HTTP request as the fake saw it.

    ``status`` is set just before the response is written (so it is already
    there when the client sees the response; None if the connection was
    dropped), ``finished`` right after it was written (None while in flight;
    call ``FakeAnthropic.wait_idle()`` before reading it).  ``reply`` is the
    Reply chosen for a ``/v1/messages`` request.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    started: float
    finished: float | None = None
    status: int | None = None
    reply: Reply | None = None
    #: the response's headers as written (None until then)
    response_headers: dict[str, str] | None = None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def api_key(self) -> str | None:
        """The credential sent, from ``x-api-key`` or ``Authorization: Bearer``; or, as an
        authenticating gateway takes it, ``Authorization: Basic`` (what the SDK's HTTP client
        sends, in place of the key, for a base URL with a password: ``http://user:pass@host``)."""
        if self.headers.get("x-api-key"):
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith(("bearer ", "basic ")):
            return auth.split(" ", 1)[1]
        return None

    @property
    def last_user_text(self) -> str:
        return _last_user_text(self.body) if isinstance(self.body, dict) else ""


@dataclass
class Batch:
    """Server-side state of one Message Batch (read-only for tests)."""

    id: str
    requests: list[dict]
    results: list[dict]  # one MessageBatchIndividualResponse dict per request
    created_at: datetime
    polls_until_ended: int
    polls: int = 0
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    deleted: bool = False

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class _HttpError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


# --------------------------------------------------------------------------- helpers


def _raw_usage(raw: bytes | str) -> dict:
    """The ``usage`` a scripted raw body states ({} when it states none, or is not JSON)."""
    try:
        usage = json.loads(raw).get("usage")
    except (ValueError, AttributeError, RecursionError):  # a body nested too deep for json
        return {}
    return usage if isinstance(usage, dict) else {}


#: a coding (``content-encoding``) -> how a gateway compresses a body with it: ``deflate`` is the
#: zlib format (RFC 9110 section 8.4.1.2), ``gzip`` the gzip file format
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}


def _compressed(coding: str | None, accepted: str, headers: dict[str, str], payload: bytes) -> bytes:
    """``payload`` as a compressing gateway sends it: with ``coding`` when the request's
    ``accept-encoding`` (``accepted``) lists it (``content-encoding`` set in ``headers``), else
    as it is."""
    if coding is None:
        return payload
    offered = {part.split(";")[0].strip().lower() for part in accepted.split(",")}
    if coding not in offered:
        return payload
    headers["content-encoding"] = coding
    return _COMPRESSORS[coding](payload)


def _new_id(prefix: str) -> str:
    return f"{prefix}_01{uuid.uuid4().hex[:22]}"


def _rfc3339(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.microsecond == 0:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fmt_seconds(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _ntokens(text: str) -> int:
    return max(1, len(text) // 4)


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":"))


def _content_texts(content: Any) -> list[str]:
    """Texts of a message's content, for script matching."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.extend(_content_texts(block.get("content")))
    return out


def _last_user_text(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return "\n".join(_content_texts(msg.get("content")))
    return ""


def _segments(body: dict) -> list[tuple[str, int, dict | None]]:
    """The prompt as (cache key text, tokens, cache_control) blocks, in cache-prefix order."""
    segs: list[tuple[str, int, dict | None]] = []

    def add(key_prefix: str, block: Any) -> None:
        text = _block_text(block)
        cc = block.get("cache_control") if isinstance(block, dict) else None
        segs.append((key_prefix + text, _ntokens(text), cc if isinstance(cc, dict) else None))

    for tool in body.get("tools") or []:
        add("tool:", tool)
    system = body.get("system")
    if isinstance(system, str):
        add("system:", system)
    elif isinstance(system, list):
        for block in system:
            add("system:", block)
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        role = f"{msg.get('role')}:"
        if isinstance(content, str):
            add(role, content)
        elif isinstance(content, list):
            for block in content:
                add(role, block)
    top = body.get("cache_control")
    if isinstance(top, dict) and segs:
        key, tokens, cc = segs[-1]
        segs[-1] = (key, tokens, cc or top)
    return segs


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # listen backlog: socketserver's 5 drops the SYNs of a burst of new connections, which the
    # kernel retries a second later; the API takes a burst of 64 at once
    request_queue_size = 128
    fake: FakeAnthropic

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "FakeAnthropic/1.0"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, False)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        started = time.monotonic()
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        entry = Logged(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
            started=started,
        )
        fake._arrive(entry)
        try:
            status, headers, payload = fake._handle(entry)
            coding = entry.reply.content_encoding if entry.reply is not None else None
            payload = _compressed(coding, entry.headers.get("accept-encoding", ""), headers, payload)
            entry.status = status
            reason = "Overloaded" if status == 529 else self.responses.get(status, ("",))[0]
            out = [f"{self.protocol_version} {status} {reason}".encode("latin-1")]
            headers = {
                "date": self.date_time_string(),
                "server": self.server_version,
                **headers,
                "content-length": str(len(payload)),
            }
            if self.close_connection:
                headers["connection"] = "close"
            entry.response_headers = headers
            out += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
            stall = entry.reply.stall_after if entry.reply is not None else None
            if stall is not None:  # half the body, then silence on an open connection
                self.wfile.write(b"\r\n".join(out) + b"\r\n\r\n" + payload[:stall])
                self.wfile.flush()
                fake._stopping.wait()
                raise OSError("FakeAnthropic stopping")
            # one write for the whole response
            self.wfile.write(b"\r\n".join(out) + b"\r\n\r\n" + payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            fake._depart(entry)


# --------------------------------------------------------------------------- the fake


class FakeAnthropic:
    """Loopback fake of the Anthropic API; see the module docstring.

    Public attributes: ``base_url``, ``requests`` (list of ``Logged``),
    ``max_in_flight``, ``default`` (callable body -> Reply), ``latency``
    (seconds added to every ``/v1/messages`` answer), ``batch_polls_until_ended``,
    ``batch_poll_error`` (an HTTP status every batch retrieve answers with, or None),
    ``min_cacheable_tokens``, ``batches`` (id -> ``Batch``), ``limits``
    (:class:`RateLimits` or None), ``limited`` and ``admitted`` (see the module
    docstring's "Rate limits").
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        batch_polls_until_ended: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: RateLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.batch_polls_until_ended = batch_polls_until_ended
        self.batch_poll_error: int | None = None
        #: (kind, batch, (status, headers, body)) -> what is sent instead; kind is "create",
        #: "retrieve", "results", "cancel" or "other": the answers of a hostile server
        self.batch_tamper: (
            Callable[[str, Batch, tuple[int, dict[str, str], bytes]], tuple[int, dict[str, str], bytes]] | None
        ) = None
        self.min_cacheable_tokens = 0
        self.default: Callable[[dict], Reply] = _default_reply
        self.requests: list[Logged] = []
        self.max_in_flight = 0
        self.batches: dict[str, Batch] = {}
        self._in_flight = 0
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._scripts: list[list[Any]] = []  # [match, replies, next_index]
        self._cache: set[str] = set()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.limited = 0  # 429s sent because a rate limit was reached
        self.admitted: list[tuple[float, dict[str, float]]] = []  # (time, charge) under the limits
        self._buckets: _Buckets | None = None
        self._model_buckets: dict[str, _Buckets] = {}
        self.limits = limits

    @property
    def limits(self) -> RateLimits | None:
        """The enforced rate limits (None: none); setting them starts with full buckets."""
        return self._limits

    @limits.setter
    def limits(self, value: RateLimits | None) -> None:
        with self._lock:
            self._limits = value
            self._buckets = _Buckets(value) if value is not None else None

    def limit_model(self, model: str, limits: RateLimits) -> None:
        """Give requests for ``model`` rate limits of their own, as the API limits each model
        class apart (the others keep :attr:`limits`); full buckets to start with."""
        with self._lock:
            self._model_buckets[model] = _Buckets(limits)

    def _buckets_for(self, model: Any) -> _Buckets | None:
        return self._model_buckets.get(str(model), self._buckets)

    # ---- lifecycle

    def start(self) -> FakeAnthropic:
        if self._httpd is not None:
            raise RuntimeError("FakeAnthropic already started")
        self._stopping.clear()
        httpd = _Server((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="FakeAnthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a delay
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # unblock idle keep-alive handler threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment that points a default-constructed SDK client at the fake."""
        return {"ANTHROPIC_BASE_URL": self.base_url, "ANTHROPIC_API_KEY": "test-key"}

    # ---- scripting

    def script(self, match: str, *replies: Reply) -> None:
        """Answer /v1/messages requests whose last user text contains ``match``
        with ``replies`` in order (one per request; the last one repeats).
        Batch entries consume the same replies.  First registered match wins."""
        if not replies:
            raise ValueError("script() needs at least one Reply")
        with self._lock:
            self._scripts.append([match, list(replies), 0])

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def reset_log(self) -> None:
        """Forget logged requests; ``max_in_flight`` restarts from the current in-flight count."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self._in_flight

    def reset_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight (responses fully written)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def messages_requests(self) -> list[Logged]:
        """Logged ``POST /v1/messages`` requests (excludes batch endpoints)."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and urlsplit(r.path).path == "/v1/messages"]

    def _choose(self, body: dict) -> Reply:
        text = _last_user_text(body)
        with self._lock:
            for entry in self._scripts:
                match, replies, index = entry
                if match in text:
                    entry[2] = index + 1
                    return replies[min(index, len(replies) - 1)]
        reply = self.default(body)
        if not isinstance(reply, Reply):
            raise TypeError(f"FakeAnthropic.default returned {reply!r}, expected a Reply")
        return reply

    # ---- bookkeeping (called from handler threads)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _arrive(self, entry: Logged) -> None:
        with self._lock:
            self.requests.append(entry)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _depart(self, entry: Logged) -> None:
        with self._lock:
            entry.finished = time.monotonic()
            self._in_flight -= 1
            self._idle.notify_all()

    # ---- routing

    def _handle(self, entry: Logged) -> tuple[int, dict[str, str], bytes]:
        request_id = _new_id("req")
        try:
            return self._route(entry, request_id)
        except _HttpError as err:
            return self._error_response(err.status, err.error_type, err.message, request_id)
        except OSError:
            raise  # stopping: drop the connection
        except Exception as err:  # a bug in a test's default callable, etc.
            return self._error_response(500, "api_error", f"FakeAnthropic internal error: {err!r}", request_id)

    def _error_response(
        self, status: int, error_type: str, message: str, request_id: str, extra: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
        headers = {"content-type": "application/json", "request-id": request_id, **(extra or {})}
        return status, headers, json.dumps(body).encode()

    def _json(self, obj: Any, request_id: str, status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"content-type": "application/json", "request-id": request_id}, json.dumps(obj).encode()

    def _route(self, entry: Logged, request_id: str) -> tuple[int, dict[str, str], bytes]:
        method = entry.method
        path = urlsplit(entry.path).path
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["v1"]:
            raise _HttpError(404, "not_found_error", f"Not found: {method} {path}")
        if not entry.api_key:
            raise _HttpError(401, "authentication_error", "x-api-key header is required")
        if not entry.headers.get("anthropic-version"):
            raise _HttpError(400, "invalid_request_error", "anthropic-version: header is required")
        if entry.raw and entry.body is None:
            raise _HttpError(400, "invalid_request_error", "Request body is not valid JSON")

        if parts == ["v1", "messages"] and method == "POST":
            return self._messages(entry, request_id)
        if parts == ["v1", "messages", "batches"]:
            if method == "POST":
                created = self._create_batch(entry.body)
                return self._tampered("create", created, self._json(self._batch_json(created), request_id))
            if method == "GET":
                return self._list_batches(request_id)
        if len(parts) >= 4 and parts[:3] == ["v1", "messages", "batches"]:
            batch = self._get_batch(parts[3])
            rest = parts[4:]
            kind = {(): "retrieve", ("results",): "results", ("cancel",): "cancel"}.get(tuple(rest), "other")
            return self._tampered(kind, batch, self._batch_route(entry, request_id, batch, rest))
        raise _HttpError(404, "not_found_error", f"Not found: {method} {path}")

    def _tampered(
        self, kind: str, batch: Batch, response: tuple[int, dict[str, str], bytes]
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer to a batch endpoint as :attr:`batch_tamper` rewrites it (a hostile server)."""
        if self.batch_tamper is None:
            return response
        return self.batch_tamper(kind, batch, response)

    def _batch_route(
        self, entry: Logged, request_id: str, batch: Batch, rest: list[str]
    ) -> tuple[int, dict[str, str], bytes]:
        method, path = entry.method, urlsplit(entry.path).path
        if rest == [] and method == "GET":
            if self.batch_poll_error is not None:
                raise _HttpError(self.batch_poll_error, "invalid_request_error", "retrieve refused (test)")
            with self._lock:
                batch.polls += 1
                if not batch.ended and batch.polls >= batch.polls_until_ended:
                    batch.ended_at = datetime.now(timezone.utc)
            return self._json(self._batch_json(batch), request_id)
        if rest == [] and method == "DELETE":
            with self._lock:
                if not batch.ended:
                    raise _HttpError(400, "invalid_request_error", f"Message Batch {batch.id} is still in progress")
                batch.deleted = True
            return self._json({"id": batch.id, "type": "message_batch_deleted"}, request_id)
        if rest == ["cancel"] and method == "POST":
            with self._lock:
                if not batch.ended and batch.cancel_initiated_at is None:
                    batch.cancel_initiated_at = datetime.now(timezone.utc)
                    for result in batch.results:
                        result["result"] = {"type": "canceled"}
            return self._json(self._batch_json(batch), request_id)
        if rest == ["results"] and method == "GET":
            with self._lock:
                if not batch.ended:
                    raise _HttpError(
                        400, "invalid_request_error", f"Message Batch {batch.id} has not finished processing"
                    )
                lines = b"".join(json.dumps(r).encode() + b"\n" for r in batch.results)
            return 200, {"content-type": "application/binary", "request-id": request_id}, lines
        raise _HttpError(404, "not_found_error", f"Not found: {method} {path}")

    # ---- messages

    @staticmethod
    def _validate_params(body: Any) -> None:
        if not isinstance(body, dict):
            raise _HttpError(400, "invalid_request_error", "Request body must be a JSON object")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _HttpError(400, "invalid_request_error", "model: Field required")
        if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool):
            raise _HttpError(400, "invalid_request_error", "max_tokens: Field required")
        if body["max_tokens"] < 1:
            raise _HttpError(400, "invalid_request_error", "max_tokens: must be greater than or equal to 1")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise _HttpError(400, "invalid_request_error", "messages: at least one message is required")
        messages = body["messages"]
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or (index == len(messages) - 1 and message.get("role") == "assistant"):
                continue
            if _empty_content(message.get("content")):
                raise _HttpError(
                    400,
                    "invalid_request_error",
                    f"messages.{index}: all messages must have non-empty content except for the optional final "
                    "assistant message",
                )
        if body.get("stream"):
            raise _HttpError(400, "invalid_request_error", "stream: streaming is not implemented by FakeAnthropic")

    def _messages(self, entry: Logged, request_id: str) -> tuple[int, dict[str, str], bytes]:
        body = entry.body
        self._validate_params(body)
        cost = self._admit(body)
        if isinstance(cost, tuple):  # refused by a rate limit
            return cost
        reply = self._choose(body)
        entry.reply = reply
        delay = self.latency + reply.delay
        if delay > 0 and self._stopping.wait(delay):
            raise OSError("FakeAnthropic stopping")  # drop the connection
        extra = dict(reply.headers or {})
        if reply.retry_after is not None:
            extra["retry-after"] = _fmt_seconds(reply.retry_after)
        if reply.raw_body is not None or reply.is_error:
            # an error is not charged; a 2xx raw body is, by the usage it states (none: the request)
            charged = _raw_usage(reply.raw_body) if reply.raw_body is not None and reply.status < 300 else None
            extra = {**self._settle(cost, charged, body.get("model")), **extra}
        if reply.raw_body is not None:
            return reply.status, {"content-type": reply.content_type, "request-id": request_id, **extra}, reply.raw_body
        if reply.is_error:
            return self._error_response(reply.status, reply.resolved_error_type, reply.text, request_id, extra)
        message = self._message_json(body, reply, "standard")
        extra = {**self._settle(cost, message["usage"], body.get("model")), **extra}
        status, headers, payload = self._json(message, request_id, reply.status)
        return status, {**headers, **extra}, payload

    def _admit(self, body: dict) -> dict[str, float] | None | tuple[int, dict[str, str], bytes]:
        """Take the request's cost from the rate-limit buckets: its cost, None without limits,
        or the 429 response when it does not fit."""
        with self._lock:
            buckets = self._buckets_for(body.get("model"))
            if buckets is None:
                return None
            cost = {
                "requests": 1.0,
                "input_tokens": float(self._counted_input(body)),
                "output_tokens": float(body["max_tokens"]),
            }
            ok, kind, wait = buckets.try_take(cost)
            if ok:
                self.admitted.append((time.monotonic(), cost))
                return cost
            self.limited += 1
            headers = buckets.headers()
            limit = buckets.limits.kinds()[kind]
        wait = math.ceil(wait) if buckets.limits.whole_seconds else math.ceil(wait * 1000) / 1000
        headers["retry-after"] = _fmt_seconds(max(wait, 0.001))
        message = (
            f"This request would exceed the rate limit for your organization of {int(limit):,} "
            f"{_LIMIT_KINDS[kind][1]}. Please reduce the prompt length or the maximum tokens requested, "
            "or try again later."
        )
        return self._error_response(429, "rate_limit_error", message, _new_id("req"), headers)

    def _counted_input(self, body: dict) -> int:
        """The input tokens a request counts against the limit: all but its cached prefix (the
        longest one seen before), which the API looks up before it admits the request."""
        segs = _segments(body)
        digest = hashlib.sha256(str(body.get("model")).encode())
        running = read = 0
        for key, tokens, cc in segs:
            data = key.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
            running += tokens
            if cc is not None and running >= self.min_cacheable_tokens and digest.hexdigest() in self._cache:
                read = running
        return max(1, running - read)

    def _settle(self, cost: dict[str, float] | None, usage: dict | None, model: Any = None) -> dict[str, str]:
        """Give back what ``model``'s request did not use (all of it for an error), and the headers."""
        with self._lock:
            buckets = self._buckets_for(model)
            if buckets is None:
                return {}
            if cost is not None:
                if usage is None:
                    back = dict(cost)
                else:
                    counted = usage.get("input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)
                    back = {
                        "input_tokens": cost["input_tokens"] - counted,
                        "output_tokens": cost["output_tokens"] - usage.get("output_tokens", 0),
                    }
                buckets.give(back)
                for kind, amount in back.items():  # the admitted log keeps what was finally charged
                    cost[kind] -= amount
            return buckets.headers()

    def _usage(self, body: dict, reply: Reply, service_tier: str) -> dict:
        segs = _segments(body)
        total = sum(tokens for _, tokens, _ in segs)
        model = str(body.get("model"))
        # breakpoints: (end index exclusive, prefix tokens, hash, ttl)
        points: list[tuple[int, int, str, str]] = []
        digest = hashlib.sha256(model.encode())
        running = 0
        for i, (key, tokens, cc) in enumerate(segs):
            data = key.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
            running += tokens
            if cc is not None and running >= self.min_cacheable_tokens:
                points.append((i + 1, running, digest.hexdigest(), str(cc.get("ttl") or "5m")))
        read = 0
        created = {"5m": 0, "1h": 0}
        with self._lock:
            hit = 0
            for n, (_, tokens, h, _) in enumerate(points):
                if h in self._cache:
                    read, hit = tokens, n + 1
            prev = read
            for _, tokens, h, ttl in points[hit:]:
                created["1h" if ttl == "1h" else "5m"] += tokens - prev
                prev = tokens
            self._cache.update(h for _, _, h, _ in points)
        creation = created["5m"] + created["1h"]
        usage = {
            "input_tokens": max(1, total - read - creation),
            "output_tokens": _ntokens(reply.text),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": created["5m"],
                "ephemeral_1h_input_tokens": created["1h"],
            },
            "service_tier": service_tier,
        }
        if reply.usage:
            usage.update(reply.usage)
        return usage

    def _message_json(self, body: dict, reply: Reply, service_tier: str) -> dict:
        content = [{"type": "text", "text": reply.text}] if reply.text else []
        return {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "stop_details": (
                {"type": "refusal", "category": None, "explanation": None} if reply.stop_reason == "refusal" else None
            ),
            "usage": self._usage(body, reply, service_tier),
        }

    # ---- batches

    def _get_batch(self, batch_id: str) -> Batch:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None or batch.deleted:
            raise _HttpError(404, "not_found_error", f"Message Batch {batch_id} not found")
        return batch

    def _create_batch(self, body: Any) -> Batch:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise _HttpError(400, "invalid_request_error", "requests: at least one request is required")
        seen: set[str] = set()
        for req in requests:
            if not isinstance(req, dict) or not isinstance(req.get("custom_id"), str) or not req["custom_id"]:
                raise _HttpError(400, "invalid_request_error", "requests: each request needs a custom_id")
            if not isinstance(req.get("params"), dict):
                raise _HttpError(400, "invalid_request_error", "requests: each request needs params")
            if req["custom_id"] in seen:
                raise _HttpError(400, "invalid_request_error", f"Duplicate custom_id: {req['custom_id']}")
            seen.add(req["custom_id"])
        results = []
        for req in requests:
            params = req["params"]
            try:
                self._validate_params(params)
                reply = self._choose(params)
            except _HttpError as err:
                reply = Reply.error(err.status, err.error_type, err.message)
            if reply.batch_result in ("expired", "canceled"):
                result = {"type": reply.batch_result}
            elif reply.is_error:
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": reply.resolved_error_type, "message": reply.text}},
                }
            else:
                result = {"type": "succeeded", "message": self._message_json(params, reply, "batch")}
            results.append({"custom_id": req["custom_id"], "result": result})
        batch = Batch(
            id=_new_id("msgbatch"),
            requests=requests,
            results=results,
            created_at=datetime.now(timezone.utc),
            polls_until_ended=self.batch_polls_until_ended,
        )
        if batch.polls_until_ended <= 0:
            batch.ended_at = batch.created_at
        with self._lock:
            self.batches[batch.id] = batch
        return batch

    def _batch_json(self, batch: Batch) -> dict:
        with self._lock:
            n = len(batch.results)
            counts = {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            if batch.ended:
                counts["processing"] = 0
                for r in batch.results:
                    counts[r["result"]["type"]] += 1
            if batch.ended:
                status = "ended"
            elif batch.cancel_initiated_at is not None:
                status = "canceling"
            else:
                status = "in_progress"
            return {
                "id": batch.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": counts,
                "ended_at": _rfc3339(batch.ended_at),
                "created_at": _rfc3339(batch.created_at),
                "expires_at": _rfc3339(batch.created_at + timedelta(hours=24)),
                "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
                "archived_at": None,
                "results_url": f"{self.base_url}/v1/messages/batches/{batch.id}/results" if batch.ended else None,
            }

    def _list_batches(self, request_id: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            live = [b for b in self.batches.values() if not b.deleted]
        data = [self._batch_json(b) for b in reversed(live)]  # newest first, like the API
        page = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return self._json(page, request_id)
