"""The account's rate limits remembered between runs (pytest_batchgen/limitstore.py). The pacer
seeded from them (``Pacer.seed``, ``Pacer.known``) and the runs end to end: tests/test_pacing.py."""

from __future__ import annotations

import json

import pytest

from pytest_batchgen import limitstore
from pytest_batchgen.limitstore import KnownBudget, account_id, recall, remember

T0 = 1_800_000_000.0


def test_the_store_is_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert limitstore.store_path() == tmp_path / "pytest-batchgen" / "rate-limits.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert limitstore.store_path() == tmp_path / "home" / ".cache" / "pytest-batchgen" / "rate-limits.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid, says the XDG spec: ignored
    assert limitstore.store_path() == tmp_path / "home" / ".cache" / "pytest-batchgen" / "rate-limits.json"


def test_an_account_is_its_base_url_and_credential_hashed_and_none_without_a_credential():
    key = "sk-ant-api03-secret"
    one = account_id(None, key)
    assert one == account_id("https://api.anthropic.com/", key)  # the SDK's default, spelled either way
    assert one != account_id("http://127.0.0.1:8080", key)
    assert one != account_id(None, key + "x")
    assert account_id(None, None) is None and account_id(None, "") is None
    assert one is not None and key not in one
    # the API limits each model class on its own: another set of models is another entry
    haiku = account_id(None, key, ["claude-haiku-5-5"])
    assert haiku != one and haiku != account_id(None, key, ["claude-sonnet-5-5"])
    assert account_id(None, key, ["b", "a", "a"]) == account_id(None, key, ["a", "b"])


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
        b'{"accounts": {"ACCOUNT": {"budgets": {"requests": {"limit": 1'
        + b"0" * 400
        + b', "rate": 1, "level": 1, "at": 0}}}}}',
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
    entry = {
        "budgets": {
            "requests": {"limit": 5, "rate": 1, "level": 9, "at": T0},
            "output_tokens": {"limit": 5, "rate": 1, "level": -3, "at": T0},
        }
    }
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


def test_a_file_system_without_locks_is_no_error(tmp_path, monkeypatch):
    import pytest_batchgen.fsutil as fsutil

    def no_locks(*args, **kwargs):
        raise NotImplementedError("FileSystem does not appear to support flock")

    monkeypatch.setattr(fsutil, "lock_for", no_locks)
    assert remember(account_id(None, "key"), (KnownBudget("requests", 5, 1, 2, T0),), tmp_path / "l.json") is False


def test_nothing_is_remembered_without_an_account_or_a_budget(tmp_path):
    path = tmp_path / "limits.json"
    assert remember(None, (KnownBudget("requests", 5, 1, 2, T0),), path) is False
    assert remember(account_id(None, "key"), (), path) is False
    assert not path.exists()
