"""Tests for the FakeAnthropic fixture, driven through the REAL anthropic SDK.

What these tests pin down about the SDK (anthropic 2.14.0 on httpx2), read from
anthropic/_base_client.py and anthropic/_constants.py:

* DEFAULT_MAX_RETRIES = 2, i.e. up to 3 HTTP attempts per call.
* ``_should_retry``: an explicit ``x-should-retry: true/false`` header wins;
  otherwise 408, 409, 429 and every status >= 500 (so 500 and 529) are retried.
  The fake never sends ``x-should-retry`` (the real API doesn't for these).
* ``_calculate_retry_timeout``: ``retry-after-ms`` is read first, then
  ``retry-after`` as (float) seconds, then as an HTTP date.  The value is used
  only if it is > 0; there is NO upper cap except ~49 days (older SDKs ignored
  values above 60 s; this one sleeps for whatever the server says).
  ``retry-after: 0`` (and ``retry-after-ms: 0``) therefore does NOT mean
  "retry immediately": it falls back to exponential backoff
  min(0.5 * 2**n, 8.0) * (1 - 0.25*random()), i.e. 0.375-0.5 s for the first
  retry, 0.75-1.0 s for the second.  Fast tests use ``retry_after=0.01``
  (sent as ``retry-after: 0.01``) or ``retry-after-ms``.
* The SDK sends ``x-stainless-retry-count: <n>`` on each attempt.
* An ``api_key`` is sent as ``Authorization: Bearer <key>``; no ``x-api-key``
  header is sent by this SDK version.
* ``client.messages.batches.results(id)`` first calls ``retrieve(id)`` itself
  (one more GET that counts as a poll) and then GETs ``results_url``
  verbatim (absolute URL), decoding the body as JSON Lines.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import anthropic
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from fakeapi import FakeAnthropic, Reply

MODEL = "claude-haiku-4-5"
FAST = 0.01  # retry-after seconds small enough to keep retries fast


@pytest.fixture
def fake():
    """The bare server, with its own default reply: these tests drive it with the SDK directly,
    so this fixture replaces conftest's ``fake`` (which adds a per-row router and the environment)."""
    with FakeAnthropic() as server:
        yield server


def client(fake: FakeAnthropic, max_retries: int = 2) -> anthropic.Anthropic:
    # strict validation makes the SDK reject any response that doesn't match its types
    return anthropic.Anthropic(
        base_url=fake.base_url, api_key="test-key", max_retries=max_retries, _strict_response_validation=True
    )


def aclient(fake: FakeAnthropic, max_retries: int = 2) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="test-key", max_retries=max_retries, _strict_response_validation=True
    )


def ask(c: anthropic.Anthropic, prompt: str, model: str = MODEL, **kw) -> Message:
    return c.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}], **kw)


def raw_http(fake: FakeAnthropic, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(fake.base_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ----------------------------------------------------------------- messages


def test_success_shape_and_request_log(fake):
    fake.script("Quorum", Reply.ok("# Quorum\n\nA majority of replicas."))
    c = client(fake)
    raw = c.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Write about Quorum please"}]
    )
    msg = raw.parse()
    assert isinstance(msg, Message)
    assert msg.id.startswith("msg_")
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "# Quorum\n\nA majority of replicas."
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == len("Write about Quorum please") // 4
    assert msg.usage.output_tokens == len("# Quorum\n\nA majority of replicas.") // 4
    assert msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.cache_read_input_tokens == 0
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"

    fake.wait_idle()
    (logged,) = fake.requests
    assert (logged.method, logged.path, logged.status) == ("POST", "/v1/messages", 200)
    assert logged.body["model"] == MODEL and logged.body["max_tokens"] == 256
    assert json.loads(logged.raw) == logged.body
    assert logged.started <= logged.finished
    assert logged.headers["anthropic-version"]
    # The API key is logged.  SDK 2.14 sends it as a Bearer token, not x-api-key:
    assert logged.headers["authorization"] == "Bearer test-key"
    assert "x-api-key" not in logged.headers
    assert logged.api_key == "test-key"
    assert logged.last_user_text == "Write about Quorum please"
    assert fake.messages_requests() == [logged]


def test_x_api_key_header_is_logged_and_accepted(fake):
    c = anthropic.Anthropic(
        base_url=fake.base_url, api_key="test-key", default_headers={"x-api-key": "test-key"}, max_retries=0
    )
    assert ask(c, "hi").content[0].text == "ok"
    assert fake.requests[0].headers["x-api-key"] == "test-key"
    assert fake.requests[0].api_key == "test-key"


def test_default_is_settable_and_receives_body(fake):
    fake.default = lambda body: Reply.ok(body["messages"][-1]["content"].upper())
    assert ask(client(fake), "shout").content[0].text == "SHOUT"


def test_script_order_repeat_last_and_first_match_wins(fake):
    fake.script("alpha", Reply.ok("one"), Reply.ok("two"))
    fake.script("alpha beta", Reply.ok("never"))
    c = client(fake)
    assert [ask(c, "alpha beta").content[0].text for _ in range(3)] == ["one", "two", "two"]
    assert ask(c, "gamma").content[0].text == "ok"  # unmatched -> default


def test_script_matches_last_user_message_text_blocks(fake):
    fake.script("needle", Reply.ok("found"))
    c = client(fake)
    msg = c.messages.create(
        model=MODEL,
        max_tokens=10,
        messages=[
            {"role": "user", "content": "no match here"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "the needle"}]},
        ],
    )
    assert msg.content[0].text == "found"
    assert ask(c, "needle? no: the last *user* message is what counts").content[0].text == "found"


@pytest.mark.parametrize(
    "first, exc_type",
    [
        (Reply.rate_limited(retry_after=FAST), anthropic.RateLimitError),
        (Reply.overloaded(retry_after=FAST), anthropic.OverloadedError),
        (Reply.server_error(retry_after=FAST), anthropic.InternalServerError),
    ],
    ids=["429", "529", "500"],
)
def test_retryable_error_then_success_is_retried_by_sdk(fake, first, exc_type):
    fake.script("retry me", first, Reply.ok("recovered"))
    msg = ask(client(fake), "retry me")
    assert msg.content[0].text == "recovered"
    fake.wait_idle()
    # honoured the tiny retry-after: no 0.375-0.5 s exponential backoff
    assert fake.requests[1].started - fake.requests[0].started < 0.35
    assert [r.status for r in fake.requests] == [first.status, 200]
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1"]
    assert "x-should-retry" not in (fake.requests[0].reply.headers or {})


def test_error_body_shape(fake):
    fake.script("limit", Reply.rate_limited(retry_after=7))
    status, headers, body = raw_http(
        fake,
        "POST",
        "/v1/messages",
        json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "limit"}]}).encode(),
        {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 429
    assert headers["retry-after"] == "7"
    assert headers["content-type"] == "application/json"
    assert "x-should-retry" not in headers
    data = json.loads(body)
    assert data["type"] == "error"
    assert data["error"]["type"] == "rate_limit_error" and data["error"]["message"]
    assert data["request_id"] == headers["request-id"] and data["request_id"].startswith("req_")


def test_rate_limit_exhausted_raises_with_parsed_error(fake):
    fake.script("busy", Reply.rate_limited(retry_after=FAST))
    with pytest.raises(anthropic.RateLimitError) as info:
        ask(client(fake, max_retries=1), "busy")
    err = info.value
    assert err.status_code == 429 and err.type == "rate_limit_error"
    assert err.request_id and err.request_id.startswith("req_")
    assert err.response.headers["retry-after"] == "0.01"
    assert len(fake.requests) == 2


def test_500_beyond_max_retries_raises_internal_server_error(fake):
    fake.script("broken", Reply.server_error(retry_after=FAST))
    with pytest.raises(anthropic.InternalServerError) as info:
        ask(client(fake, max_retries=2), "broken")
    assert info.value.status_code == 500 and info.value.type == "api_error"
    assert len(fake.requests) == 3  # 1 attempt + max_retries


def test_529_beyond_max_retries_raises_overloaded_error(fake):
    fake.script("melting", Reply.overloaded(retry_after=FAST))
    with pytest.raises(anthropic.OverloadedError) as info:  # subclass of InternalServerError
        ask(client(fake, max_retries=1), "melting")
    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.type == "overloaded_error"
    assert len(fake.requests) == 2


def test_invalid_request_is_not_retried(fake):
    fake.script("bad", Reply.invalid_request("prompt is too long"))
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(client(fake), "bad")
    assert info.value.type == "invalid_request_error"
    assert info.value.api_message == "prompt is too long"
    assert len(fake.requests) == 1


def test_retry_after_zero_falls_back_to_sdk_backoff(fake):
    # retry-after: 0 is not > 0, so the SDK uses 0.5 s * (0.75..1.0) instead.
    fake.script("zero", Reply.rate_limited(retry_after=0), Reply.ok())
    ask(client(fake), "zero")
    first, second = fake.requests
    assert first.reply.retry_after == 0
    assert 0.3 <= second.started - first.started < 1.5


def test_retry_after_ms_header_is_preferred(fake):
    fake.script("ms", Reply.rate_limited(retry_after=30, headers={"retry-after-ms": "10"}), Reply.ok())
    ask(client(fake), "ms")
    first, second = fake.requests
    assert second.started - first.started < 0.35  # the 30 s retry-after was not used


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressing_gateway_compresses_what_the_request_accepts(fake, coding):
    """The SDK sends ``accept-encoding: gzip, deflate``; the body comes compressed, which httpx
    decodes; a request that accepts no coding gets the body as it is."""
    fake.default = lambda body: Reply.ok("# Quorum", content_encoding=coding)
    raw = client(fake).messages.with_raw_response.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Quorum"}]
    )
    assert raw.headers["content-encoding"] == coding
    assert raw.parse().content[0].text == "# Quorum"
    fake.wait_idle()
    sent = fake.requests[0]
    assert sent.headers["accept-encoding"] == "gzip, deflate"
    assert sent.response_headers is not None and sent.response_headers["content-encoding"] == coding
    assert int(sent.response_headers["content-length"]) < len(raw.http_response.content)  # (compressed)

    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}).encode()
    status, headers, plain = raw_http(
        fake, "POST", "/v1/messages", body, {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    )
    assert status == 200 and "Content-Encoding" not in headers
    assert json.loads(plain)["content"][0]["text"] == "# Quorum"


def test_stop_reasons_max_tokens_and_refusal(fake):
    fake.script("long", Reply.truncated("half of the ans"))
    fake.script("nope", Reply.refused())
    fake.script("partial", Reply.refused("I started but"))
    c = client(fake)
    msg = ask(c, "long essay")
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "half of the ans"
    msg = ask(c, "nope")
    assert msg.stop_reason == "refusal" and msg.content == []
    assert msg.stop_details is not None and msg.stop_details.type == "refusal"
    msg = ask(c, "partial")
    assert msg.stop_reason == "refusal" and msg.content[0].text == "I started but"


def test_usage_override(fake):
    fake.script("tok", Reply.truncated("x", usage={"output_tokens": 256}))
    assert ask(client(fake), "tok").usage.output_tokens == 256


def test_prompt_cache_accounting(fake):
    c = client(fake)
    rules = "You write glossary entries. " * 40  # 1120 chars -> 280 tokens
    system = [
        {"type": "text", "text": rules, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "uncached tail"},
    ]
    first = ask(c, "Term: Quorum", system=system)
    second = ask(c, "Term: Backpressure", system=system)
    assert first.usage.cache_creation_input_tokens == 280
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 280
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == 280
    # the rest (uncached tail + user message) is plain input either way
    assert first.usage.input_tokens == second.usage.input_tokens - 1 == len("uncached tail") // 4 + 3
    # the prefix key includes the model, and a plain-string system is never cached
    assert ask(c, "x", system=system, model="other").usage.cache_creation_input_tokens == 280
    assert ask(c, "x", system=rules).usage.cache_read_input_tokens == 0
    # 1h ttl is reported separately
    sys1h = [{"type": "text", "text": "other rules " * 20, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    usage = ask(c, "y", system=sys1h).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == usage.cache_creation_input_tokens == 60


def test_validation_errors_like_the_api(fake):
    c = client(fake, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model=MODEL, max_tokens=10, messages=[])
    status, _, body = raw_http(fake, "POST", "/v1/messages", b"{}", {"anthropic-version": "2023-06-01"})
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"


EMPTY_TURN = "all messages must have non-empty content except for the optional final assistant message"


@pytest.mark.parametrize(
    "empty", ["", [], [{"type": "text", "text": ""}]], ids=["empty-string", "no-blocks", "empty-text-block"]
)
def test_an_empty_turn_before_the_last_is_refused_like_the_api(fake, empty):
    """A repair request that pastes an empty draft as the assistant turn is refused, as the
    real API refuses it; an empty final assistant turn (a prefill) is not."""
    c = client(fake, max_retries=0)
    turns = [
        {"role": "user", "content": "write it"},
        {"role": "assistant", "content": empty},
        {"role": "user", "content": "fix it"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        c.messages.create(model=MODEL, max_tokens=10, messages=turns)
    assert info.value.status_code == 400
    assert info.value.body["error"] == {"type": "invalid_request_error", "message": f"messages.1: {EMPTY_TURN}"}
    assert ask(c, "fine").content  # a message with content is answered
    c.messages.create(model=MODEL, max_tokens=10, messages=turns[:1] + [{"role": "assistant", "content": ""}])


def test_unknown_path_is_404_json(fake):
    status, headers, body = raw_http(fake, "GET", "/v2/nothing")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client(fake).get("/v1/nothing", cast_to=object)
    assert len(fake.requests) == 2  # 404 is not retried


def test_latency_applies_to_every_messages_request(fake):
    fake.latency = 0.15
    t0 = time.monotonic()
    ask(client(fake), "slow")
    assert time.monotonic() - t0 >= 0.15
    fake.wait_idle()
    assert fake.requests[0].duration >= 0.15


def test_base_url_from_environment(fake, monkeypatch):
    for key, value in fake.env.items():
        monkeypatch.setenv(key, value)
    assert ask(anthropic.Anthropic(max_retries=0), "env").content[0].text == "ok"
    assert fake.requests[0].api_key == "test-key"


def test_reset_log(fake):
    ask(client(fake), "one")
    fake.wait_idle()
    assert len(fake.requests) == 1 and fake.max_in_flight == 1
    fake.reset_log()
    assert fake.requests == [] and fake.max_in_flight == 0


# ----------------------------------------------------------------- concurrency


def test_max_in_flight_counts_concurrent_async_requests(fake):
    fake.default = lambda body: Reply.ok("slow", delay=0.3)

    async def main():
        c = aclient(fake)
        t0 = time.monotonic()
        msgs = await asyncio.gather(
            *(
                c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(4)
            )
        )
        await c.close()
        return msgs, time.monotonic() - t0

    msgs, elapsed = asyncio.run(main())
    assert [m.content[0].text for m in msgs] == ["slow"] * 4
    assert fake.max_in_flight == 4
    assert elapsed < 1.1  # overlapped, not 4 * 0.3


def test_max_in_flight_respects_client_semaphore(fake):
    fake.default = lambda body: Reply.ok("slow", delay=0.3)

    async def main():
        c = aclient(fake)
        sem = asyncio.Semaphore(2)

        async def one(i):
            async with sem:
                return await c.messages.create(
                    model=MODEL, max_tokens=10, messages=[{"role": "user", "content": f"q{i}"}]
                )

        msgs = await asyncio.gather(*(one(i) for i in range(4)))
        await c.close()
        return msgs

    assert len(asyncio.run(main())) == 4
    assert fake.max_in_flight == 2
    assert len(fake.requests) == 4


# ----------------------------------------------------------------- batches


def batch_requests(*prompts: str) -> list[dict]:
    return [
        {
            "custom_id": f"req-{i}",
            "params": {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": p}]},
        }
        for i, p in enumerate(prompts)
    ]


def test_batch_create_retrieve_results_round_trip(fake):
    fake.script("Quorum", Reply.ok("# Quorum", delay=5))  # delay is ignored for batch entries
    fake.script("Fencing", Reply.server_error())
    fake.script("Vector", Reply.truncated("# Vector cl"))
    c = client(fake)
    t0 = time.monotonic()
    batch = c.messages.batches.create(requests=batch_requests("Quorum", "Fencing", "Vector"))
    assert time.monotonic() - t0 < 1
    assert isinstance(batch, MessageBatch)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.results_url is None and batch.ended_at is None
    assert batch.request_counts.processing == 3 and batch.request_counts.succeeded == 0
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    ended = c.messages.batches.retrieve(batch.id)  # batch_polls_until_ended == 1
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url == f"{fake.base_url}/v1/messages/batches/{batch.id}/results"
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 2, 1, 0, 0)

    results = {r.custom_id: r for r in c.messages.batches.results(batch.id)}
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in results.values())
    assert results["req-0"].result.type == "succeeded"
    assert results["req-0"].result.message.content[0].text == "# Quorum"
    assert results["req-0"].result.message.usage.service_tier == "batch"
    assert results["req-1"].result.type == "errored"
    assert results["req-1"].result.error.type == "error"
    assert results["req-1"].result.error.error.type == "api_error"
    assert results["req-2"].result.message.stop_reason == "max_tokens"

    paths = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests]
    # results() re-retrieves the batch before fetching results_url
    assert paths == [("POST", "batches"), ("GET", batch.id), ("GET", batch.id), ("GET", "results")]
    assert fake.requests[-1].headers["accept"] == "application/binary"


def test_batch_polls_until_ended_and_async_results(fake):
    fake.batch_polls_until_ended = 2

    async def main():
        c = aclient(fake)
        batch = await c.messages.batches.create(requests=batch_requests("a", "b"))
        polls = [(await c.messages.batches.retrieve(batch.id)).processing_status for _ in range(2)]
        results = [r async for r in await c.messages.batches.results(batch.id)]
        listed = [b.id async for b in c.messages.batches.list()]
        await c.close()
        return batch, polls, results, listed

    batch, polls, results, listed = asyncio.run(main())
    assert polls == ["in_progress", "ended"]
    assert sorted(r.custom_id for r in results) == ["req-0", "req-1"]
    assert listed == [batch.id]


def test_batch_results_before_end_and_unknown_batch(fake):
    fake.batch_polls_until_ended = 5
    c = client(fake, max_retries=0)
    batch = c.messages.batches.create(requests=batch_requests("a"))
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        c.messages.batches.results(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        c.messages.batches.retrieve("msgbatch_nope")


def test_batch_cancel(fake):
    c = client(fake)
    batch = c.messages.batches.create(requests=batch_requests("a", "b"))
    assert c.messages.batches.cancel(batch.id).processing_status == "canceling"
    ended = c.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
    assert {r.result.type for r in c.messages.batches.results(batch.id)} == {"canceled"}


# ----------------------------------------------------------------- lifecycle


def test_stop_is_prompt_with_request_in_flight_and_idle_keepalive():
    fake = FakeAnthropic().start()
    c = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0, timeout=10)
    ask(c, "warm up keep-alive connection")
    fake.script("hang", Reply.ok("late", delay=30))
    errors: list[BaseException] = []

    def worker():
        try:
            ask(c, "hang")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    t = threading.Thread(target=worker)
    t.start()
    while len(fake.requests) < 2 or fake.in_flight == 0:
        time.sleep(0.005)
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(timeout=5)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], anthropic.APIConnectionError)
    fake.stop()  # idempotent
