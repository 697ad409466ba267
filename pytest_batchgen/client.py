"""The model client: the official anthropic SDK, async, behind a small interface.

Retries with backoff (429, 5xx, 529, honouring ``retry-after``) are the SDK's; this module
only turns a reply into a :class:`Completion` and an exhausted failure into a
:class:`ModelCallError` carrying the error's type and message. The SDK is imported lazily so
that validate-only runs never load it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

#: The row whose request is in flight in this task; the recorder files interactions under it.
current_call: contextvars.ContextVar["CallInfo"] = contextvars.ContextVar("batchgen_current_call")


@dataclass
class CallInfo:
    """Per-request bookkeeping shared between the dispatcher and the recording transport."""

    key: str
    replayed: int = 0
    live: int = 0


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
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


class ModelCallError(Exception):
    """A call that failed for good (after the SDK's retries), or a replay miss."""

    def __init__(self, kind: str, message: str, *, replay_miss: bool = False) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.replay_miss = replay_miss


#: vcrpy's record modes, as ``--batch-record-mode`` takes them
RECORD_MODES = ("none", "once", "new_episodes", "all")


@dataclass
class ClientSettings:
    max_retries: int = 2
    timeout: float = 600.0
    api_key: str | None = None


class ModelClient:
    """One SDK client for the run; requests are tagged with their row via :data:`current_call`."""

    def __init__(self, settings: ClientSettings, recorder: Any | None = None) -> None:
        import anthropic
        import httpx2

        self._anthropic = anthropic
        transport: Any = httpx2.AsyncHTTPTransport()
        if recorder is not None:
            transport = recorder.transport(transport)
        self._http = httpx2.AsyncClient(transport=transport, timeout=settings.timeout)
        options: dict[str, Any] = {
            "max_retries": settings.max_retries,
            "timeout": settings.timeout,
            "http_client": self._http,
        }
        self._client = anthropic.AsyncAnthropic(api_key=settings.api_key, **options)
        c = self._client
        if recorder is not None and c.api_key is None and c.auth_token is None and c.credentials is None:
            # No credentials at all: recorded replies still replay, in every record mode that
            # replays; a request without a recording fails as a replay miss that names the
            # missing key (not the SDK's TypeError), and the placeholder never leaves the process.
            recorder.live_refusal = "ANTHROPIC_API_KEY is not set, so this run can only replay"
            self._client = anthropic.AsyncAnthropic(api_key="replay-without-a-key", **options)

    async def complete(self, key: str, params: dict[str, Any]) -> Completion:
        info = CallInfo(key)
        token = current_call.set(info)
        try:
            message = await self._client.messages.create(**params)
        except self._anthropic.APIStatusError as exc:
            raise ModelCallError(type(exc).__name__, _status_message(exc)) from None
        except self._anthropic.APIError as exc:
            cause = exc.__cause__
            detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise ModelCallError(type(exc).__name__, f"{exc}{detail}") from None
        except self._anthropic.AnthropicError as exc:
            miss = getattr(exc, "replay_miss", False)
            raise ModelCallError(type(exc).__name__, str(exc), replay_miss=miss) from None
        finally:
            current_call.reset(token)
        text = "".join(getattr(block, "text", "") for block in message.content if block.type == "text")
        u = message.usage
        usage = Usage(
            u.input_tokens or 0,
            u.output_tokens or 0,
            getattr(u, "cache_creation_input_tokens", 0) or 0,
            getattr(u, "cache_read_input_tokens", 0) or 0,
        )
        return Completion(text, message.stop_reason, usage, message.model, replayed=info.live == 0 and info.replayed > 0)

    async def aclose(self) -> None:
        await self._client.close()


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {exc.status_code} {err.get('type', '')}: {err['message']}".replace("  ", " ")
    return f"HTTP {getattr(exc, 'status_code', '?')}: {exc}"
