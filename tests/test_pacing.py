"""Pacing at the account's limit (issue #12): pytest_batchgen/pacing.py and its wiring.

Unit tests of the header parsing and the pacer's arithmetic run on injected clocks, without a
server; a property test plays a server's token bucket against the pacer. End to end, runs go
through the real SDK to the loopback server with its rate limits on (tests/fakeapi.py
``RateLimits``, a short window standing for the minute): what is counted is at the server (the
429s its limits caused, what it admitted). No assertion is on time.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from collections import deque
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import yaml  # noqa: F401  (pytester restores sys.modules: see tests/test_init.py)
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeapi import RateLimits
from genhelpers import Reply, draft, router, rows_for
from pytest_batchgen.client import Usage
from pytest_batchgen import limitstore
from pytest_batchgen.limitstore import KnownBudget
from pytest_batchgen.pacing import (
    SendingStopped,
    RATE_MARGIN,
    Bucket,
    Budget,
    Cost,
    Pacer,
    estimate_cost,
    parse_headers,
    parse_retry_after,
    parse_rfc3339,
)
from pytest_batchgen.report import Progress

T0 = 1_800_000_000.0  # a wall-clock second


class Clock:
    """Monotonic and wall clocks that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now

    def iso(self, monotonic: float, whole: bool = False) -> str:
        when = datetime.fromtimestamp(T0 + monotonic, timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ" if whole else "%Y-%m-%dT%H:%M:%S.%fZ")


def headers(clock: Clock, **budgets: tuple[float, float, float]) -> dict[str, str]:
    """``kind=(limit, remaining, seconds to full)`` -> the API's headers."""
    out = {}
    for kind, (limit, remaining, full_in) in budgets.items():
        family = kind.replace("_", "-")
        out[f"anthropic-ratelimit-{family}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{family}-remaining"] = str(remaining)
        out[f"anthropic-ratelimit-{family}-reset"] = clock.iso(clock.now + full_in)
    return out


# -- parsing ------------------------------------------------------------------------------------


def test_every_family_of_headers_is_read_case_insensitively():
    info = parse_headers(
        {
            "Anthropic-RateLimit-Requests-Limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-11-29T18:00:01Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2026-11-29T18:00:01.500000Z",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": "2026-11-29T18:00:30+00:00",
            "anthropic-ratelimit-tokens-limit": "8000",
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": "2026-11-29T18:00:30Z",
            "retry-after": "12",
        }
    )
    assert [b.kind for b in info.budgets] == ["requests", "input_tokens", "output_tokens", "tokens"]
    requests = info.budget("requests")
    assert (requests.limit, requests.remaining) == (50, 49)
    assert requests.reset == datetime(2026, 11, 29, 18, 0, 1, tzinfo=timezone.utc)
    assert not requests.reset_precise  # whole seconds: +-1 s
    assert info.budget("input_tokens").reset_precise
    assert info.budget("output_tokens").remaining == 0
    assert info.retry_after == 12


def test_unusable_values_are_left_out():
    info = parse_headers(
        {
            "anthropic-ratelimit-requests-limit": "lots",
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-input-tokens-limit": "100",  # no remaining
            "anthropic-ratelimit-output-tokens-limit": "100",
            "anthropic-ratelimit-output-tokens-remaining": "150",  # more than the limit: clamped
            "anthropic-ratelimit-output-tokens-reset": "yesterday",
        }
    )
    assert [b.kind for b in info.budgets] == ["output_tokens"]
    assert info.budget("output_tokens").remaining == 100 and info.budget("output_tokens").reset is None
    assert info.retry_after is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the SDK prefers the milliseconds
        ({"retry-after": "Sat, 29 Nov 2026 18:00:10 GMT"}, 10.0),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after(given, expected):
    now = datetime(2026, 11, 29, 18, 0, 0, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after(given, now) == expected


def test_rfc3339_without_a_zone_is_utc_and_garbage_is_none():
    assert parse_rfc3339("2026-11-29T18:00:00") == datetime(2026, 11, 29, 18, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-29T19:00:00+01:00") == datetime(2026, 11, 29, 18, tzinfo=timezone.utc)
    assert parse_rfc3339("soon") is None


# -- costs --------------------------------------------------------------------------------------


def test_cost_is_a_request_the_prompt_chars_over_four_and_max_tokens():
    params = {
        "model": "m",
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "u" * 200},
            {"role": "assistant", "content": [{"type": "text", "text": "a" * 100}]},
        ],
    }
    cost = estimate_cost(params)
    assert (cost.requests, cost.input_tokens, cost.output_tokens) == (1.0, 175.0, 1000.0)
    assert estimate_cost(params, input_ratio=0.2).input_tokens == 35.0
    assert cost.of("tokens") == 1175.0


# -- one bucket ---------------------------------------------------------------------------------


def test_a_bucket_refills_at_its_rate_up_to_its_size():
    b = Bucket(capacity=10, rate=2, level=10, at=0)
    b.take(9, now=0)
    assert b.level_at(0) == 1
    assert b.wait(5, now=0) == 2.0  # 4 more at 2 per second
    assert b.wait(50, now=0) == 4.5  # at most the whole bucket is waited for
    assert b.level_at(100) == 10
    b.give(3, now=0)
    assert b.level_at(0) == 4


def test_a_reply_only_lowers_the_level_and_teaches_the_rate():
    clock = Clock()
    b = Bucket(capacity=60, rate=1, level=60, at=clock.now)
    b.take(10, clock.now)
    full = datetime.fromtimestamp(clock.wall() + 30, timezone.utc)
    b.sync(Budget("requests", 60, 55, full), clock.now, clock.wall())  # says more is left: ignored
    assert b.level_at(clock.now) == 50
    b.sync(Budget("requests", 60, 30, full), clock.now, clock.wall())  # 30 short, full in 30 s
    assert b.level_at(clock.now) == 30
    assert b.rate == pytest.approx(RATE_MARGIN * 29 / 30)  # 1 less: remaining is rounded down
    small = Bucket(capacity=60, rate=1, level=60, at=clock.now)
    small.sync(Budget("requests", 60, 59, full), clock.now, clock.wall())  # a small deficit teaches nothing
    assert small.rate == 1


def test_a_tiny_bucket_is_not_taught_a_rate_of_zero_by_the_rounding():
    # a bucket of 3, 1 short: the deficit may be 0 (remaining rounded down), which taught a rate
    # of 0, floored to one bucket per 10 minutes: a run stalled for minutes
    clock = Clock()
    full = datetime.fromtimestamp(clock.wall() + 0.3, timezone.utc)
    b = Bucket(capacity=3, rate=6, level=3, at=clock.now)
    b.sync(Budget("requests", 3, 2, full), clock.now, clock.wall())
    assert b.rate == 6 and not b.rate_learnt
    b.sync(Budget("requests", 3, 1, full), clock.now, clock.wall())  # 2 short: at least 1
    assert b.rate == pytest.approx(RATE_MARGIN * 1 / 0.3)


# -- the pacer's arithmetic ---------------------------------------------------------------------


def test_before_any_reply_only_the_window_holds_requests_back():
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    cost = Cost(1, 100, 1000)
    for _ in range(64):  # the first window is the concurrency
        assert p.delay(cost) == (0.0, None)
        p.admit(cost)
    assert p.delay(cost) == (math.inf, "concurrency")


def test_the_tightest_budget_decides_the_wait():
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    p.observe(
        200, headers(clock, requests=(100, 90, 6), input_tokens=(10_000, 9_000, 6), output_tokens=(6_000, 1_000, 30))
    )
    assert p.buckets["output_tokens"].rate == pytest.approx(RATE_MARGIN * 4_999 / 30)
    wait, why = p.delay(Cost(1, 100, 2_000))
    assert why == "output_tokens" and wait == pytest.approx(1_000 / (RATE_MARGIN * 4_999 / 30))
    wait, why = p.delay(Cost(1, 9_500, 100))
    assert why == "input_tokens" and wait > 0
    assert p.delay(Cost(1, 100, 500)) == (0.0, None)


def test_an_admitted_request_takes_its_cost_and_its_reply_gives_back_what_it_did_not_use():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.observe(
        200, headers(clock, requests=(100, 100, 0), input_tokens=(10_000, 10_000, 0), output_tokens=(8_000, 8_000, 0))
    )
    cost = Cost(1, 400, 2_000, raw_input=400)
    charged = p.admit(cost)
    assert p.buckets["output_tokens"].level_at(clock.now) == 6_000
    p.settle(
        cost, Usage(input_tokens=50, output_tokens=300, cache_read_input_tokens=350), replayed=False, charged=charged
    )
    assert p.buckets["output_tokens"].level_at(clock.now) == 7_700
    assert p.buckets["input_tokens"].level_at(clock.now) == 9_950  # cache reads do not count
    assert p.buckets["requests"].level_at(clock.now) == 99
    assert p.input_ratio < 1  # the next estimate is scaled down towards 50/400


def test_a_replayed_reply_costs_nothing_and_an_unanswered_one_is_refunded():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.observe(200, headers(clock, requests=(10, 10, 0), output_tokens=(1_000, 1_000, 0)))
    cost = Cost(1, 10, 500)
    p.settle(cost, Usage(1, 1), replayed=True, charged=p.admit(cost))
    assert p.buckets["requests"].level_at(clock.now) == 10
    assert p.buckets["output_tokens"].level_at(clock.now) == 1_000

    async def failing() -> None:
        async with p.slot({"max_tokens": 500, "messages": [{"role": "user", "content": "x"}]}):
            assert p.buckets["requests"].level_at(clock.now) == 9

    asyncio.run(failing())  # never settled: an error
    assert p.buckets["requests"].level_at(clock.now) == 10 and p.in_flight == 1  # the replayed one


def test_a_request_sent_before_any_reply_is_not_refunded_to_budgets_it_never_took():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    cost = Cost(1, 10, 500)
    charged = p.admit(cost)
    p.observe(200, headers(clock, output_tokens=(1_000, 400, 60)))
    p.settle(cost, Usage(10, 100), replayed=False, charged=charged)
    assert p.buckets["output_tokens"].level_at(clock.now) == 400


def test_requests_sent_before_the_first_reply_are_charged_to_the_budgets_it_reveals():
    # the reply may have been computed before they reached the API (a slow connection)
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)

    async def main() -> None:
        slots = [await p.acquire(Cost(1, 10, 100)) for _ in range(3)]
        assert all(s.charged == frozenset() for s in slots)
        p.observe(200, headers(clock, requests=(10, 10, 0)))
        assert p.buckets["requests"].level_at(clock.now) == 7
        assert all(s.charged == {"requests"} for s in slots)
        for s in slots:  # unanswered: refunded
            p.release(s)
        assert p.buckets["requests"].level_at(clock.now) == 10

    asyncio.run(main())


def test_a_429_halves_the_window_once_per_round_trip_and_holds_every_request_for_retry_after():
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    cost = Cost(1, 1, 1)
    for _ in range(20):
        p.settle(cost, Usage(1, 1), replayed=False, charged=p.admit(cost))
    assert p.window == 64  # never above the concurrency
    p.in_flight = 0  # their slots were released
    p.observe(200, headers(clock, requests=(50, 30, 10)))  # the budgets are known from here on
    clock.now += 1
    sent = clock.now
    clock.now += 1
    refused = {**headers(clock, requests=(50, 0, 10)), "retry-after": "2"}
    p.observe(429, refused, sent_at=sent)
    assert p.window == 32 and p.rate_limited == 1
    p.observe(429, refused, sent_at=sent)  # sent before the first backoff: the same round
    assert p.window == 32
    assert p.delay(cost) == (2.0, "backoff")
    assert p.status == "backing off: requests/min used up"
    clock.now += 2
    p.observe(429, refused, sent_at=clock.now)  # sent after it: halves again
    assert p.window == 16


#: a retry-after no server means (a hostile server's 999999 s), in each form the SDK reads: seconds,
#: milliseconds, an HTTP date
HUGE_RETRY_AFTERS = [
    {"retry-after": "999999"},
    {"retry-after-ms": "999999000"},
    {"retry-after": "Sat, 29 Nov 2036 18:00:00 GMT"},
    {"retry-after": "inf"},  # (not a number of seconds to the pacer; 49 days to the SDK)
]


@pytest.mark.parametrize("status", [429, 529])
@pytest.mark.parametrize("asked", HUGE_RETRY_AFTERS)
def test_a_retry_after_of_days_holds_new_requests_and_retries_for_a_minute_at_most(status, asked):
    """A 429 or 529 asking for days held every unsent row, and every retry, for that long."""
    clock = Clock()
    p = Pacer(4, clock=clock, wall=clock.wall)
    p.observe(status, {**headers(clock, requests=(50, 0, 10)), **asked}, sent_at=clock.now)
    assert p.delay(Cost(1, 1, 1)) == (60.0, "backoff")  # a request waiting for its first turn
    assert p.delay(Cost(1, 1, 1), retry=True) == (60.0, "backoff")  # the refused one's retry
    clock.now += 60
    assert p.delay(Cost(1, 1, 1))[0] == 0
    assert not p.status.startswith("backing off")


@pytest.mark.parametrize("status", [429, 529, 503])
@pytest.mark.parametrize("asked", HUGE_RETRY_AFTERS)
def test_the_sdk_is_told_to_wait_a_minute_at_most_too(status, asked):
    """The SDK (2.x) sleeps for whatever ``retry-after`` says before its retry (up to 49 days),
    holding the request's place in flight and, past ``batchgen_total_timeout``, failing it as
    a timeout: the reply's header, which the SDK reads after the pacer, says a minute at most."""
    import httpx2

    clock = Clock()
    reply = httpx2.Headers(asked)
    Pacer(4, clock=clock, wall=clock.wall).observe(status, reply)
    assert parse_retry_after(reply, clock.wall()) == 60.0
    assert reply.get("retry-after") == "60" and "retry-after-ms" not in reply


@pytest.mark.parametrize(
    "asked", [{"retry-after": "0.01"}, {"retry-after-ms": "1500", "retry-after": "9"}, {"retry-after": "60"}]
)
@pytest.mark.parametrize("enabled", [True, False])
def test_a_retry_after_of_a_minute_or_less_is_left_as_the_server_sent_it(asked, enabled):
    import httpx2

    reply = httpx2.Headers(asked)
    Pacer(4, enabled=enabled).observe(429, reply)
    assert dict(reply) == asked


def test_without_pacing_the_sdk_still_waits_a_minute_at_most():
    import httpx2

    reply = httpx2.Headers({"retry-after": "999999"})
    Pacer(4, enabled=False).observe(429, reply)
    assert reply["retry-after"] == "60"


def test_a_429_to_the_first_wave_sent_blind_keeps_the_window_and_the_retry_after():
    """Requests sent before any reply told the budgets (the first wave) may be refused; the
    budgets their 429s carry gate every later request, so the window is not halved for them
    (it was, and a 500-row run lost a tenth of its throughput climbing back)."""
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    sent = clock.now
    clock.now += 0.2
    p.observe(429, {**headers(clock, requests=(60, 0, 1)), "retry-after": "1"}, sent_at=sent)
    assert p.window == 64 and p.rate_limited == 1
    assert p.delay(Cost(1, 1, 1)) == (1.0, "backoff")  # the API's retry-after still holds
    clock.now += 1
    later = clock.now
    clock.now += 0.2
    p.observe(429, headers(clock, requests=(60, 0, 1)), sent_at=later)  # sent knowing the budgets
    assert p.window == 32


def test_a_budget_first_heard_of_is_charged_only_the_requests_sent_after_the_reply():
    """The reply's ``remaining`` already counts the requests that left before it; charging them
    again made a first wave of 64 wait a whole budget for nothing (bench_pacing: 89% of the
    limit, 97% without the double count)."""
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)

    async def main() -> list:
        return [await p.acquire(Cost(1, 0, 0)) for _ in range(3)]

    early, late, later = asyncio.run(main())
    early.sent_at, late.sent_at, later.sent_at = clock.now, clock.now + 2, clock.now + 3
    clock.now += 4
    p.observe(200, headers(clock, requests=(60, 50, 60)), sent_at=clock.now - 3)  # sent between them
    assert p.buckets["requests"].level_at(clock.now) == pytest.approx(48, abs=0.1)  # 50, less the two after
    assert "requests" not in early.charged and "requests" in late.charged and "requests" in later.charged


def test_the_window_grows_back_gradually_and_never_above_the_concurrency():
    clock = Clock()
    p = Pacer(10, clock=clock, wall=clock.wall)
    cost = Cost(1, 1, 1)
    p.observe(529, {}, sent_at=clock.now)
    assert p.window == 5 and p.overloaded == 1  # half of the first window, the concurrency
    for _ in range(5):
        p.settle(cost, Usage(1, 1), replayed=False)
    assert 5 < p.window < 7  # about one per window's worth of replies
    for _ in range(1000):
        p.settle(cost, Usage(1, 1), replayed=False)
    assert p.window == 10


def test_without_pacing_headers_and_refusals_change_nothing():
    clock = Clock()
    p = Pacer(16, enabled=False, clock=clock, wall=clock.wall)
    p.observe(429, {**headers(clock, requests=(5, 0, 60)), "retry-after": "30"})
    assert p.buckets == {} and p.window == 16 and p.status == ""
    for _ in range(16):
        assert p.delay(Cost())[0] == 0
        p.admit(Cost())
    assert p.delay(Cost()) == (math.inf, "concurrency")


def test_the_progress_line_says_which_limit_paces_the_run():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.paced_by = "output_tokens"
    d = SimpleNamespace(
        jobs=[1, 2, 3], done=1, in_flight=2, failed=0, tokens=10, spent=0.0, replies=1, note="", pacer=p
    )
    assert Progress.text(d) == (
        "[batchgen] 1/3 rows done, 2 in flight (paced by output tokens/min), 0 failed; "
        "1 reply, 10 tokens, $0.0000 so far"
    )
    p.paced_by = None
    assert "paced" not in Progress.text(d)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(5, 200),
    window=st.sampled_from([1.0, 5.0, 60.0]),
    costs=st.lists(st.integers(1, 60), min_size=1, max_size=80),
    used=st.floats(0, 1),
    latency=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_a_paced_sender_never_overdraws_a_server_bucket(limit, window, costs, used, latency):
    """A server bucket (size ``limit``, full again in ``window``) and a pacer that learns it from
    the replies: a request the pacer lets through always fits at the server."""
    clock = Clock()
    rate = limit / window
    server = {"level": float(limit), "at": clock.now}

    def refill() -> None:
        server["level"] = min(limit, server["level"] + rate * (clock.now - server["at"]))
        server["at"] = clock.now

    def reply_headers() -> dict[str, str]:
        refill()
        return headers(clock, output_tokens=(limit, math.floor(server["level"]), (limit - server["level"]) / rate))

    p = Pacer(4, clock=clock, wall=clock.wall)
    p.observe(200, reply_headers())
    in_flight: list[tuple[float, Cost, frozenset[str]]] = []
    for n in costs:
        cost = Cost(1, 0, min(n, limit))
        while True:
            wait, why = p.delay(cost)
            if wait == 0:
                break
            if why == "concurrency" or (in_flight and in_flight[0][0] <= clock.now + wait):
                done_at, done_cost, charged = in_flight.pop(0)  # the oldest reply comes
                clock.now = max(clock.now, done_at)
                refill()
                back = done_cost.output_tokens * (1 - used)
                server["level"] = min(limit, server["level"] + back)
                p.observe(200, reply_headers())
                p.settle(done_cost, Usage(0, done_cost.output_tokens - back), replayed=False, charged=charged)
                p.in_flight -= 1
            else:
                clock.now += wait
        refill()
        assert server["level"] >= cost.output_tokens - 1e-6  # it fits
        server["level"] -= cost.output_tokens
        in_flight.append((clock.now + latency, cost, p.admit(cost)))


# -- the gate -----------------------------------------------------------------------------------


def test_the_gate_keeps_at_most_the_window_in_flight_and_lets_everyone_through():
    p = Pacer(3, enabled=False)
    peak = 0

    async def one(n: int) -> None:
        nonlocal peak
        async with p.slot({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}):
            peak = max(peak, p.in_flight)
            await asyncio.sleep(0.001 * (n % 3))

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(20)))

    asyncio.run(main())
    assert peak == 3 and p.in_flight == 0


def test_a_long_queue_costs_one_wake_up_per_change_not_one_per_queued_request():
    """Issue 12: every admission and release used to wake every queued request, each of which
    looked again (and made a task for its timed wait): quadratic in the queue, a third of the
    dispatcher's CPU at 1,000 rows. Only the head of the queue looks now; ``stop`` is called once
    per look, so it counts them."""
    rows = 300
    p = Pacer(2, enabled=False)
    looks = 0

    def stop() -> bool:
        nonlocal looks
        looks += 1
        return False

    async def one() -> None:
        async with p.slot({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, stop):
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(rows)))

    asyncio.run(main())
    assert p.in_flight == 0
    assert looks <= 4 * rows, looks  # about 2 per request; the old gate made about rows**2 / 2


def test_a_stop_reaches_every_queued_request_in_turn():
    p = Pacer(1, enabled=False)
    stopped = False
    admitted: list[bool] = []

    async def first() -> None:
        nonlocal stopped
        async with p.slot({"max_tokens": 1, "messages": []}):
            await asyncio.sleep(0.01)
            stopped = True  # set while 50 requests wait behind this one

    async def queued() -> None:
        slot = await p.acquire(Cost(), lambda: stopped)
        admitted.append(slot.admitted)
        p.release(slot)

    async def main() -> None:
        await asyncio.gather(first(), *(queued() for _ in range(50)))

    asyncio.run(asyncio.wait_for(main(), 5))
    assert admitted == [False] * 50 and p.of("").queue == deque()


def test_a_queued_request_is_costed_with_the_ratio_learnt_while_it_waited():
    p = Pacer(1)
    params = {"max_tokens": 10, "messages": [{"role": "user", "content": "x" * 4000}]}  # 1,000 by chars
    costs = []

    async def first() -> None:
        async with p.slot(params) as slot:
            await asyncio.sleep(0.01)
            slot.settle(Usage(input_tokens=100, output_tokens=5), replayed=False)  # 10 % of the estimate

    async def second() -> None:
        async with p.slot(params) as slot:
            costs.append(slot.cost.input_tokens)

    async def main() -> None:
        await asyncio.gather(first(), second())

    asyncio.run(main())
    assert costs and costs[0] < 1000 * 0.8  # not the 1,000 it was worth when it was queued


def test_a_stopped_run_leaves_the_queue_unadmitted():
    p = Pacer(1, enabled=False)
    stopped = False
    outcomes = []

    async def holder() -> None:
        nonlocal stopped
        async with p.slot({"max_tokens": 1, "messages": []}):
            await asyncio.sleep(0.05)
            stopped = True
            await asyncio.sleep(0.3)

    async def waiter() -> None:
        async with p.slot({"max_tokens": 1, "messages": []}, lambda: stopped) as slot:
            outcomes.append(slot.admitted)

    async def main() -> None:
        await asyncio.gather(holder(), waiter())

    asyncio.run(main())
    assert outcomes == [False]


PARAMS = {"max_tokens": 1, "messages": []}


def test_a_stop_ends_a_request_between_attempts_and_not_one_in_flight():
    p = Pacer(2, enabled=False)
    stopped = False
    ended: dict[str, object] = {}

    async def refused() -> None:  # what the SDK does with a 429: a pause, then a new attempt
        async with p.slot(PARAMS, lambda: stopped) as slot:
            try:
                await p.before_send()
                p.mark_sent()
                p.after_send(429)
                p.attempt_failed()
                await asyncio.sleep(30)  # the retry-after
                await p.before_send()
                ended["refused"] = "sent again"
            except asyncio.CancelledError:
                ended["refused"] = ("cancelled", slot.stopped)

    async def in_flight() -> None:
        async with p.slot(PARAMS, lambda: stopped):
            await p.before_send()
            p.mark_sent()
            await asyncio.sleep(0.1)  # its reply comes after the stop: it is paid for
            p.after_send(200)
            ended["in flight"] = "answered"

    async def stop() -> None:
        nonlocal stopped
        await asyncio.sleep(0.02)
        stopped = True
        ended["stopped"] = p.stop_between_attempts()

    async def main() -> None:
        await asyncio.gather(refused(), in_flight(), stop())

    asyncio.run(asyncio.wait_for(main(), 5))
    assert ended == {"refused": ("cancelled", True), "in flight": "answered", "stopped": 1}


@pytest.mark.parametrize("status", [429, 529, 500, None])
def test_an_attempt_that_fails_once_the_run_stopped_is_not_tried_again(status):
    p = Pacer(1)
    stopped = False

    async def main() -> bool:
        nonlocal stopped
        async with p.slot(PARAMS, lambda: stopped) as slot:
            await p.before_send()
            p.mark_sent()
            stopped = True  # while the attempt was in flight
            if status is not None:
                p.after_send(status)
            with pytest.raises(SendingStopped):
                p.attempt_failed()  # a status the SDK retries, or no reply at all
            return slot.stopped

    assert asyncio.run(main()) is True


def test_a_retry_waiting_for_the_budgets_is_not_sent_once_the_run_stopped():
    p = Pacer(1)
    stopped = False

    async def main() -> None:
        nonlocal stopped
        async with p.slot(PARAMS, lambda: stopped):
            await p.before_send()
            p.mark_sent()
            p.after_send(429)
            stopped = True
            with pytest.raises(SendingStopped):
                await p.before_send()  # the SDK's retry

    asyncio.run(main())


def test_each_model_has_its_own_budgets_and_its_own_queue():
    clock = Clock()
    p = Pacer(4, clock=clock, wall=clock.wall)
    p.observe(200, headers(clock, requests=(5, 0, 60)), model="claude-sonnet-5-5")  # used up for a minute
    p.observe(200, headers(clock, requests=(1_000, 990, 1)), model="claude-haiku-5-5")
    sonnet, haiku = Cost(model="claude-sonnet-5-5"), Cost(model="claude-haiku-5-5")
    assert p.delay(sonnet)[1] == "requests" and p.delay(sonnet)[0] > 10
    assert p.delay(haiku) == (0.0, None)
    assert p.of("claude-sonnet-5-5").buckets["requests"].capacity == 5
    assert p.of("claude-haiku-5-5").buckets["requests"].capacity == 1_000
    assert [k.limit for k in p.known("claude-sonnet-5-5")] == [5] and p.known("claude-opus-5") == ()

    async def main() -> tuple[bool, bool]:
        waiting = asyncio.ensure_future(p.acquire(sonnet))  # at the head of Sonnet's queue, waiting
        await asyncio.sleep(0.01)
        admitted = await asyncio.wait_for(p.acquire(haiku), 1)  # not behind it
        held = not waiting.done()
        waiting.cancel()
        return admitted.admitted, held

    assert asyncio.run(main()) == (True, True)


# -- seeded from an earlier run's limits (pytest_batchgen/limitstore.py) ----------------------


def test_a_seeded_pacer_paces_its_first_wave():
    # an input budget of 1,000 tokens, 400 left 10 s ago, refilling 10 a second: 500 now
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("input_tokens", 1_000, 10.0, 400, clock.wall() - 10, True)])
    assert p.buckets["input_tokens"].level_at(clock.now) == pytest.approx(500)
    admitted = []

    async def main() -> None:
        for _ in range(64):
            wait, why = p.delay(Cost(1, 100, 0))
            if wait > 0:
                assert why == "input_tokens" and wait == pytest.approx(10.0)
                return
            admitted.append(p.admit(Cost(1, 100, 0)))

    asyncio.run(main())
    assert len(admitted) == 5  # not 64: the first wave fits the budget the last run left


def test_an_unpaced_run_is_not_seeded_and_keeps_nothing():
    clock = Clock()
    p = Pacer(8, enabled=False, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("requests", 5, 1, 5, clock.wall())])
    assert p.buckets == {} and p.of("").learnt_at is None and p.known() == ()


def test_what_a_run_knows_at_its_end_seeds_the_next():
    clock = Clock()
    first = Pacer(8, clock=clock, wall=clock.wall)
    assert first.known() == ()  # no reply told the budgets
    first.observe(
        200,
        {
            "anthropic-ratelimit-requests-limit": "60",
            "anthropic-ratelimit-requests-remaining": "20",
            "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
        },
    )
    (known,) = first.known()
    assert (known.kind, known.limit, known.level, known.at) == ("requests", 60, 20, clock.wall())
    clock.now += 30
    second = Pacer(8, clock=clock, wall=clock.wall)
    second.seed([known])
    assert second.buckets["requests"].level_at(clock.now) == pytest.approx(min(60, 20 + 30 * known.rate))
    assert second.buckets["requests"].capacity == 60


def test_a_reply_corrects_a_seeded_budget_that_was_too_generous():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("requests", 100, 100 / 60, 100, clock.wall())])
    p.observe(
        200,
        {
            "anthropic-ratelimit-requests-limit": "40",
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
        },
    )
    bucket = p.buckets["requests"]
    assert bucket.capacity == 40 and bucket.level_at(clock.now) == 3


def test_a_higher_limit_than_the_seeded_one_rescales_the_refill():
    # seeded with 50 requests a minute; the tier has changed: 4,000 a minute, 3,990 left. The
    # refill follows (4,000 a minute), or the run would be paced at 50 a minute to its end
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("requests", 50, 50 / 60, 50, clock.wall(), True)])
    p.observe(
        200,
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3990",
            "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
        },
    )
    bucket = p.buckets["requests"]
    assert bucket.capacity == 4000 and bucket.rate == pytest.approx(4000 / 60)
    clock.now += 60
    assert bucket.level_at(clock.now) == 4000


def test_a_run_that_only_replayed_passes_no_seeded_guess_on():
    clock = Clock()
    p = Pacer(8, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("requests", 50, 50 / 60, 50, clock.wall() - 600)])
    assert p.known() == ()  # no live reply confirmed them: the file keeps its own time


def test_a_429_under_seeded_budgets_halves_the_window():
    # the budgets were believed known: a refusal says they were wrong, not that the wave was blind
    refused = {
        "retry-after": "1",
        "anthropic-ratelimit-requests-limit": "40",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
    }
    windows = []
    for seeded in (False, True):
        clock = Clock()
        p = Pacer(64, clock=clock, wall=clock.wall)
        if seeded:
            p.seed([KnownBudget("requests", 100, 100 / 60, 100, clock.wall())])
        sent = p.mark_sent()
        clock.now += 1
        p.observe(429, refused, sent_at=sent)
        windows.append(p.window)
    assert windows == [64, 32]  # blind first wave: kept; seeded: halved


# -- end to end, against the rate-limited loopback server ----------------------------------------

NAMES = [f"term-{i:02d}" for i in range(16)]


def _project(project, fake, *, latency: float = 0.05, ini: str = "", max_retries: int = 2):
    project.write_rows(rows_for(*NAMES), max_retries=max_retries, ini_extra=ini)
    for name in NAMES:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=latency))


def test_a_paced_run_stays_within_the_requests_budget(project, fake):
    # the first window (the concurrency, 12) fits the bucket; the 4 rows after it must wait for
    # the refill, which only the replies' headers tell
    _project(project, fake)
    fake.limits = RateLimits(requests=12, input_tokens=10_000_000, output_tokens=10_000_000, window=1.0)

    result = project.run("--batch-concurrency", "12")

    assert result.ret == 0, result.stdout.str()
    assert fake.limited == 0  # no request was over the budget
    assert len(fake.admitted) == len(fake.messages_requests()) == 16
    assert set(project.statuses().values()) == {"complete"}


def test_each_model_is_paced_against_its_own_budgets(project, fake):
    # the API limits each model class apart: Haiku's replies (a large budget) must not lend
    # Sonnet's requests their budget, nor hold Haiku's requests to Sonnet's
    project.write_rows(rows_for(*NAMES))
    plan = project.path / "plan.md"
    rows = [f"| {name.replace('-', ' ').title()} | {name}.md | haiku |" for name in NAMES]
    text = plan.read_text()
    for n, row in enumerate(rows):
        if n % 2:  # every other row is Sonnet's, in the same phase: their requests interleave
            text = text.replace(row, row.replace("| haiku |", "| sonnet |"))
    plan.write_text(text)
    fake.limit_model("claude-haiku-5-5", RateLimits(requests=1_000, input_tokens=1e8, output_tokens=1e8, window=1.0))
    fake.limit_model("claude-sonnet-5-5", RateLimits(requests=4, input_tokens=1e8, output_tokens=1e8, window=1.0))

    result = project.run("--batch-concurrency", "4")

    assert result.ret == 0, result.stdout.str()
    models = [e.body["model"] for e in fake.messages_requests()]
    assert models.count("claude-sonnet-5-5") == models.count("claude-haiku-5-5") == 8
    assert fake.limited == 0  # the first wave (2 Sonnet requests, sent blind) fits Sonnet's 4
    assert set(project.statuses().values()) == {"complete"}


def test_a_retry_waiting_for_the_budgets_does_not_count_against_the_total_timeout(project, fake):
    # a first run on an account whose limit is below the concurrency: 2 of the first wave's 4
    # requests are refused, and their retries wait for the budget to refill, past the 2 s of
    # batchgen_total_timeout, which bounds a request, not the account's pace
    names = NAMES[:4]
    project.write_rows(rows_for(*names), ini_extra="batchgen_total_timeout = 2\n")
    fake.limits = RateLimits(requests=2, input_tokens=1e8, output_tokens=1e8, window=2.0)

    result = project.run("--batch-concurrency", "4")

    assert result.ret == 0, result.stdout.str()
    assert fake.limited == 2  # the blind first wave's
    assert set(project.statuses().values()) == {"complete"}


#: a project conftest that makes the pacer's cap on a retry-after 1 s, not a minute: it runs in the
#: process that sends (a run's conftest is imported before the sending process forks)
SHORT_RETRY_AFTER_CAP = """
from pytest_batchgen import pacing
pacing.RETRY_AFTER_CAP = 1.0
"""


@pytest.mark.parametrize("refusal", [Reply.rate_limited, Reply.overloaded])
def test_a_retry_after_of_days_holds_the_run_only_as_long_as_the_cap(project, fake, forks, refusal):
    """A server's 429 or 529 asking for 999999 s: the refused row's retry slept for it (its
    ``batchgen_total_timeout`` then failed it as "no reply within"), and the rows after it
    waited for ever. Both wait the cap (1 s here, a minute in a real run), then every row
    completes. (Run in a process of its own: a run that stalls is killed, not waited for.)"""
    names = ["quorum", "raft", "paxos"]
    project.write_rows(rows_for(*names), ini_extra="batchgen_total_timeout = 30\n")
    project.write("conftest.py", SHORT_RETRY_AFTER_CAP)
    router(fake).set("quorum.md", refusal(retry_after=999999), Reply.ok(draft("Quorum")))
    project.forks = forks

    run = project.start("--batch-plan", project.plan, "--batch-concurrency", "1")
    try:
        ret = run.wait(timeout=120)
    except (TimeoutError, subprocess.TimeoutExpired):
        run.kill()
        pytest.fail(f"the run was still held after 120 s: {len(fake.messages_requests())} requests sent")
    out = run.communicate()[0]

    assert ret == 0, out
    assert project.statuses() == dict.fromkeys([f"{name}.md" for name in names], "complete")
    refused, retried, *others = sorted(fake.messages_requests(), key=lambda e: e.started)
    assert (refused.status, refused.headers["x-stainless-retry-count"]) == (refusal().status, "0")
    assert (retried.status, retried.headers["x-stainless-retry-count"]) == (200, "1")
    assert [e.status for e in others] == [200, 200]
    assert refused.finished is not None and retried.started - refused.finished >= 0.9  # the hold: the cap


def _refused_after_the_first_window(fake) -> list:
    """The 429s to requests other than the first window's: the first 16 requests (the
    concurrency, sent before any reply) leave before the pacer knows the limits; no later
    request, and no retry, may be refused."""
    logged = sorted(fake.messages_requests(), key=lambda e: e.started)
    return [
        (n, e.headers.get("x-stainless-retry-count"))
        for n, e in enumerate(logged)
        if e.status == 429 and (n >= 16 or e.headers.get("x-stainless-retry-count") != "0")
    ]


def test_a_paced_run_stays_within_the_output_tokens_budget(project, fake):
    # each request reserves max_tokens (300) at admission: 3 fit in the bucket of 1,000, so the
    # first window of 16, sent before any reply, has 13 refused; after that, none
    _project(project, fake, ini="batchgen_max_tokens = 300\n")
    fake.limits = RateLimits(requests=1_000, input_tokens=10_000_000, output_tokens=1_000, window=0.5)

    result = project.run("--batch-concurrency", "16")

    assert result.ret == 0, result.stdout.str()
    assert fake.limited <= 13
    assert _refused_after_the_first_window(fake) == []
    assert len(fake.admitted) == 16
    assert set(project.statuses().values()) == {"complete"}


def test_the_same_run_without_pacing_is_refused(project, fake):
    """The counterpart of the two tests above: what they count can be more than zero. (A first
    wave of 16 into a bucket of 12 that refills one request in 0.8 s: refused however slowly
    the machine sends; rows sent after replies could find it refilled on a loaded machine.)"""
    _project(project, fake, max_retries=0)  # the refusals are the point: no retry waits
    fake.limits = RateLimits(requests=12, input_tokens=10_000_000, output_tokens=10_000_000, window=10.0)

    project.run("--batch-concurrency", "16", "--batch-no-pacing")

    assert fake.limited > 0


def test_after_a_429_the_run_backs_off_and_every_row_completes(project, fake):
    # a bucket smaller than the first window: the first replies are 429s (with the headers),
    # which the SDK retries once the pacer lets them go
    _project(project, fake, latency=0.1)
    fake.limits = RateLimits(requests=5, input_tokens=10_000_000, output_tokens=10_000_000, window=1.0)

    result = project.run("--batch-concurrency", "16")

    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    assert 0 < fake.limited <= 11  # the first window of 16, less the 5 that fit
    assert _refused_after_the_first_window(fake) == []
    assert len(fake.admitted) == 16


@pytest.mark.parametrize("remember", [True, False])
def test_the_next_run_on_the_account_paces_its_first_wave_from_the_limits_the_last_one_left(project, fake, remember):
    # given: a run whose first wave of 8 met a bucket of 2 requests (6 refused, as above, unless
    # the 8 took 1.5 s to arrive)
    names = NAMES[:8]
    rows = rows_for(*names)
    project.write_rows(rows, max_retries=2, ini_extra="" if remember else "batchgen_remember_limits = false\n")
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=0.1))
    # (a window long enough that the first wave's later arrival at the server, on new
    # connections, is a small part of the refill: the pacer counts from when it sent)
    limits = RateLimits(requests=2, input_tokens=10_000_000, output_tokens=10_000_000, window=0.5)
    fake.limits = limits
    assert project.run("--batch-concurrency", "8").ret == 0
    assert fake.limited > 0
    assert limitstore.store_path().exists() == remember  # in the test's own XDG_CACHE_HOME
    if not remember:  # batchgen_remember_limits = false: nothing kept, so the next run starts blind
        return

    # when: the same plan is generated again on the same account, the server's buckets full again
    project.reset(rows)
    fake.limits = limits
    fake.limited = 0
    fake.admitted.clear()
    result = project.run("--batch-concurrency", "8", "--batch-record-mode", "all")

    # then: its first wave fits the budget the last run left: no request is refused
    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    assert len(fake.admitted) == 8
    assert fake.limited == 0


def test_under_xdist_the_controller_remembers_the_limits_too(project, fake):
    names = NAMES[:2]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title())))
    fake.limits = RateLimits(requests=100, input_tokens=10_000_000, output_tokens=10_000_000, window=60)

    result = project.run("-n", "2")

    assert result.ret == 0, result.stdout.str()
    (account,) = json.loads(limitstore.store_path().read_text())["accounts"].values()
    assert account["budgets"]["requests"]["limit"] == 100


def test_judge_calls_are_paced_against_their_models_budgets(project, fake):
    # a judge call goes to the same account as generation: unpaced, the judge's calls went out
    # as fast as drafts arrived, into a Sonnet bucket of 4 requests a second, and met 429s
    from judgehelpers import install, is_judge

    names = NAMES[:12]
    project.write_rows(rows_for(*names), max_retries=2)
    anchor = "\n## Phase 1"
    project.write(
        "plan.md", project.read().replace(anchor, "5. Judge (sonnet): the definition is accurate\n" + anchor, 1)
    )
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=0.05))
    install(fake)
    fake.limit_model("claude-sonnet-5-5", RateLimits(requests=4, input_tokens=1e8, output_tokens=1e8, window=1.0))

    result = project.run("--batch-concurrency", "4")

    assert result.ret == 0, result.stdout.str()
    judged = [e for e in fake.messages_requests() if is_judge(e.body)]
    assert len(judged) == 12
    assert fake.limited == 0  # the first wave (4 judge calls) fits the bucket; the rest were paced
    assert set(project.statuses().values()) == {"complete"}
