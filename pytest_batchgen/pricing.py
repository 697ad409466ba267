"""Estimated cost: a price table per model and the arithmetic on an attempt's usage.

Prices are US dollars per million tokens. The defaults are Anthropic's list prices
(https://www.anthropic.com/pricing, as published for Claude Haiku 4.5, Sonnet 4.5 and Opus
4.5; read 2026-11-29 from our own notes, not fetched live). The 5.x model ids the aliases map to
are assumed to cost what their 4.5 predecessors cost until you say otherwise. Cache writes are
the 5-minute ephemeral rate (1.25 x input), cache reads 0.1 x input, and the Message Batches API
halves everything. Override per model (or model-id prefix) in the ini option
``batchgen_prices`` or a plan's ``## Prices`` section (read with the plan, as ``Plan.prices``);
every figure here is an estimate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from .client import Usage
from .errors import BatchgenError

if TYPE_CHECKING:
    from .plan import Plan

PRICES_SOURCE = "https://www.anthropic.com/pricing (list prices of Claude Haiku/Sonnet/Opus 4.5; 2026-11-29)"
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, usage: Usage, batch: bool = False) -> float:
        dollars = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / 1_000_000
        return dollars * (BATCH_DISCOUNT if batch else 1.0)

    @property
    def one_hour_write(self) -> float:
        """A 1-hour cache write (what Message Batches' requests make): 2 x input, where
        ``cache_write`` is the 5-minute rate (never below it, for a table that says more)."""
        return max(self.input * 2, self.cache_write)

    def caching_saved(self, usage: Usage, batch: bool = False, one_hour_writes: int = 0) -> float:
        """What the cache reads saved, less what the cache writes cost beyond plain input.

        As the call was billed: ``one_hour_writes`` of its cache writes at the 1-hour rate (the
        rest at the 5-minute rate) and, for a batch call, everything at the batch price. At the
        list price and the 5-minute premium, a batch run's saving read about 3 x too high."""
        one_hour = min(one_hour_writes, usage.cache_creation_input_tokens)
        saved = usage.cache_read_input_tokens * (self.input - self.cache_read)
        extra = (usage.cache_creation_input_tokens - one_hour) * (self.cache_write - self.input) + one_hour * (
            self.one_hour_write - self.input
        )
        return (saved - extra) / 1_000_000 * (BATCH_DISCOUNT if batch else 1.0)


#: model-id prefixes -> price; the longest matching prefix wins.
DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        "claude-haiku": Price(1.00, 5.00, 1.25, 0.10),
        "claude-sonnet": Price(3.00, 15.00, 3.75, 0.30),
        "claude-opus": Price(5.00, 25.00, 6.25, 0.50),
        "claude-opus-4-1": Price(15.00, 75.00, 18.75, 1.50),
        "claude-opus-4-0": Price(15.00, 75.00, 18.75, 1.50),
        "claude-opus-4-2025": Price(15.00, 75.00, 18.75, 1.50),
    }
)

_PRICE_LINE = re.compile(
    r"^\s*`?(?P<model>[A-Za-z0-9_.\-]+)`?\s*[:=]\s*\$?(?P<a>[\d.]+)\s*,\s*\$?(?P<b>[\d.]+)"
    r"(?:\s*,\s*\$?(?P<c>[\d.]+)\s*,\s*\$?(?P<d>[\d.]+))?\s*$"
)


def parse_price_line(line: str) -> tuple[str, Price] | None:
    """``model: input, output[, cache_write, cache_read]`` (dollars per million tokens)."""
    m = _PRICE_LINE.match(line)
    if not m:
        return None
    try:  # ``[\d.]+`` also matches "1.2.3"
        inp, out = float(m["a"]), float(m["b"])
        write = float(m["c"]) if m["c"] else inp * 1.25
        read = float(m["d"]) if m["d"] else inp * 0.1
    except ValueError:
        return None
    return m["model"], Price(inp, out, write, read)


class PriceTable:
    """Prices by model-id prefix: defaults, then ini overrides, then the plan's."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES)
        self.prices.update(overrides or {})

    def price(self, model: str) -> Price | None:
        best = None
        for prefix, price in self.prices.items():
            if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, price)
        return best[1] if best else None

    def cost(self, model: str, usage: Usage, batch: bool = False) -> float:
        price = self.price(model)
        return price.cost(usage, batch) if price else 0.0

    def of(self, plan: Path | None) -> PriceTable:
        """One table prices every plan alike (a caller that has no plans: tests, benchmarks)."""
        return self


class PlanPrices(Protocol):
    """Where cost is computed, the price table of the row's plan: :class:`Prices` in a run,
    a single :class:`PriceTable` where there is one table for everything."""

    def of(self, plan: Path | None) -> PriceTable: ...


@dataclass(frozen=True)
class Prices:
    """The run's price tables, one per plan: the defaults, then the ini file's, then that
    plan's own ``## Prices`` (its alias keys resolved through that plan's models).

    One table for the whole run let a plan's ``## Prices`` price every other plan's rows too,
    their judge calls and the ``--batch-max-cost`` they count against: the README says the
    plan wins over the ini file, for its own rows."""

    #: the defaults and the ini file's prices: a row of no known plan
    base: PriceTable = field(default_factory=PriceTable)
    by_plan: Mapping[Path, PriceTable] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of_plans(cls, ini: Mapping[str, Price], plans: Iterable[Plan]) -> Prices:
        tables = {
            plan.path: PriceTable({**with_aliases(ini, plan.models), **with_aliases(plan.prices, plan.models)})
            for plan in plans
        }
        return cls(PriceTable(ini), MappingProxyType(tables))

    def of(self, plan: Path | None) -> PriceTable:
        return self.by_plan.get(plan, self.base) if plan is not None else self.base


def with_aliases(prices: Mapping[str, Price], aliases: Mapping[str, str]) -> dict[str, Price]:
    """Price keys that are model aliases (``haiku``) stand for the model id they resolve to.

    Without this, ``haiku: 2, 10`` (the name the plan's rows use) matches no model id and the
    override is silently ignored."""
    return {aliases.get(key.lower(), key): price for key, price in prices.items()}


def ini_prices(lines: Iterable[str]) -> dict[str, Price]:
    """The ``batchgen_prices`` ini option's lines; a line that is not a price is a usage error."""
    out: dict[str, Price] = {}
    for line in lines:
        parsed = parse_price_line(line)
        if parsed is None:
            raise BatchgenError(
                f"batchgen_prices: cannot read {line!r}; write 'model: input, output[, cache_write, cache_read]'"
            )
        out[parsed[0]] = parsed[1]
    return out
