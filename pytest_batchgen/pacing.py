"""PACING: send at the account's rate limits, not into them.

Anthropic limits an organisation per model class by requests, input tokens and output tokens
per minute, each a token bucket that refills continuously up to its limit. Every reply says
where each bucket stands::

    anthropic-ratelimit-requests-limit / -remaining / -reset
    anthropic-ratelimit-input-tokens-limit / -remaining / -reset
    anthropic-ratelimit-output-tokens-limit / -remaining / -reset
    anthropic-ratelimit-tokens-limit / -remaining / -reset     (the most restrictive token limit)

where ``-reset`` is the RFC 3339 time at which that bucket is full again, and a 429 (rate
limited) or 529 (overloaded) may carry ``retry-after`` (seconds). Peers send until they get 429s
and then back off; the :class:`Pacer` instead keeps a local copy of the three buckets, takes
each request's cost from them *before* sending, and waits when one of them is short, so the
API is not asked for what it would refuse.

How a request is costed (:func:`estimate_cost`), mirroring what the API takes at admission:

* requests: 1;
* input tokens: the characters of the system prompt, the messages (and tools) divided by 4,
  then scaled by a ratio learnt from the live replies' usage (``input_tokens +
  cache_creation_input_tokens``, what counts against the limit: cache reads do not), so a
  cached shared prefix and the real tokenizer are accounted for after a few replies;
* output tokens: the request's ``max_tokens``, which the API reserves when the request starts
  and gives back, less what was generated, when it ends; the pacer does the same at
  :meth:`Pacer.settle`.

What the headers change: each reply's ``remaining`` can only lower the local level (a reply
may have been computed before requests this process sent since, so it is never allowed to
raise it); ``limit`` is the bucket's size; ``limit - remaining`` over the time to ``reset`` is
the refill rate (learnt from replies that show a real deficit, since a reset rounded to the
second says little about a nearly full bucket; until then one limit per minute).

Backoff: the number of requests in flight is an AIMD window, never above ``--batch-concurrency``.
The first window is the concurrency: the user said how many requests to keep in flight, and a
smaller first wave would cost every run one whole generation's latency (seconds to a minute)
to protect only accounts whose limit is below the concurrency. A run that knows the account's
budgets from an earlier run (:meth:`Pacer.seed`, :mod:`.limitstore`) paces that first wave like
any other; the first run on an account sends it blind, and an account whose limit is below it
answers a few requests with 429s, which the SDK retries once the pacer lets them go (by then the
replies' headers gate every request). A 429 or 529 halves the window, at most once per round
trip; after that it grows by one per good reply up to the halved value (slow start), then by
one per window's worth of good replies. A 429 or 529 with ``retry-after`` also holds every new
request until then, for :data:`RETRY_AFTER_CAP` (a minute) at most; the SDK's own wait before its
retry is held to that too (:func:`cap_retry_after`).

The SDK keeps its retries (``batchgen_max_retries``, honouring ``retry-after``), and the pacer
sees each HTTP attempt through the client's transport (:meth:`Pacer.before_send`,
:meth:`Pacer.after_send`): a refused attempt's cost is given back (the API did not charge it),
and the SDK's retry, once its own ``retry-after`` sleep is over, waits for the budgets again and
is charged like a new request. So retries are paced too, and the slot (the place in the
window) is kept across them. Replayed replies (the recorder's) cost nothing: their slot is
refunded, and they never reach the pacer's transport (it sits under the recorder).

Each model has budgets of its own (the API limits each model class apart): a plan that calls
Haiku and Sonnet is paced against two sets of buckets, each taught by its own model's replies,
and a request waiting for one model's budget does not hold back another model's. The window,
and so ``--batch-concurrency``, is shared: it bounds every request in flight.

This module is pure Python with injectable clocks: the arithmetic is tested without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .limitstore import KnownBudget

#: the three budgets, in the order they are reported
KINDS = ("requests", "input_tokens", "output_tokens")

#: how each budget is named on the progress line
LABELS = {
    "requests": "requests/min",
    "input_tokens": "input tokens/min",
    "output_tokens": "output tokens/min",
    "tokens": "tokens/min",
}

#: header family (after ``anthropic-ratelimit-``) -> budget
_FAMILIES = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
    "tokens": "tokens",
}

#: characters per token of the first estimate (English prose and Markdown)
CHARS_PER_TOKEN = 4.0

#: rate learnt from a reply is used at this fraction, to absorb the reply's time on the wire
RATE_MARGIN = 0.98

#: a reply's deficit must be at least this fraction of the limit to teach the refill rate
RATE_MIN_DEFICIT = 0.25

#: The longest a ``retry-after`` holds the run, in seconds: the pacer's hold on new requests and
#: retries, and the SDK's sleep before its retry (:func:`cap_retry_after`). The API asks for
#: seconds; a server or gateway that asks for more than a minute (``retry-after: 999999``, an
#: HTTP date next year) held every unsent row for that long, and the SDK 2.x sleeps for any
#: value up to 49 days (older SDKs ignored one over 60 s, and fell back to their backoff). A
#: minute is what those SDKs honoured at most, and what the README promises.
RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True)
class Budget:
    """One ``anthropic-ratelimit-<family>-*`` triple as the reply stated it."""

    kind: str  # "requests", "input_tokens", "output_tokens" or "tokens"
    limit: float
    remaining: float
    reset: datetime | None = None
    reset_precise: bool = True  # False when the reset time is whole seconds (±1 s)


@dataclass(frozen=True)
class RateLimitInfo:
    """What one reply says about the account's limits."""

    budgets: tuple[Budget, ...] = ()
    retry_after: float | None = None

    def budget(self, kind: str) -> Budget | None:
        return next((b for b in self.budgets if b.kind == kind), None)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 time (``2026-11-29T18:00:00Z``, with or without fractions); None if it is not one."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds, or an HTTP date), as the SDK reads them."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None or raw is None:
        return seconds
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_wall is None else now_wall
    return max(0.0, when.timestamp() - now)


def cap_retry_after(headers: MutableMapping[str, str], now_wall: float | None = None) -> None:
    """Hold the ``retry-after`` of a refused reply to :data:`RETRY_AFTER_CAP`, in place: the SDK
    reads the reply's headers after the pacer (:meth:`Pacer.observe`), and sleeps before its
    retry for what they say. One that asks for longer says the cap instead (``retry-after-ms``,
    which the SDK reads first, goes); one of a minute or less is left as the server sent it."""
    asked = [parse_retry_after(headers, now_wall) or 0.0]
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        with contextlib.suppress(TypeError, ValueError):  # (what the SDK reads and the pacer does not: "inf")
            asked.append(float(headers.get(name)) / per_second)  # type: ignore[arg-type]
    if not max(asked) > RETRY_AFTER_CAP:
        return
    for name in [name for name in headers if name.lower() in ("retry-after", "retry-after-ms")]:
        del headers[name]
    headers["retry-after"] = f"{RETRY_AFTER_CAP:g}"


def parse_headers(headers: Mapping[str, str], now_wall: float | None = None) -> RateLimitInfo:
    """The rate-limit headers of one reply (names case-insensitive); families without a
    usable ``limit`` and ``remaining`` are left out."""
    lower = {k.lower(): v for k, v in headers.items()}
    budgets = []
    for family, kind in _FAMILIES.items():
        prefix = f"anthropic-ratelimit-{family}-"
        limit = _number(lower.get(prefix + "limit"))
        remaining = _number(lower.get(prefix + "remaining"))
        if limit is None or remaining is None or limit <= 0:
            continue
        raw_reset = lower.get(prefix + "reset")
        reset = parse_rfc3339(raw_reset) if raw_reset else None
        precise = reset is not None and raw_reset is not None and "." in raw_reset  # fractions of a second
        budgets.append(Budget(kind, limit, min(remaining, limit), reset, precise))
    return RateLimitInfo(tuple(budgets), parse_retry_after(lower, now_wall))


# -- costs ------------------------------------------------------------------------------------


def _text_chars(value: Any) -> int:
    """Characters of prompt text in a system prompt, a message's content or a block list."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return len(value["text"])
        if "content" in value:
            return _text_chars(value["content"])
        return len(repr(value))  # a tool definition or an image block: its size, roughly
    return 0


def prompt_chars(params: Mapping[str, Any]) -> int:
    """The prompt's characters: tools, system and every message."""
    return (
        _text_chars(params.get("tools") or [])
        + _text_chars(params.get("system") or "")
        + _text_chars(params.get("messages") or [])
    )


@dataclass(frozen=True)
class Cost:
    """What one request takes from each budget when it is admitted."""

    requests: float = 1.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    raw_input: float = 0.0  # the unscaled chars/4 estimate, to learn the ratio from
    model: str = ""  # whose budgets it is charged to

    def of(self, kind: str) -> float:
        if kind == "tokens":
            return self.input_tokens + self.output_tokens
        return float(getattr(self, kind))


def estimate_cost(params: Mapping[str, Any], input_ratio: float = 1.0) -> Cost:
    """The cost of sending ``params``: see the module docstring."""
    raw = prompt_chars(params) / CHARS_PER_TOKEN
    max_tokens = params.get("max_tokens")
    output = float(max_tokens) if isinstance(max_tokens, (int, float)) and not isinstance(max_tokens, bool) else 0.0
    return Cost(1.0, max(1.0, raw * input_ratio), output, raw, str(params.get("model") or ""))


# -- one bucket -------------------------------------------------------------------------------


@dataclass
class Bucket:
    """The local copy of one of the account's token buckets."""

    capacity: float
    rate: float  # refill per second
    level: float
    at: float  # clock time of ``level``
    rate_learnt: bool = False

    def level_at(self, now: float) -> float:
        return min(self.capacity, self.level + self.rate * max(0.0, now - self.at))

    def take(self, amount: float, now: float) -> None:
        self.level, self.at = self.level_at(now) - amount, now

    def give(self, amount: float, now: float) -> None:
        self.level, self.at = min(self.capacity, self.level_at(now) + amount), now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` (at most the whole bucket) is there; 0 when it is now."""
        need = min(amount, self.capacity) - self.level_at(now)
        if need <= 1e-9 * max(1.0, self.capacity):  # rounding, not a shortage
            return 0.0
        return need / self.rate if self.rate > 0 else math.inf

    def sync(self, budget: Budget, now: float, now_wall: float) -> None:
        """Take in what a reply said: the size, the refill rate when the reply shows a real
        deficit, and the level, which a reply may only lower (see the module docstring)."""
        level = self.level_at(now)
        if budget.limit != self.capacity:  # a new limit (a tier changed since a seeding run): the
            self.rate *= budget.limit / self.capacity  # same refill time, until a deficit says more
        self.capacity = budget.limit
        # ``remaining`` is a whole number rounded down: the deficit may be 1 less. Only a deficit
        # that is large even so teaches the rate: with a bucket of 3, a deficit of 1 taught a
        # rate of 0, i.e. the floor of one bucket per 10 minutes, and the run stalled for minutes
        deficit = budget.limit - budget.remaining - 1
        if budget.reset is not None and deficit > 0 and deficit >= RATE_MIN_DEFICIT * budget.limit:
            until = budget.reset.timestamp() - now_wall + (0.0 if budget.reset_precise else 1.0)
            if until > 0:
                rate = RATE_MARGIN * deficit / until
                rate = min(max(rate, budget.limit / 600), budget.limit / 0.05)  # full in 10 min at most, 50 ms at least
                self.rate = rate if not self.rate_learnt else (self.rate + rate) / 2
                self.rate_learnt = True
        self.level, self.at = min(level, budget.remaining), now

    @classmethod
    def from_budget(cls, budget: Budget, now: float, now_wall: float) -> Bucket:
        bucket = cls(budget.limit, budget.limit / 60.0, budget.remaining, now)
        bucket.sync(budget, now, now_wall)
        return bucket


# -- the pacer --------------------------------------------------------------------------------


class SendingStopped(BaseException):
    """The run was told to send nothing more (Ctrl-C, ``--batch-max-cost``) while this request
    was between two HTTP attempts: its last attempt failed, and the SDK's retry would be a new
    request. A ``BaseException``, so that the SDK's retry loop, which retries on any
    ``Exception``, lets it through; the dispatcher ends the row as not sent."""


class Slot:
    """One admitted request: :meth:`settle` it with the reply's usage, or leave it unsettled
    (an error) and its cost is refunded when the slot is released."""

    def __init__(
        self,
        pacer: Pacer,
        cost: Cost,
        charged: frozenset[str] | None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pacer = pacer
        self.cost = cost
        #: the budgets the request was charged to (those known when it left); None: not admitted
        self.charged = charged
        self.settled = False
        self.sends = 0  # HTTP attempts so far (the SDK's retries included)
        self.refused = False  # the last attempt got a 429/529: its cost was given back
        self.sent_at: float | None = None  # when its last HTTP attempt left (the pacer's clock)
        self.stop = stop  # the run was told to send nothing more
        #: the task sending it, and whether its last attempt failed with nothing in flight since
        #: (the SDK then waits, a retry-after of up to a minute, before it tries again)
        self.task: asyncio.Task[Any] | None = None
        self.between_attempts = False
        #: ended by :meth:`Pacer.stop_between_attempts` (``cancelled``: through its task)
        self.stopped = False
        self.cancelled = False

    @property
    def admitted(self) -> bool:
        return self.charged is not None

    def settle(self, usage: Any, replayed: bool) -> None:
        """The reply's usage (``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``)."""
        if self.charged is not None and not self.settled:
            self.settled = True
            self.pacer.settle(self.cost, usage, replayed, self.charged)


class ModelBudgets:
    """One model's budgets as its replies told them, its ``retry-after`` hold, and its queue."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        self.paused_until = 0.0
        self.paused_by: str | None = None
        #: when the first reply with budgets came, or the budgets were seeded (None: none known yet)
        self.learnt_at: float | None = None
        #: whether a live reply of this run told the budgets (only then are they worth keeping)
        self.heard = False
        self.queue: deque[asyncio.Event] = deque()  # one event per waiting request


class Pacer:
    """Admits requests so that no budget is exceeded, with at most ``concurrency`` in flight.

    ``enabled=False`` gives the fixed concurrency of old: ``concurrency`` in flight, nothing
    learnt from the replies. Not thread-safe: every method runs on the dispatcher's loop.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.enabled = enabled
        self.clock = clock
        self.wall = wall
        self.window = float(self.concurrency)  # see the module's docstring: the first wave
        self.threshold = float(self.concurrency)  # slow start below it, +1 per window above
        self.in_flight = 0
        self.models: dict[str, ModelBudgets] = {}  # by the requests' ``model``
        self.input_ratio = 1.0
        self.last_backoff = -math.inf
        #: each model's account, its budgets are remembered under (limitstore.account_id)
        self.accounts: dict[str, str] = {}
        self.rate_limited = 0  # 429s seen
        self.overloaded = 0  # 529s seen
        self.paced = 0  # requests that waited for a budget
        #: the budget the last wait was for (None when the last request went out at once)
        self.paced_by: str | None = None
        self._slots: set[Slot] = set()  # admitted and not released

    def of(self, model: str = "") -> ModelBudgets:
        """``model``'s budgets (made when first asked for)."""
        budgets = self.models.get(model)
        if budgets is None:
            budgets = self.models[model] = ModelBudgets()
        return budgets

    @property
    def buckets(self) -> dict[str, Bucket]:
        """The buckets of requests that name no model (a pacer used on its own)."""
        return self.of("").buckets

    # -- what an earlier run learnt (see limitstore.py) ----------------------------------------

    def seed(self, known: Iterable[KnownBudget], model: str = "") -> None:
        """Start from the budgets an earlier run on this account left, topped up by the refill
        since: the first wave is paced like any other. The first reply corrects them (a lower
        level or a new limit is taken at once), and a 429 to a request sent under them is not
        "blind" (it halves the window), since the budgets were believed known."""
        if not self.enabled:
            return
        now, wall = self.clock(), self.wall()
        st = self.of(model)
        for b in known:
            if b.kind in KINDS or b.kind == "tokens":
                st.buckets[b.kind] = Bucket(b.limit, b.rate, b.level_at(wall), now, b.rate_learnt)
        _drop_combined(st.buckets)
        if st.buckets:
            st.learnt_at = now

    def known(self, model: str = "") -> tuple[KnownBudget, ...]:
        """``model``'s budgets as they stand now, to seed the next run; none when no live reply
        of this run told them (a run that only replayed would otherwise pass seeded guesses on
        as news)."""
        st = self.models.get(model)
        if not self.enabled or st is None or not st.heard:
            return ()
        now, wall = self.clock(), self.wall()
        return tuple(
            KnownBudget(kind, b.capacity, b.rate, b.level_at(now), wall, b.rate_learnt)
            for kind, b in st.buckets.items()
        )

    # -- arithmetic (synchronous) ---------------------------------------------------------------

    def cost(self, params: Mapping[str, Any]) -> Cost:
        return estimate_cost(params, self.input_ratio)

    def delay(self, cost: Cost, now: float | None = None, *, retry: bool = False) -> tuple[float, str | None]:
        """Seconds before ``cost`` may be sent, and why: a budget's kind, ``"backoff"`` (a
        ``retry-after``) or ``"concurrency"`` (the window is full: wait for a reply). A
        ``retry`` is already in flight: only the budgets hold it."""
        now = self.clock() if now is None else now
        if not retry and self.in_flight >= max(1, math.floor(self.window)):
            return math.inf, "concurrency"
        if not self.enabled:
            return 0.0, None
        st = self.of(cost.model)
        wait, why = 0.0, None
        if st.paused_until > now:
            wait, why = st.paused_until - now, "backoff"
        for kind, bucket in st.buckets.items():
            w = bucket.wait(cost.of(kind), now)
            if w > wait:
                wait, why = w, kind
        return wait, why

    def admit(self, cost: Cost, now: float | None = None) -> frozenset[str]:
        """Count the request in flight and take its cost; the budgets it was charged to."""
        now = self.clock() if now is None else now
        self.in_flight += 1
        if not self.enabled:
            return frozenset()
        buckets = self.of(cost.model).buckets
        for kind, bucket in buckets.items():
            bucket.take(cost.of(kind), now)
        return frozenset(buckets)

    def settle(
        self,
        cost: Cost,
        usage: Any,
        replayed: bool,
        charged: frozenset[str] = frozenset(KINDS),
        now: float | None = None,
    ) -> None:
        """A reply came: give back what it did not use (all of it when it was replayed), learn
        the input ratio from live usage, and widen the window."""
        if not self.enabled:
            return
        now = self.clock() if now is None else now
        if replayed:
            self._refund(cost, charged, now)
        else:
            counted = float(getattr(usage, "input_tokens", 0) or 0) + float(
                getattr(usage, "cache_creation_input_tokens", 0) or 0
            )
            output = float(getattr(usage, "output_tokens", 0) or 0)
            if cost.raw_input > 0 and counted > 0:
                ratio = min(4.0, max(0.05, counted / cost.raw_input))
                self.input_ratio = 0.7 * self.input_ratio + 0.3 * ratio
            used = {"requests": 1.0, "input_tokens": counted, "output_tokens": output, "tokens": counted + output}
            for kind, bucket in self.of(cost.model).buckets.items():
                if kind in charged:
                    bucket.give(cost.of(kind) - used[kind], now)
        if self.window < self.threshold:
            self.window += 1.0
        else:
            self.window += 1.0 / max(1.0, self.window)
        self.window = min(self.window, float(self.concurrency))

    def release(self, slot: Slot, now: float | None = None) -> None:
        if slot.charged is None:
            return
        self._slots.discard(slot)
        self.in_flight -= 1
        if not slot.settled and self.enabled:
            self._refund(slot.cost, slot.charged, self.clock() if now is None else now)
        self._notify()

    def _refund(self, cost: Cost, charged: frozenset[str], now: float) -> None:
        for kind, bucket in self.of(cost.model).buckets.items():
            if kind in charged:
                bucket.give(cost.of(kind), now)

    def observe(
        self, status: int, headers: Mapping[str, str], sent_at: float | None = None, model: str | None = None
    ) -> None:
        """A live reply's status and headers (each HTTP attempt, the SDK's retries included), for
        ``model``'s budgets (by default the model of the request this task is sending).

        A refused reply's ``retry-after`` is held to :data:`RETRY_AFTER_CAP` in ``headers``
        themselves (:func:`cap_retry_after`), paced or not: the SDK reads them next."""
        if status >= 400 and isinstance(headers, MutableMapping):
            cap_retry_after(headers, self.wall())
        if not self.enabled:
            return
        if model is None:
            slot = _CURRENT.get(None)
            model = slot.cost.model if slot is not None and slot.pacer is self else ""
        st = self.of(model)
        now, wall = self.clock(), self.wall()
        info = parse_headers(headers, wall)
        if info.budgets:
            st.heard = True
            if st.learnt_at is None:
                st.learnt_at = now
        for budget in info.budgets:
            bucket = st.buckets.get(budget.kind)
            if bucket is None:
                bucket = st.buckets[budget.kind] = Bucket.from_budget(budget, now, wall)
                self._charge_in_flight(model, budget.kind, bucket, now, sent_at)
            else:
                bucket.sync(budget, now, wall)
        _drop_combined(st.buckets)
        if status in (429, 529):
            if status == 429:
                self.rate_limited += 1
            else:
                self.overloaded += 1
            # A 429 to a request sent before any budget was known (the first wave, sent blind)
            # is not a sign of a window too wide: the budgets known now gate every request.
            learnt = st.learnt_at
            blind = status == 429 and learnt is not None and sent_at is not None and sent_at < learnt
            self._back_off(st, now, sent_at, info, status, shrink=not blind)
        self._notify()

    def _charge_in_flight(self, model: str, kind: str, bucket: Bucket, now: float, sent_at: float | None) -> None:
        """A budget first heard of: charge it the requests in flight that left after this reply's
        request (and this reply's own is not charged). The reply's ``remaining`` counts what
        reached the API before it, which the requests sent earlier did (they share the
        connections, first come first served); one sent later may not have, and would then find
        the budget spent. Charging the earlier ones too counted a first wave twice: at
        concurrency 64, a whole minute's budget waited for nothing."""
        current = _CURRENT.get(None)
        for slot in self._slots:
            if slot is current or slot.refused or slot.charged is None or kind in slot.charged:
                continue
            if slot.cost.model != model:
                continue
            if sent_at is not None and slot.sent_at is not None and slot.sent_at <= sent_at:
                continue
            bucket.take(slot.cost.of(kind), now)
            slot.charged = slot.charged | {kind}

    def _back_off(
        self, st: ModelBudgets, now: float, sent_at: float | None, info: RateLimitInfo, status: int, shrink: bool
    ) -> None:
        if shrink and (sent_at is None or sent_at >= self.last_backoff):  # once per round trip
            self.threshold = max(1.0, math.floor(max(self.window, self.in_flight) / 2))
            self.window = self.threshold
            self.last_backoff = now
        if info.retry_after:
            st.paused_until = max(st.paused_until, now + min(info.retry_after, RETRY_AFTER_CAP))
        exhausted = [b for b in info.budgets if b.remaining < 1]
        st.paused_by = exhausted[0].kind if exhausted else ("overloaded" if status == 529 else None)

    @property
    def status(self) -> str:
        """What the progress line says about pacing ("" when nothing holds requests back)."""
        if not self.enabled:
            return ""
        now = self.clock()
        held = [st for st in self.models.values() if st.paused_until > now]
        if held:
            paused_by = max(held, key=lambda st: st.paused_until).paused_by
            if paused_by in LABELS:
                return f"backing off: {LABELS[paused_by]} used up"
            return "backing off: the API is overloaded" if paused_by == "overloaded" else "backing off after a 429"
        if self.paced_by in LABELS:
            return f"paced by {LABELS[self.paced_by]}"
        refusals = self.rate_limited + self.overloaded
        if refusals and self.window < self.concurrency:
            return f"{math.floor(self.window)} in flight at most after {refusals} refusals (429/529)"
        return ""

    # -- the gate (asynchronous) ----------------------------------------------------------------

    def _notify(self) -> None:
        """Something changed (a reply, a release, an admission): the head of the queue looks
        again. Only the head is woken; the others wait for their turn at the head, so a state
        change costs one wake-up, not one per queued request (which made a 1,000-row queue
        quadratic)."""
        for st in self.models.values():  # a few models at most
            if st.queue:
                st.queue[0].set()

    async def acquire(
        self, cost: Cost | Callable[[], Cost], stop: Callable[[], bool] = lambda: False, model: str | None = None
    ) -> Slot:
        """Wait for the turn of ``cost`` (first come, first served); a slot that is not
        ``admitted`` when ``stop()`` became true while waiting.

        A callable ``cost`` is estimated when the request reaches the head of the queue, with
        the input ratio learnt by then (rows queued at the start would otherwise all be
        costed before any reply taught it)."""
        estimate = cost if callable(cost) else (lambda: cost)
        if model is None:
            model = estimate().model
        queue = self.of(model).queue  # each model's own: one waiting for its budget holds no other
        ticket = asyncio.Event()
        queue.append(ticket)
        why: str | None = None  # what the last wait at the head of the queue was for
        try:
            while True:
                if stop():
                    return Slot(self, estimate(), None)
                if queue[0] is not ticket:
                    ticket.clear()
                    await ticket.wait()  # woken when this request reaches the head
                    continue
                now_cost = estimate()
                wait, reason = self.delay(now_cost)
                if wait <= 0:
                    charged = self.admit(now_cost)
                    slot = Slot(self, now_cost, charged, stop)
                    slot.task = asyncio.current_task()
                    self._slots.add(slot)
                    self.paced_by = why
                    if why in LABELS or why == "backoff":
                        self.paced += 1
                    return slot
                why = reason
                if reason != "concurrency":
                    self.paced_by = reason
                ticket.clear()
                # stop() is set from another thread: the head looks again now and then
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ticket.wait(), min(wait, 0.25))
        finally:
            if queue and queue[0] is ticket:
                queue.popleft()
            elif ticket in queue:  # cancelled, or stopped, while not at the head
                queue.remove(ticket)
            self._notify()  # the next request in the queue is the head now

    @contextlib.asynccontextmanager
    async def slot(self, params: Mapping[str, Any], stop: Callable[[], bool] = lambda: False) -> AsyncIterator[Slot]:
        """``async with pacer.slot(params) as slot:`` send, then ``slot.settle(usage, replayed)``.

        The slot is this task's current one while the block runs: the HTTP attempts made in it
        (see :meth:`before_send` and :meth:`after_send`) are charged to it."""
        slot = await self.acquire(lambda: self.cost(params), stop, str(params.get("model") or ""))
        token = _CURRENT.set(slot)
        try:
            yield slot
        finally:
            _CURRENT.reset(token)
            self.release(slot)

    # -- each HTTP attempt (called by the client's transport, live requests only) -------------

    async def before_send(self) -> None:
        """Before an HTTP attempt of the current slot: a retry of an attempt that was refused
        (its cost given back) waits for the budgets again, like a new request, and is charged.
        A retry once the run sends nothing more is not sent (:class:`SendingStopped`)."""
        slot = _CURRENT.get(None)
        if slot is None or slot.charged is None or slot.pacer is not self:
            return
        _stop_if_told(slot)
        slot.sends += 1
        if not (slot.refused and self.enabled):
            return
        while True:
            wait, why = self.delay(slot.cost, retry=True)
            if wait <= 0:
                break
            self.paced_by = why
            await asyncio.sleep(min(wait, 0.25))
            _stop_if_told(slot)
        now = self.clock()
        buckets = self.of(slot.cost.model).buckets
        for kind, bucket in buckets.items():
            bucket.take(slot.cost.of(kind), now)
        slot.charged = frozenset(buckets)
        slot.refused = False

    def mark_sent(self) -> float:
        """The current slot's HTTP attempt leaves now (after :meth:`before_send`): its time,
        kept on the slot (see :meth:`_charge_in_flight`) and given back for :meth:`observe`."""
        now = self.clock()
        slot = _CURRENT.get(None)
        if slot is not None and slot.pacer is self:
            slot.sent_at = now
            slot.between_attempts = False
        return now

    def after_send(self, status: int) -> None:
        """After an HTTP attempt of the current slot: a 429 or 529 was not charged by the API,
        so its cost is given back until the SDK's retry (if any) is sent."""
        slot = _CURRENT.get(None)
        if slot is None or slot.charged is None or slot.pacer is not self or not self.enabled:
            return
        if status in (429, 529) and not slot.refused:
            self._refund(slot.cost, slot.charged, self.clock())
            slot.charged = frozenset()
            slot.refused = True

    def attempt_failed(self) -> None:
        """The current slot's HTTP attempt failed (an error status, or no reply at all): the SDK
        may wait and retry it, and until then the request can be stopped; at once
        (:class:`SendingStopped`) if the run sends nothing more already."""
        slot = _CURRENT.get(None)
        if slot is None or slot.charged is None or slot.pacer is not self:
            return
        slot.between_attempts = True
        _stop_if_told(slot)

    def stop_between_attempts(self) -> int:
        """The run sends nothing more: end every request that waits between two attempts (in
        the SDK's sleep before a retry, or for the budgets) rather than wait out a retry-after
        of up to a minute and then pay for a new request. Requests in flight finish: they are
        paid for. On the dispatcher's loop; how many were stopped."""
        stopped = 0
        for slot in list(self._slots):
            if slot.between_attempts and not slot.stopped and slot.task is not None and not slot.task.done():
                slot.stopped = slot.cancelled = True
                slot.task.cancel()
                stopped += 1
        return stopped


def _drop_combined(buckets: dict[str, Bucket]) -> None:
    """The combined ``tokens`` budget goes once the split input and output budgets are known:
    they say more."""
    if "tokens" in buckets and ("input_tokens" in buckets or "output_tokens" in buckets):
        del buckets["tokens"]


def _stop_if_told(slot: Slot) -> None:
    """Raise :class:`SendingStopped` if ``slot`` made an attempt and the run sends nothing more."""
    if slot.sends and slot.stop():
        slot.stopped = True
        raise SendingStopped


#: the slot of the request this task is sending
_CURRENT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("batchgen_pacer_slot", default=None)
