"""The account's rate limits remembered between runs (pytest_batchgen/limitstore.py) and the
pacer seeded from them (``Pacer.seed``, ``Pacer.known``). End to end in tests/test_pacing.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from pytest_batchgen import limitstore
from pytest_batchgen.limitstore import KnownBudget, account_id, recall, remember
from pytest_batchgen.pacing import Cost, Pacer

T0 = 1_800_000_000.0


def test_the_store_is_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert limitstore.store_path() == tmp_path / "pytest-batchgen" / "rate-limits.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert limitstore.store_path() == tmp_path / "home" / ".cache" / "pytest-batchgen" / "rate-limits.json"


def test_an_account_is_its_base_url_and_credential_hashed_and_none_without_a_credential():
    key = "sk-ant-api03-secret"
    one = account_id(None, key)
    assert one == account_id("https://api.anthropic.com/", key)  # the SDK's default, spelled either way
    assert one != account_id("http://127.0.0.1:8080", key)
    assert one != account_id(None, key + "x")
    assert account_id(None, None) is None and account_id(None, "") is None
    assert one is not None and key not in one


def test_what_is_remembered_comes_back_and_the_key_is_never_written(tmp_path):
    path = tmp_path / "limits.json"
    account = account_id(None, "sk-ant-secret")
    budgets = (
        KnownBudget("requests", 50, 50 / 60, 12, T0, True),
        KnownBudget("input_tokens", 30_000, 500, 100, T0),
    )
    assert remember(account, budgets, path)
    assert recall(account, path) == budgets
    assert recall(account_id(None, "another key"), path) == ()
    assert "sk-ant-secret" not in path.read_text()


def test_a_level_is_topped_up_by_the_refill_since_and_never_above_the_limit():
    b = KnownBudget("requests", 60, 1.0, 10, T0)
    assert b.level_at(T0) == 10
    assert b.level_at(T0 + 20) == 30
    assert b.level_at(T0 + 3600) == 60
    assert b.level_at(T0 - 5) == 10  # a clock set back does not drain it


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"accounts": []}',
        b'{"accounts": {"ACCOUNT": {"budgets": {"requests": {"limit": "x", "rate": 1, "level": 1, "at": 0}}}}}',
        b'{"accounts": {"ACCOUNT": {"budgets": {"requests": {"limit": 0, "rate": 1, "level": 1, "at": 0}}}}}',
        b'{"accounts": {"ACCOUNT": {"budgets": {"requests": {"limit": 5, "rate": NaN, "level": 1, "at": 0}}}}}',
        b'{"accounts": {"ACCOUNT": {"budgets": {"requests": {"limit": 5, "level": 1, "at": 0}}}}}',
        b'{"accounts": {"ACCOUNT": {"budgets": []}}}',
    ],
)
def test_a_file_or_entry_that_cannot_be_used_is_ignored(tmp_path, content):
    path = tmp_path / "limits.json"
    account = account_id(None, "key")
    path.write_bytes(content.replace(b"ACCOUNT", (account or "").encode()))
    assert recall(account, path) == ()
    # and the next run writes a good one over it
    budget = KnownBudget("requests", 5, 1, 2, T0)
    assert remember(account, (budget,), path)
    assert recall(account, path) == (budget,)


def test_a_level_above_the_limit_or_below_zero_is_clamped(tmp_path):
    path = tmp_path / "limits.json"
    account = account_id(None, "key")
    entry = {"budgets": {"requests": {"limit": 5, "rate": 1, "level": 9, "at": T0},
                         "output_tokens": {"limit": 5, "rate": 1, "level": -3, "at": T0}}}
    path.write_text(json.dumps({"accounts": {account: entry}}))
    assert [(b.kind, b.level) for b in recall(account, path)] == [("requests", 5), ("output_tokens", 0)]


def test_only_the_most_recent_accounts_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(limitstore, "MAX_ACCOUNTS", 3)
    path = tmp_path / "limits.json"
    accounts = [account_id(None, f"key-{i}") for i in range(5)]
    for account in accounts:
        remember(account, (KnownBudget("requests", 5, 1, 2, T0),), path)
    remember(accounts[1], (KnownBudget("requests", 7, 1, 2, T0),), path)  # used again: newest
    kept = [a for a in accounts if recall(a, path)]
    assert kept == [accounts[1], accounts[3], accounts[4]]
    assert recall(accounts[1], path)[0].limit == 7


def test_a_folder_that_cannot_be_written_is_no_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert remember(account_id(None, "key"), (KnownBudget("requests", 5, 1, 2, T0),), blocker / "x" / "l.json") is False


def test_nothing_is_remembered_without_an_account_or_a_budget(tmp_path):
    path = tmp_path / "limits.json"
    assert remember(None, (KnownBudget("requests", 5, 1, 2, T0),), path) is False
    assert remember(account_id(None, "key"), (), path) is False
    assert not path.exists()


# -- the pacer seeded -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now


def test_a_seeded_pacer_paces_its_first_wave():
    # an input budget of 1,000 tokens, 400 left 10 s ago, refilling 10 a second: 500 now
    clock = Clock()
    p = Pacer(64, clock=clock, wall=clock.wall)
    p.seed([KnownBudget("input_tokens", 1_000, 10.0, 400, clock.wall() - 10, True)])
    assert p.seeded and p.buckets["input_tokens"].level_at(clock.now) == pytest.approx(500)
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
    assert p.buckets == {} and not p.seeded and p.known() == ()


def test_what_a_run_knows_at_its_end_seeds_the_next():
    clock = Clock()
    first = Pacer(8, clock=clock, wall=clock.wall)
    assert first.known() == ()  # no reply told the budgets
    first.observe(200, {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-requests-remaining": "20",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
    })
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
    p.observe(200, {
        "anthropic-ratelimit-requests-limit": "40",
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
    })
    bucket = p.buckets["requests"]
    assert bucket.capacity == 40 and bucket.level_at(clock.now) == 3


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
