"""The account's rate limits, remembered from one run to the next.

The pacer (:mod:`.pacing`) learns the account's budgets from the first reply's
``anthropic-ratelimit-*`` headers. Until that reply, a run knows nothing, so its first wave of
``--batch-concurrency`` requests goes out blind; an account whose limits are below that wave
answers part of it with 429s (issue 12: 53 of 553 requests when input tokens bind). Limits
belong to the account and change rarely, so the last run's budgets are a good first guess for
the next: this module keeps them in the user's cache folder, and a run seeds its pacer from them
so that its first wave is already paced.

What is kept, per account and model (a hash of the API's base URL, the credential and the
model id: the API limits each model class apart; the key itself is never written; the pacer
keeps each model's budgets apart too), after a run whose live replies told the
budgets: each budget's limit, its refill rate, and its level when the run ended, with the
wall-clock time. A new run tops that level up by the refill since then, so a run started a
minute or more after the last one finds its buckets full, and one started at once does not
assume the budget the last one spent. The first reply of the new run then corrects them as
before: a lower level is taken at once, and a new limit (a tier changed) rescales the refill.

The file is ``$XDG_CACHE_HOME/pytest-batchgen/rate-limits.json`` (``~/.cache`` without
``XDG_CACHE_HOME``). An unreadable or malformed file is ignored, and deleting it is safe: the
next run starts blind, as every run did before. ``batchgen_remember_limits = false`` turns the
whole thing off.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pacing import Pacer

#: accounts kept in the file: the most recently used
MAX_ACCOUNTS = 32

#: what the API's base URL is when ``ANTHROPIC_BASE_URL`` is not set (the SDK's default)
DEFAULT_BASE_URL = "https://api.anthropic.com"


@dataclass(frozen=True)
class KnownBudget:
    """One budget as a run left it: its size, refill per second and level at wall time ``at``."""

    kind: str
    limit: float
    rate: float
    level: float
    at: float
    rate_learnt: bool = False

    def level_at(self, wall: float) -> float:
        """The level at wall time ``wall``: what was left, refilled since (never above the limit)."""
        return min(self.limit, self.level + self.rate * max(0.0, wall - self.at))


def store_path() -> Path:
    """The file: under ``$XDG_CACHE_HOME``, or ``~/.cache`` when that is unset or relative (the
    XDG spec says to ignore a relative one: it would put the file in whatever folder a run is in)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-batchgen" / "rate-limits.json"


def account_id(base_url: str | None, credential: str | None, models: Iterable[str] = ()) -> str | None:
    """The name in the file of an account and the models a run calls (the API limits each model
    class on its own), None without a credential (nothing to remember)."""
    if not credential:
        return None
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    named = "\n".join(sorted(set(models)))
    return hashlib.sha256(f"{url}\n{credential}\n{named}".encode()).hexdigest()[:32]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    accounts = data.get("accounts") if isinstance(data, dict) else None
    return accounts if isinstance(accounts, dict) else {}


def _budget(kind: str, raw: Any) -> KnownBudget | None:
    if not isinstance(raw, dict):
        return None
    try:
        values = [float(raw[k]) for k in ("limit", "rate", "level", "at")]
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        return None
    limit, rate, level, at = values
    return KnownBudget(kind, limit, rate, min(max(level, 0.0), limit), at, bool(raw.get("rate_learnt")))


def _fields(b: KnownBudget) -> dict[str, Any]:
    return {"limit": b.limit, "rate": b.rate, "level": b.level, "at": b.at, "rate_learnt": b.rate_learnt}


def recall(account: str | None, path: Path | None = None) -> tuple[KnownBudget, ...]:
    """The budgets the last run on ``account`` left (none when there is nothing usable)."""
    if account is None:
        return ()
    entry = _read(path or store_path()).get(account)
    budgets = entry.get("budgets") if isinstance(entry, dict) else None
    if not isinstance(budgets, dict):
        return ()
    found = (_budget(str(kind), raw) for kind, raw in budgets.items())
    return tuple(b for b in found if b is not None)


def remember(account: str | None, budgets: tuple[KnownBudget, ...], path: Path | None = None) -> bool:
    """Keep ``budgets`` as ``account``'s; whether the file was written. Never raises for a file
    that cannot be written: remembering is a convenience, the run's own work is done."""
    if account is None or not budgets:
        return False
    from .fsutil import atomic_write, lock_for

    path = path or store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock_for(path, timeout=5):
            accounts = _read(path)
            accounts.pop(account, None)
            accounts[account] = {"budgets": {b.kind: _fields(b) for b in budgets}}
            kept = dict(list(accounts.items())[-MAX_ACCOUNTS:])  # insertion order: the newest last
            atomic_write(path, json.dumps({"version": 1, "accounts": kept}, indent=1) + "\n", sync=False)
    except Exception:  # a read-only home, a lock timeout, a file system without locks (NFS)...
        return False
    return True


def seed_pacer(pacer: Pacer, model: str, credential: str | None) -> None:
    """Seed ``pacer``'s budgets for ``model`` from what the last run on this account left, and
    note the account, under which :func:`remember_pacer` keeps them at the end."""
    account = account_id(os.environ.get("ANTHROPIC_BASE_URL"), credential, [model])
    if account is not None:
        pacer.accounts[model] = account
        pacer.seed(recall(account), model)


def remember_pacer(pacer: Pacer) -> None:
    """Keep what ``pacer`` knows of each model's budgets under the account it was seeded for
    (nothing for a model it was not: a run that was asked not to remember)."""
    for model, account in pacer.accounts.items():
        remember(account, pacer.known(model))
