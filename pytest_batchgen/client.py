"""The model client: the official anthropic SDK, async, behind a small interface.

Retries with backoff (429, 5xx, 529, honouring ``retry-after``) are the SDK's; this module
only turns a reply into a :class:`Completion` and an exhausted failure into a
:class:`ModelCallError` carrying the error's type and message. The SDK is imported lazily so
that validate-only runs never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # recording imports httpx2: only where a recorder is built
    from .pacing import Pacer
    from .recording import Recorder

#: The row whose request is in flight in this task; the recorder files interactions under it.
current_call: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("batchgen_current_call")


@dataclass
class CallInfo:
    """Per-request bookkeeping shared between the dispatcher and the recording transport."""

    key: str
    replayed: int = 0
    live: int = 0
    #: a live reply waiting for the client's check before it is recorded (see Recorder.commit)
    pending: list = field(default_factory=list)
    #: the call's ``batchgen_total_timeout`` (an ``asyncio.Timeout``; None on Python 3.10)
    deadline: Any = None


@dataclass(frozen=True)
class Unwritten:
    """A reply's recording, its cassette's whole text, not yet written: the sending process
    hands it to the pytest process, which writes it before the draft (see
    :attr:`~pytest_batchgen.recording.Recorder.hand_over`)."""

    path: Path
    text: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True)
class Completion:
    text: str
    stop_reason: str | None
    usage: Usage
    model: str
    replayed: bool = False
    #: the input of the reply's first ``tool_use`` block (a judge's structured verdict), if any
    tool_input: Any = None
    #: the row's recording opens with this reply to the request as sent: replayed as the
    #: recording's first reply, for the row's first request in this run
    #: (:class:`~pytest_batchgen.cassettes.Played`), or recorded as the first of a new file
    #: (:meth:`~pytest_batchgen.recording.Recorder.record`)
    opens_recording: bool = False
    #: the reply's recording, when the recorder hands it over instead of writing it: whoever
    #: takes the completion writes it before the run goes on (``Dispatcher._attempts``)
    unwritten: Unwritten | None = None


class ModelCallError(Exception):
    """A call that failed for good (after the SDK's retries), or a replay miss."""

    def __init__(self, kind: str, message: str, *, replay_miss: bool = False) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.replay_miss = replay_miss


class RecordingFailed(ModelCallError):
    """The reply came (and is paid for) but its recording could not be written: ``completion``
    is the reply, so that its usage and cost are counted and its text kept; ``error`` why."""

    def __init__(self, completion: Completion, error: OSError) -> None:
        super().__init__("RecordingFailed", f"the reply could not be recorded: {error.strerror or error}")
        self.completion = completion
        self.error = error


T = TypeVar("T")

#: the api_key of a run without one: it never leaves the process (the recorder answers or refuses)
NO_KEY_PLACEHOLDER = "replay-without-a-key"

#: why a run without credentials can only replay (in replay-miss messages)
NO_KEY_REFUSAL = "ANTHROPIC_API_KEY is not set, so this run can only replay"


@dataclass
class ClientSettings:
    """How long and how often one request may be tried.

    ``timeout`` is the read timeout: how long to wait for the reply (a non-streamed message is
    sent whole once generated, so this bounds the generation time, a few minutes at most for
    ``max_tokens`` 8192). Once the reply started, its body must arrive within ``body_timeout``
    (a server that sends half a body and goes silent is a dead connection, not a slow model).
    ``total`` bounds one call, the SDK's retries and backoff included.
    """

    max_retries: int = 2
    timeout: float = 300.0
    api_key: str | None = None
    connect_timeout: float = 10.0
    write_timeout: float = 60.0
    pool_timeout: float = 60.0
    body_timeout: float = 30.0
    total: float | None = 900.0
    #: requests the run may have in flight at once (``--batch-concurrency``): the connection
    #: pool must hold that many, or the requests above it wait for a connection, not a reply
    concurrency: int = 0

    def httpx_timeout(self) -> Any:
        import httpx2

        return httpx2.Timeout(
            self.timeout, connect=self.connect_timeout, write=self.write_timeout, pool=self.pool_timeout
        )


async def _within(awaitable: Awaitable[T], seconds: float, call: CallInfo | None = None) -> T:
    """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``seconds``; ``call`` keeps
    the deadline, which stops while the pacer waits (see :func:`_deadline_paused`).

    ``asyncio.timeout`` (Python 3.11+) bounds it in the caller's own task; ``asyncio.wait_for``
    before 3.12 wraps it in a task of its own, with its callbacks and its context copy: two
    tasks more for every request, in the loop that sends them all."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10: a fixed deadline
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds) as deadline:
        if call is not None:
            call.deadline = deadline
        return await awaitable


def _whole_body(inner: Any, body_timeout: float) -> Any:
    """A transport that reads each reply's body in full, within ``body_timeout`` of its headers.

    httpx's read timeout applies per read, so a body that stalls mid-way would hold the request
    for the whole read timeout, then be retried. A stalled body is an ``httpx2.ReadTimeout``,
    which the SDK retries at once like any other timeout. (A factory: httpx2 is imported only
    when a client is built.)
    """
    import httpx2

    class WholeBody(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            response = await inner.handle_async_request(request)
            stream = cast(httpx2.AsyncByteStream, response.stream)

            async def read() -> bytes:
                return b"".join([part async for part in stream])

            try:
                content = await _within(read(), body_timeout)
            except asyncio.TimeoutError:
                raise httpx2.ReadTimeout(
                    f"the reply's body stalled: not complete {body_timeout:g}s after its headers", request=request
                ) from None
            finally:
                await stream.aclose()  # the connection goes back to the pool (or is dropped)
            # the same response, read: its stream swapped for the bytes, as httpx's client swaps
            # it for its own (a new response would build its headers again, for every reply)
            response.stream = httpx2.ByteStream(content)
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    return WholeBody()


def _paced(inner: Any, pacer: Any) -> Any:
    """A transport that passes each live HTTP attempt through the pacer
    (:class:`pytest_batchgen.pacing.Pacer`): a retry of a refused attempt waits for the
    budgets again, and every reply's status and headers are shown to it.

    It sits under the recorder, so replayed replies never reach it: replay has no limits. The
    SDK's retries pass through it too, so they are paced and observed like first attempts."""
    import httpx2

    class Paced(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            with _deadline_paused():
                await pacer.before_send()
            sent_at = pacer.mark_sent()
            try:
                response = await inner.handle_async_request(request)
            except Exception:
                pacer.attempt_failed()  # no reply: the SDK retries it after a pause
                raise
            pacer.after_send(response.status_code)
            pacer.observe(response.status_code, response.headers, sent_at)
            if not 200 <= response.status_code < 300:
                pacer.attempt_failed()  # the SDK may retry it after a pause
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    return Paced()


def connection_limits(sdk: Any, concurrency: int) -> Any:
    """The connection pool's limits: the SDK's own (what its default client allows), raised
    to ``concurrency`` where that is more.

    The plugin builds the HTTP transport itself (to pace, record and time each attempt), and
    httpx's default pool holds 100 connections and keeps 20 idle: ``--batch-concurrency 150``
    then had 100 requests in flight, and the other 50 waited for a connection, where a slow
    model could keep them past the pool timeout."""
    import httpx2

    def at_least(limit: int | None) -> int | None:
        return None if limit is None else max(limit, concurrency)

    return httpx2.Limits(
        max_connections=at_least(sdk.max_connections),
        max_keepalive_connections=at_least(sdk.max_keepalive_connections),
        keepalive_expiry=sdk.keepalive_expiry,
    )


@contextlib.contextmanager
def _deadline_paused() -> Iterator[None]:
    """Stop the current call's ``batchgen_total_timeout`` clock while the block runs: the pacer's
    wait for the rate limits' budgets (a retry of a refused attempt). That wait is the account's
    pace, not the request's slowness; a request queued before its first attempt waits outside
    the bound too, and one refused in a blind first wave timed out while later rows waited."""
    call = current_call.get(None)
    deadline: Any = getattr(call, "deadline", None)
    when = deadline.when() if deadline is not None else None
    if when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    began = loop.time()
    with contextlib.suppress(RuntimeError):  # expiring already: the call times out as it would
        deadline.reschedule(None)
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):
            deadline.reschedule(when + (loop.time() - began))


class ModelClient:
    """One SDK client for the run; requests are tagged with their row via :data:`current_call`."""

    def __init__(self, settings: ClientSettings, recorder: Recorder | None = None, pacer: Pacer | None = None) -> None:
        import anthropic
        import httpx2

        self._anthropic = anthropic
        self.settings = settings
        self.recorder = recorder
        from .preload import take_tls_context

        limits = connection_limits(anthropic.DEFAULT_CONNECTION_LIMITS, settings.concurrency)
        transport: Any = httpx2.AsyncHTTPTransport(verify=take_tls_context(), limits=limits)
        transport = _whole_body(transport, settings.body_timeout)
        if pacer is not None:
            transport = _paced(transport, pacer)
        if recorder is not None:
            transport = recorder.transport(transport)
        timeout = settings.httpx_timeout()
        self._http = httpx2.AsyncClient(transport=transport, timeout=timeout)
        options: dict[str, Any] = {
            "max_retries": settings.max_retries,
            "timeout": timeout,
            "http_client": self._http,
        }
        self._client = anthropic.AsyncAnthropic(api_key=settings.api_key, **options)
        c = self._client
        no_key = c.api_key in (None, NO_KEY_PLACEHOLDER) and c.auth_token is None and c.credentials is None
        if recorder is not None and no_key:
            # No credentials at all: recorded replies still replay, in every record mode that
            # replays; a request without a recording fails as a replay miss that names the
            # missing key (not the SDK's TypeError), and the placeholder never leaves the process.
            recorder.live_refusal = NO_KEY_REFUSAL
            self._client = anthropic.AsyncAnthropic(api_key=NO_KEY_PLACEHOLDER, **options)
        if recorder is not None:
            recorder.load_all()  # before any request: a corrupt recording is named up front

    def start_afresh(self, key: str) -> bool:
        """The row's replayed attempts ended in failure: forget its recording so that the next
        attempts go out live (True), or False when this run may not record."""
        return self.recorder is not None and self.recorder.start_afresh(key)

    def retry_hint(self, key: str) -> str:
        """How to generate a row again whose replayed attempts ended in failure."""
        return "" if self.recorder is None else self.recorder.retry_hint(key)

    def hold_previous(self, key: str) -> None:
        """The row's drafts go aside until one passes: its file keeps what it holds now until
        :meth:`supersede` (:meth:`~pytest_batchgen.cassettes.Recordings.hold_previous`)."""
        if self.recorder is not None:
            self.recorder.hold_previous(key)

    def supersede(self, key: str) -> None:
        """A new draft replaced the row's output: what :meth:`hold_previous` kept goes."""
        if self.recorder is not None:
            self.recorder.supersede(key)

    def replay(
        self, key: str, params: dict[str, Any], unusable: Callable[[Completion], bool] | None = None
    ) -> Completion | None:
        """The recorded reply to ``params`` (the replay fast path: no SDK), or None when the call
        would go out live. A replay costs nothing, so ``--batch-max-cost`` never stops one: the
        dispatcher and the judge ask here before they apply the cap.

        A recorded reply that is ``unusable`` (a judge's answer without a verdict, recorded
        before :meth:`complete` refused such answers) is dropped from the recording where this
        run may record, so that the call goes out live and its new reply is recorded instead;
        else it is the reply (a run that may not record cannot ask again)."""
        if self.recorder is None:
            return None
        url = str(self._client.base_url).rstrip("/") + "/v1/messages"  # the path the SDK posts to
        while True:
            played = self.recorder.replay_directly(key, url, params)
            if played is None:
                return None
            completion = completion_from_body(played.body, replayed=True, opens_recording=played.opens_recording)
            if unusable is None or not unusable(completion) or not self.recorder.drop(key, played.position):
                return completion

    async def complete(
        self, key: str, params: dict[str, Any], unusable: Callable[[Completion], bool] | None = None
    ) -> Completion:
        """The reply to ``params``, recorded under ``key``, unless ``unusable(completion)``: a
        reply the caller cannot use (a judge's answer with no verdict) is returned, so that
        what it cost is counted, and not recorded, so that no later run replays it for ever."""
        replayed = self.replay(key, params, unusable)
        if replayed is not None:
            return replayed
        info = CallInfo(key)
        token = current_call.set(info)
        try:
            # the reply's JSON, not the SDK's model of it: the plugin reads a few fields, which
            # it checks itself (message_problem); building the SDK's pydantic objects was an
            # eighth of the sending process's work a reply
            create = self._client.messages.with_raw_response.create(**params)
            raw = await (_within(create, self.settings.total, info) if self.settings.total else create)
            content = await raw.read()
        except asyncio.TimeoutError:
            raise ModelCallError(
                "Timeout", f"no reply within {self.settings.total:g}s (one request, the SDK's retries included)"
            ) from None
        except self._anthropic.APIStatusError as exc:
            raise ModelCallError(type(exc).__name__, _status_message(exc)) from None
        except self._anthropic.APIError as exc:
            cause = exc.__cause__
            detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise ModelCallError(type(exc).__name__, server_text(f"{exc}{detail}")) from None
        except self._anthropic.AnthropicError as exc:
            miss = getattr(exc, "replay_miss", False)
            raise ModelCallError(type(exc).__name__, str(exc), replay_miss=miss) from None
        finally:
            current_call.reset(token)
        problem: str | None
        try:
            body = json.loads(content)
        except ValueError as exc:  # a 2xx body that is not JSON: a gateway's page, a cut-off body
            problem = f"it is not JSON ({exc}): {content[:80].decode('utf-8', 'replace')!r}"
        except RecursionError:  # ``[[[...`` deeper than the interpreter's stack: no message either
            problem = f"it is not JSON (nested too deep to read): {content[:80].decode('utf-8', 'replace')!r}"
        else:
            problem = message_problem(body)
        if problem:
            info.pending = []  # never recorded: it would be replayed, and fail, forever
            raise ModelCallError("InvalidReply", f"the API's reply is not a message: {problem}")
        completion = completion_from_body(body, replayed=info.live == 0 and info.replayed > 0)
        if self.recorder is not None:
            if unusable is not None and unusable(completion):
                info.pending = []
            try:
                opens = self.recorder.commit(info)  # written before the run goes on (fsynced at its end)
            except OSError as exc:  # a read-only cassette folder, a full disk: the reply is still paid for
                raise RecordingFailed(completion, exc) from None
            unwritten = self.recorder.take_unwritten(info.key)
            if opens or unwritten is not None:
                completion = replace(completion, opens_recording=opens, unwritten=unwritten)
        return completion

    def release(self, key: str) -> None:
        """The row ended: its recording need not stay in memory."""
        if self.recorder is not None:
            self.recorder.release(key)

    async def aclose(self) -> None:
        await self._client.close()


def completion_from_body(body: dict[str, Any], *, replayed: bool, opens_recording: bool = False) -> Completion:
    """A Messages API reply body (already checked to be a message) as the SDK path builds it."""
    text = "".join(
        block.get("text") or "" for block in body["content"] if isinstance(block, dict) and block.get("type") == "text"
    )
    u = body["usage"]
    usage = Usage(
        u.get("input_tokens") or 0,
        u.get("output_tokens") or 0,
        u.get("cache_creation_input_tokens") or 0,
        u.get("cache_read_input_tokens") or 0,
    )
    tool_input = next(
        (b.get("input") for b in body["content"] if isinstance(b, dict) and b.get("type") == "tool_use"), None
    )
    return Completion(
        text,
        body.get("stop_reason"),
        usage,
        body.get("model", ""),
        replayed=replayed,
        tool_input=tool_input,
        opens_recording=opens_recording,
    )


#: the stop reasons of a reply the model finished: its draft is checked (null: a reply that
#: states none, as a message recorded by hand may)
FINISHED = frozenset({None, "end_turn", "stop_sequence"})

#: the stop reasons of a reply a limit cut off: its draft is partial, written and not checked;
#: every other one but ``refusal`` (``pause_turn``, ``tool_use`` where no tool was offered, one
#: the API adds later) is handled so too, as a reply that may be unfinished
CUT_OFF = ("max_tokens", "model_context_window_exceeded")

#: what a stop reason looks like: a word such as ``end_turn``
_STOP_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: the usage fields a reply states; the first two every reply states, the cache ones may be null
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

#: no reply counts more tokens than this (a hundred times the largest context window): a larger
#: count is not one, and it would be summed into the run's tokens and cost
MAX_TOKEN_COUNT = 100_000_000


def message_problem(message: Any) -> str | None:
    """Why a reply's JSON body is not a message this plugin can use, or None when it is (the
    plugin reads the replies' JSON itself, not the SDK's models of them, which the SDK builds
    without checking them). The reason quotes the reply, so it is made safe to show
    (:func:`server_text`).

    One rule for every reply, live (not used, never recorded) and recorded (a corrupt
    recording): its ``type`` is ``message``; its ``content`` a list of blocks, each with a
    string ``type``, a text block with a string ``text``; its ``stop_reason`` null or a word
    such as ``end_turn`` (what it means is the dispatcher's: :data:`FINISHED`, :data:`CUT_OFF`);
    its ``usage`` states ``input_tokens`` and ``output_tokens``, and each count it states is a
    whole number from 0 to :data:`MAX_TOKEN_COUNT` (a string, a float, a negative or a trillion
    tokens broke the sums of the summary and the report, or showed a 300-digit cost); and every
    string it holds is text (see :func:`_not_text`)."""
    problem = _problem(message)
    return None if problem is None else server_text(problem)


def _problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return f"got {type(message).__name__} {str(message)[:80]!r}"
    kind = message.get("type")
    if kind != "message":
        return f"type is {kind!r}, not 'message'"
    content = message.get("content")
    if not isinstance(content, list):
        return f"content is {type(content).__name__}, not a list"
    for n, block in enumerate(content):
        if not isinstance(block, dict):
            return f"content[{n}] is {type(block).__name__} {str(block)[:40]!r}, not a content block"
        kind = block.get("type")
        if not isinstance(kind, str):
            return f"content[{n}] has no type"
        text = block.get("text")
        if kind == "text" and not isinstance(text, str):
            return f"content[{n}] is a text block whose text is {type(text).__name__}, not a string"
    stop = message.get("stop_reason")
    if stop is not None and not isinstance(stop, str):
        return f"stop_reason is {repr(stop)[:40]}, not a string"
    if stop is not None and not _STOP_REASON.fullmatch(stop):
        return f"stop_reason is {repr(stop)[:40]}, not a stop reason (a word such as 'end_turn')"
    usage = message.get("usage")
    if usage is None:
        return "it has no usage"
    if not isinstance(usage, dict):
        return f"usage is {type(usage).__name__}, not an object"
    for name in USAGE_FIELDS:
        count = usage.get(name)
        if count is None:
            if name in USAGE_FIELDS[:2]:
                return f"usage.{name} is missing"
            continue
        if isinstance(count, bool) or not isinstance(count, int):
            return f"usage.{name} is {repr(count)[:40]}, not a whole number of tokens"
        if not 0 <= count <= MAX_TOKEN_COUNT:
            return f"usage.{name} is {count}, not a token count (0 to {MAX_TOKEN_COUNT:,})"
    return _not_text(message)


def _not_text(message: dict[str, Any]) -> str | None:
    """Where a reply holds a string that is not text, or a number that is not JSON, or None.

    A lone surrogate (the JSON escape ``\\ud800``, or the bytes of one, which ``json.loads``
    lets through) no UTF-8 file can hold. Such a reply's draft, its recording or a note quoting
    it could not be written: the pytest process's thread that was to write the draft died, and
    the run waited for it for ever. (A surrogate pair, an emoji as ``json.dumps`` escapes it,
    decodes to one character: it is text.) ``NaN``, ``Infinity`` and ``-Infinity``, which
    ``json.loads`` reads too, are in no JSON: a judge's ``"line": Infinity`` raised out of its
    check, and again in every replay of its recording."""
    stack: list[tuple[str, Any]] = [("", message)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            shown = "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
            return f"{where or 'it'} is {shown}, which is no JSON number"
        if isinstance(value, str):
            bad = _unencodable(value)
            if bad is not None:
                return f"{where or 'it'} holds a lone surrogate ({bad!r}), which is not text"
        elif isinstance(value, dict):
            for key, item in value.items():
                bad = _unencodable(key) if isinstance(key, str) else None
                if bad is not None:
                    return f"{where or 'it'} has a key holding a lone surrogate ({bad!r}), which is not text"
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{n}]", item) for n, item in enumerate(value))
    return None


def _unencodable(text: str) -> str | None:
    """The first character of ``text`` that UTF-8 cannot encode (a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def _status_message(exc: Any) -> str:
    """An API error as the row's error: its status, then what the server said of it (made safe
    by :func:`server_text`): the error's type and message, or a body that is not the API's
    JSON error (an HTML page, bytes) as it came, not the SDK's message around it."""
    status = getattr(exc, "status_code", "?")
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            said = server_text(f"{err.get('type', '')}: {err['message']}")
            return f"HTTP {status} {said}".replace("  ", " ")
    said = body if isinstance(body, str) and body else str(exc)
    return f"HTTP {status}: {server_text(said)}"


#: how much of a server's text a row's error keeps (:func:`server_text`)
SERVER_TEXT_LIMIT = 400


def server_text(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """Text a server sent (an error's message, a body), as the plugin keeps it in a row's error
    and so in the plan's notes, the terminal, the report: the characters that are not printable
    escaped as ``repr`` escapes them (control characters, a NUL, an escape sequence's ESC, a
    newline, a lone surrogate that no UTF-8 file can hold), the rest as it came; its first
    ``limit`` characters, then an ellipsis and its whole length. A 404's bytes put a NUL in the
    plan, a 400's escape sequences reached the terminal, a 401's 100 KB page the notes, and a
    lone surrogate ended the session in a traceback writing them."""
    if len(text) <= limit and text.isprintable():
        return text
    kept: list[str] = []
    size = 0
    for char in text:
        if size >= limit:
            return "".join(kept) + f"… ({len(text):,} characters)"
        if not char.isprintable():
            char = repr(char)[1:-1]  # a printable one never gets here, a quote included
        kept.append(char)
        size += len(char)
    return "".join(kept)
