"""Unit tests of the price table and the reporting functions (issue #6).

Pure functions on plain data: :mod:`pytest_batchgen.pricing` (the price table, its overrides
and the arithmetic on a usage) and :mod:`pytest_batchgen.report` (totals, the summary lines,
the JSON document, the GitHub annotations and the live :class:`~report.Progress` line). The
end-to-end runs are in ``test_reporting.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_batchgen import report
from pytest_batchgen.client import Usage
from pytest_batchgen.dispatch import Attempt, RowResult
from pytest_batchgen.errors import BatchgenError, PlanError
from pytest_batchgen.plan import Row, parse_prices, scan
from pytest_batchgen.pricing import (
    BATCH_DISCOUNT,
    DEFAULT_PRICES,
    Price,
    PriceTable,
    ini_prices,
    parse_price_line,
    with_aliases,
)
from pytest_batchgen.report import (
    SCHEMA,
    SCHEMA_VERSION,
    Progress,
    RowReport,
    github_annotations,
    json_report,
    summary_lines,
    totals,
)
from pytest_batchgen.results import ItemFailure

HAIKU = DEFAULT_PRICES["claude-haiku"]


# -- Price: the arithmetic ----------------------------------------------------------------------


def test_cost_is_each_kind_of_token_at_its_own_rate_per_million():
    price = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)
    usage = Usage(
        input_tokens=1_000, output_tokens=2_000, cache_creation_input_tokens=4_000, cache_read_input_tokens=10_000
    )
    # 1000*3 + 2000*15 + 4000*3.75 + 10000*0.3 = 3000 + 30000 + 15000 + 3000 = 51000 per million
    assert price.cost(usage) == pytest.approx(0.051)
    assert price.cost(usage, batch=True) == pytest.approx(0.051 * BATCH_DISCOUNT)
    assert BATCH_DISCOUNT == 0.5
    assert price.cost(Usage()) == 0.0


@pytest.mark.parametrize(
    "usage, expected",
    [
        (Usage(), 0.0),
        (Usage(output_tokens=1_000_000), 5.0),
        (Usage(input_tokens=1_000_000), 1.0),
        (Usage(cache_creation_input_tokens=1_000_000), 1.25),
        (Usage(cache_read_input_tokens=1_000_000), 0.10),
        (Usage(500, 1_900), 0.01),
    ],
)
def test_haiku_list_prices(usage, expected):
    assert HAIKU.cost(usage) == pytest.approx(expected)


def test_caching_saved_is_the_reads_discount_less_the_writes_surcharge():
    # reads cost 0.1 x input instead of 1 x; writes cost 1.25 x input instead of 1 x
    assert HAIKU.caching_saved(Usage(cache_read_input_tokens=1_000_000)) == pytest.approx(0.90)
    assert HAIKU.caching_saved(Usage(cache_creation_input_tokens=1_000_000)) == pytest.approx(-0.25)
    both = Usage(input_tokens=7, output_tokens=9, cache_creation_input_tokens=1_000, cache_read_input_tokens=2_000)
    assert HAIKU.caching_saved(both) == pytest.approx((2_000 * 0.9 - 1_000 * 0.25) / 1e6)
    # plain input and output tokens save nothing
    assert HAIKU.caching_saved(Usage(123, 456)) == 0.0


def test_a_batch_calls_caching_saving_is_at_half_price_with_its_one_hour_writes_premium():
    usage = Usage(7, 9, cache_creation_input_tokens=1_000, cache_read_input_tokens=4_000)
    # reads save 0.9 x input; 1-hour writes cost 2 x input, 1 x input more than plain input
    assert HAIKU.one_hour_write == pytest.approx(2.0)
    assert HAIKU.caching_saved(usage, batch=True, one_hour_writes=1_000) == pytest.approx(
        0.5 * (4_000 * 0.9 - 1_000 * 1.0) / 1e6
    )
    # a mix: 400 at the 1-hour rate, 600 at the 5-minute one; messages calls as before
    assert HAIKU.caching_saved(usage, batch=True, one_hour_writes=400) == pytest.approx(
        0.5 * (4_000 * 0.9 - 400 * 1.0 - 600 * 0.25) / 1e6
    )
    assert HAIKU.caching_saved(usage) == pytest.approx((4_000 * 0.9 - 1_000 * 0.25) / 1e6)
    # totals: a batch attempt's saving as it was billed
    attempt = Attempt(1, usage=usage, model="claude-haiku-5-5", batch=True, one_hour_writes=1_000)
    gen = RowResult("k", "passed", [attempt], wrote=True)
    t = totals([RowReport("plan.md", make_row("alpha.md"), "pending", "complete", "complete", gen)], PriceTable())
    assert t.caching_saved == pytest.approx(0.5 * (4_000 * 0.9 - 1_000) / 1e6)


def test_default_cache_rates_are_the_documented_multiples_of_input():
    for prefix, price in DEFAULT_PRICES.items():
        assert price.cache_write == pytest.approx(price.input * 1.25), prefix
        assert price.cache_read == pytest.approx(price.input * 0.1), prefix
        assert price.output == pytest.approx(price.input * 5), prefix


# -- PriceTable: prefixes and overrides ---------------------------------------------------------


@pytest.mark.parametrize(
    "model, expected",
    [
        ("claude-haiku-5-5", DEFAULT_PRICES["claude-haiku"]),
        ("claude-haiku-4-5-20251001", DEFAULT_PRICES["claude-haiku"]),
        ("claude-sonnet-5-5", DEFAULT_PRICES["claude-sonnet"]),
        ("claude-opus-5-5", DEFAULT_PRICES["claude-opus"]),
        ("claude-opus-4-5-20251101", DEFAULT_PRICES["claude-opus"]),
        # older Opus models are three times as dear: the longest prefix wins
        ("claude-opus-4-1-20250805", DEFAULT_PRICES["claude-opus-4-1"]),
        ("claude-opus-4-0", DEFAULT_PRICES["claude-opus-4-0"]),
        ("claude-opus-4-20250514", DEFAULT_PRICES["claude-opus-4-2025"]),
    ],
)
def test_longest_matching_prefix_wins(model, expected):
    assert PriceTable().price(model) == expected


def test_a_model_without_a_price_costs_nothing():
    table = PriceTable()
    assert table.price("gpt-9") is None
    assert table.cost("gpt-9", Usage(1_000, 1_000)) == 0.0


def test_overrides_replace_a_prefix_or_add_a_more_specific_one():
    table = PriceTable({"claude-haiku": Price(2, 10, 2.5, 0.2), "claude-sonnet-5-5": Price(1, 1, 1, 1)})
    assert table.cost("claude-haiku-5-5", Usage(output_tokens=1_000_000)) == pytest.approx(10.0)
    assert table.price("claude-sonnet-5-5") == Price(1, 1, 1, 1)
    assert table.price("claude-sonnet-4-5") == DEFAULT_PRICES["claude-sonnet"]  # untouched
    assert table.cost("claude-haiku-5-5", Usage(output_tokens=1_000_000), batch=True) == pytest.approx(5.0)
    assert DEFAULT_PRICES["claude-haiku"] == Price(1.0, 5.0, 1.25, 0.10)  # the defaults are not mutated


# -- price lines: ini option and the plan's ## Prices section -----------------------------------


@pytest.mark.parametrize(
    "line, model, price",
    [
        ("claude-haiku: 2, 10", "claude-haiku", Price(2, 10, 2.5, 0.2)),
        ("claude-haiku = 2, 10", "claude-haiku", Price(2, 10, 2.5, 0.2)),
        ("`claude-haiku-5-5`: $2, $10", "claude-haiku-5-5", Price(2, 10, 2.5, 0.2)),
        ("  my-model: 1.5,7.5,2,0.25  ", "my-model", Price(1.5, 7.5, 2, 0.25)),
        ("haiku: 0, 0", "haiku", Price(0, 0, 0, 0)),
    ],
)
def test_price_lines(line, model, price):
    parsed = parse_price_line(line)
    assert parsed is not None
    assert parsed[0] == model
    assert_price(parsed[1], price)


@pytest.mark.parametrize(
    "line",
    [
        "claude-haiku: 2",  # output price missing
        "claude-haiku: 2, 10, 3",  # a cache write price without a cache read price
        "claude-haiku costs 2 and 10",
        "claude-haiku: two, ten",
        "claude-haiku: 1.2.3, 4",  # not a number (used to escape as float()'s ValueError)
        "",
    ],
)
def test_unreadable_price_lines(line):
    assert parse_price_line(line) is None


def test_ini_prices_reads_every_line_and_names_a_bad_one():
    prices = ini_prices(["claude-haiku: 2, 10", "claude-opus: 4, 20, 5, 0.4"])
    assert sorted(prices) == ["claude-haiku", "claude-opus"]
    assert_price(prices["claude-haiku"], Price(2, 10, 2.5, 0.2))
    assert prices["claude-opus"] == Price(4, 20, 5, 0.4)
    assert ini_prices([]) == {}
    with pytest.raises(BatchgenError, match=r"batchgen_prices: cannot read 'claude-haiku: 1\.2\.3, 4'"):
        ini_prices(["claude-haiku: 2, 10", "claude-haiku: 1.2.3, 4"])


PLAN_HEAD = "# Plan\n\n## Format Reference\nref.md\n\n"


def plan_prices(path):
    """What load_plan puts in ``Plan.prices``: the ``## Prices`` section read by plan.parse_prices."""
    sections = scan(path.read_text(encoding="utf-8"))
    return parse_prices(next((s for s in sections if s.key == "prices"), None), path)


def test_plan_prices_reads_bullets_and_plain_lines_of_the_prices_section(tmp_path):
    plan = tmp_path / "plan.md"
    plan.write_text(
        PLAN_HEAD + "## Prices\n\n- `claude-haiku`: $2, $10\n- claude-sonnet-5-5: 6, 30, 7, 0.5\n\n"
        "## Phase 1\n\nclaude-opus: 1, 1\n",  # not in the Prices section: ignored
        encoding="utf-8",
    )
    prices = plan_prices(plan)
    assert sorted(prices) == ["claude-haiku", "claude-sonnet-5-5"]
    assert_price(prices["claude-haiku"], Price(2, 10, 2.5, 0.2))
    assert prices["claude-sonnet-5-5"] == Price(6, 30, 7, 0.5)
    plain = tmp_path / "plain.md"
    plain.write_text(PLAN_HEAD + "## Prices\n\nclaude-haiku: 3, 15\n", encoding="utf-8")
    prices = plan_prices(plain)
    assert list(prices) == ["claude-haiku"]
    assert_price(prices["claude-haiku"], Price(3, 15, 3.75, 0.3))
    none = tmp_path / "none.md"
    none.write_text(PLAN_HEAD, encoding="utf-8")
    assert plan_prices(none) == {}


def test_plan_prices_names_the_line_of_an_unreadable_price(tmp_path):
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN_HEAD + "## Prices\n\n- claude-haiku: 2, 10\n- claude-opus: cheap\n", encoding="utf-8")
    with pytest.raises(PlanError) as info:
        plan_prices(plan)
    assert info.value.line == 9
    assert "cannot read price line 'claude-opus: cheap'" in str(info.value)
    assert "dollars per million tokens" in str(info.value)


def test_a_price_keyed_by_a_model_alias_applies_to_the_model_it_resolves_to():
    aliases = {"haiku": "claude-haiku-5-5", "fast": "claude-haiku-4-5"}
    prices = with_aliases({"Haiku": Price(2, 10, 2.5, 0.2), "claude-opus": Price(1, 1, 1, 1)}, aliases)
    assert prices == {"claude-haiku-5-5": Price(2, 10, 2.5, 0.2), "claude-opus": Price(1, 1, 1, 1)}
    table = PriceTable(prices)
    assert table.price("claude-haiku-5-5") == Price(2, 10, 2.5, 0.2)
    assert table.price("claude-haiku-4-5") == DEFAULT_PRICES["claude-haiku"]  # another model: untouched


def test_each_plan_has_its_own_table_defaults_then_ini_then_its_own_prices(tmp_path):
    from pytest_batchgen.pricing import Prices

    ini = {"haiku": Price(4, 20, 5, 0.4), "claude-opus": Price(1, 1, 1, 1)}
    a = SimpleNamespace(
        path=tmp_path / "a.md", models={"haiku": "claude-haiku-5-5"}, prices={"haiku": Price(9, 9, 9, 9)}
    )
    b = SimpleNamespace(path=tmp_path / "b.md", models={"haiku": "claude-haiku-4-5"}, prices={})
    prices = Prices.of_plans(ini, [a, b])
    # a: its own price wins over the ini's; b: the ini's, through b's own alias
    assert prices.of(a.path).price("claude-haiku-5-5") == Price(9, 9, 9, 9)
    assert prices.of(b.path).price("claude-haiku-5-5") == HAIKU
    assert prices.of(b.path).price("claude-haiku-4-5") == Price(4, 20, 5, 0.4)
    assert prices.of(a.path).price("claude-opus-5") == prices.of(b.path).price("claude-opus-5") == Price(1, 1, 1, 1)
    # a plan the run does not know (or none): the defaults and the ini's
    assert prices.of(tmp_path / "c.md").price("claude-haiku-5-5") == HAIKU
    assert prices.of(None).price("claude-opus-5") == Price(1, 1, 1, 1)
    usage = Usage(1_000_000, 0)
    assert prices.of(a.path).cost("claude-haiku-5-5", usage) == pytest.approx(9.0)
    assert prices.of(b.path).cost("claude-haiku-5-5", usage) == pytest.approx(1.0)


# -- report: totals, summary, JSON, annotations -------------------------------------------------


def make_row(filename: str, *, status: str = "pending", model: str = "claude-haiku-5-5", line: int = 20) -> Row:
    return Row(
        phase="1",
        line=line,
        title=filename.removesuffix(".md").title(),
        filename=filename,
        model_cell="haiku",
        model=model,
        status=status,
        columns={},
    )


def attempt(number: int, usage: Usage, *, replayed: bool = False, error: str | None = None, failures=()) -> Attempt:
    would = HAIKU.cost(usage)
    return Attempt(
        number,
        usage=usage,
        stop_reason=None if error else "end_turn",
        replayed=replayed,
        model="claude-haiku-5-5",
        failures=list(failures),
        error=error,
        cost=0.0 if replayed else would,
        would_cost=would,
    )


U1 = Usage(1_000, 200, 3_000, 0)
U2 = Usage(400, 100, 0, 3_000)
U3 = Usage(500, 120, 0, 3_000)
FAIL = ItemFailure("category-value", "category is 'Z', expected one of: A, B, C", 16, "output/gamma.md", 3)


def sample_reports() -> list[RowReport]:
    alpha = make_row("alpha.md", line=20)
    beta = make_row("beta.md", line=21)
    gamma = make_row("gamma.md", line=22)
    done = make_row("done.md", status="complete", line=23)
    return [
        RowReport(
            "plan.md", alpha, "pending", "complete", "complete", RowResult("k1", "passed", [attempt(1, U1)], wrote=True)
        ),
        RowReport(
            "plan.md",
            beta,
            "pending",
            "complete",
            "complete",
            RowResult("k2", "passed", [attempt(1, U2, failures=["category-value: bad"]), attempt(2, U3)], wrote=True),
        ),
        RowReport(
            "plan.md",
            gamma,
            "pending",
            "pending",
            "failed",
            RowResult("k3", "failed", [attempt(1, U2), attempt(2, U3)], wrote=True),
            failures=[FAIL, ItemFailure("category-value", "again"), ItemFailure("lint", "linter exited 1")],
        ),
        RowReport("plan.md", done, "complete", "complete", "complete", None),
    ]


def test_totals_add_every_attempt_repairs_included():
    reports = sample_reports()
    t = totals(reports, PriceTable())
    assert (t.rows, t.complete, t.failed) == (4, 3, 1)
    assert (t.attempts, t.live, t.replayed) == (5, 5, 0)
    assert t.usage == U1 + U2 + U3 + U2 + U3
    assert t.cost == pytest.approx(HAIKU.cost(U1) + 2 * HAIKU.cost(U2) + 2 * HAIKU.cost(U3))
    assert t.caching_saved == pytest.approx(HAIKU.caching_saved(U1) + 2 * HAIKU.caching_saved(U2 + U3))
    assert t.replay_saved == 0.0
    assert t.skipped_by_budget == 0
    assert reports[1].cost == pytest.approx(HAIKU.cost(U2) + HAIKU.cost(U3))
    assert reports[1].usage == U2 + U3
    assert reports[3].attempts == [] and reports[3].cost == 0


def test_replayed_attempts_cost_nothing_and_count_as_saved():
    row = make_row("alpha.md")
    gen = RowResult("k", "passed", [attempt(1, U1, replayed=True), attempt(2, U2, replayed=True)], wrote=True)
    reports = [RowReport("plan.md", row, "pending", "complete", "complete", gen)]
    t = totals(reports, PriceTable())
    assert (t.attempts, t.live, t.replayed) == (2, 0, 2)
    assert t.cost == 0.0
    assert t.replay_saved == pytest.approx(HAIKU.cost(U1) + HAIKU.cost(U2))
    assert t.caching_saved == 0.0  # nothing was sent, so caching saved nothing
    lines = summary_lines(reports, PriceTable())
    assert lines[1].split()[-2] == "replayed"
    assert "estimated cost $0.0000" in lines[2]
    assert lines[-1] == "every call was replayed from cassettes: nothing was sent, nothing was spent"
    doc = json_report(reports, PriceTable(), meta={})
    assert doc["totals"]["all_replayed"] is True
    assert [a["call"] for a in doc["plans"][0]["rows"][0]["attempts"]] == ["replayed", "replayed"]
    assert [a["cost_usd"] for a in doc["plans"][0]["rows"][0]["attempts"]] == [0.0, 0.0]


def test_summary_lines_one_row_each_then_totals():
    reports = sample_reports()
    lines = summary_lines(reports, PriceTable(), budget_note="")
    cells = [report_cells(line) for line in lines[:5]]
    assert cells[0] == ["phase", "file", "model", "status", "att", "tokens in/out/cw/cr", "cost", "failed checks"]
    assert cells[1] == [
        "1",
        "alpha.md",
        "claude-haiku-5-5",
        "pending -> complete",
        "1",
        "1000/200/3000/0",
        money(HAIKU.cost(U1)),
        "-",
    ]
    assert cells[2] == [
        "1",
        "beta.md",
        "claude-haiku-5-5",
        "pending -> complete",
        "2",
        "900/220/0/6000",
        money(HAIKU.cost(U2) + HAIKU.cost(U3)),
        "-",
    ]
    # each failing check once, in the order they failed
    assert cells[3][-1] == "category-value, lint"
    assert cells[3][3] == "pending -> pending"
    assert cells[4] == ["1", "done.md", "claude-haiku-5-5", "complete -> complete", "-", "-", "-", "-"]
    total = sum(HAIKU.cost(u) for u in (U1, U2, U3, U2, U3))
    assert lines[5] == (
        "total: 4 rows, 3 complete, 1 failed; 5 calls (5 live, 0 replayed); tokens 2800/640/3000/12000 "
        f"(in/out/cache write/cache read); estimated cost {money(total)}"
    )
    saved = HAIKU.caching_saved(U1) + 2 * HAIKU.caching_saved(U2 + U3)
    assert lines[6] == f"prompt caching saved {money(saved)}"
    assert len(lines) == 7
    assert summary_lines(reports, PriceTable(), budget_note="stopped dispatching: x")[-1] == "stopped dispatching: x"


def test_the_summary_leaves_out_the_rows_that_did_not_run_and_counts_them():
    # rows deselected (-k, a node id) or never reached (-x) were listed as "complete -> complete",
    # like passing rows, under "total: 3 rows, 0 complete, 1 failed"; the JSON said "not run"
    failed = RowReport("plan.md", make_row("alpha.md", line=20), "complete", "complete", "failed", None)
    idle = RowReport("plan.md", make_row("beta.md", line=21), "complete", "complete", "not run", None)
    # stopped by -x after its request was sent: what it cost is shown, and that it did not run
    sent = RowReport(
        "plan.md",
        make_row("gamma.md", line=22),
        "pending",
        "pending",
        "not run",
        RowResult("k", "passed", [attempt(1, U1)], wrote=True),
    )
    lines = summary_lines([failed, idle, sent], PriceTable())
    files = [report_cells(line)[1] for line in lines[1:3]]
    assert files == ["alpha.md", "gamma.md"]
    assert report_cells(lines[2])[3] == "pending -> pending (not run)"
    assert lines[3].startswith("total: 3 rows, 0 complete, 1 failed, 2 not run; 1 call (1 live, 0 replayed);")
    assert json_report([failed, idle, sent], PriceTable(), meta={})["plans"][0]["rows"][1]["verdict"] == "not run"


def test_the_summary_of_a_run_of_no_row_has_no_table_and_says_one_row_in_the_singular():
    idle = RowReport("plan.md", make_row("beta.md", line=21), "complete", "complete", "not run", None)
    assert summary_lines([idle], PriceTable()) == [
        "total: 1 row, 0 complete, 0 failed, 1 not run; 0 calls (0 live, 0 replayed); tokens 0/0/0/0 "
        "(in/out/cache write/cache read); estimated cost $0.0000"
    ]


@pytest.mark.parametrize(
    ("usage", "line"),
    [
        (Usage(1_000, 200, 3_000, 0), "prompt caching cost $0.0008 more than plain input (cache writes not read)"),
        (Usage(1_000, 200, 30, 0), None),  # $0.0000 either way: not worth a line
        (Usage(1_000, 200, 0, 3_000), "prompt caching saved $0.0027"),
    ],
)
def test_the_summary_says_what_caching_saved_or_cost(usage, line):
    # a cache write costs 1.25 x input: a run whose writes no call read paid for caching
    row = make_row("alpha.md", line=20)
    report = RowReport("plan.md", row, "pending", "complete", "complete", RowResult("k", "passed", [attempt(1, usage)]))
    lines = summary_lines([report], PriceTable())
    assert [text for text in lines if "caching" in text] == ([line] if line else [])
    assert not any("$-" in text for text in lines)


def test_with_several_plans_the_summary_names_each_rows_plan():
    # two plans may both hold pathlib.md: the terminal summary must tell their rows apart
    one = RowReport("plans/a.md", make_row("pathlib.md", line=20), "pending", "complete", "complete", None)
    two = RowReport("plans/b.md", make_row("pathlib.md", line=20), "pending", "pending", "failed", None)
    files = [report_cells(line)[1] for line in summary_lines([one, two], PriceTable())[1:3]]
    assert files == ["plans/a.md::pathlib.md", "plans/b.md::pathlib.md"]
    alone = summary_lines([one], PriceTable())
    assert report_cells(alone[1])[1] == "pathlib.md"  # one plan: the filename alone, as before


def test_summary_column_widths_line_up():
    lines = summary_lines(sample_reports(), PriceTable())
    starts = {line.index("claude-haiku") for line in lines[1:5]}
    assert starts == {lines[0].index("model")}


def test_a_skipped_row_shows_skipped_and_counts_toward_the_budget():
    row = make_row("late.md")
    gen = RowResult(
        "k",
        "skipped",
        [],
        error="not sent: the estimated spend ($0.0200) reached --batch-max-cost $0.015",
        budget_skipped=True,
    )
    other = RowResult("k2", "skipped", [], error="not sent: the run was interrupted before this row was sent")
    reports = [
        RowReport("plan.md", row, "pending", "pending", "skipped", gen),
        RowReport("plan.md", make_row("stopped.md"), "pending", "pending", "skipped", other),
    ]
    assert totals(reports, PriceTable()).skipped_by_budget == 1
    cells = report_cells(summary_lines(reports, PriceTable())[1])
    assert cells[4:7] == ["0", "0/0/0/0", "skipped"]
    doc = json_report(reports, PriceTable(), meta={}, budget_note="stopped dispatching: spent")
    assert doc["totals"]["skipped_by_budget"] == 1
    assert doc["totals"]["budget_note"] == "stopped dispatching: spent"
    assert doc["plans"][0]["rows"][0]["generation"] == {
        "outcome": "skipped",
        "error": gen.error,
        "hint": None,
        "wrote_output": False,
    }


def test_json_report_document():
    reports = sample_reports()
    doc = json_report(reports, PriceTable(), meta={"record_mode": "none", "exit_status": 1}, budget_note="")
    assert doc["schema"] == SCHEMA == "pytest-batchgen-report"
    assert doc["version"] == SCHEMA_VERSION == 1
    assert doc["record_mode"] == "none" and doc["exit_status"] == 1
    assert [p["plan"] for p in doc["plans"]] == ["plan.md"]
    rows = {r["filename"]: r for r in doc["plans"][0]["rows"]}
    beta = rows["beta.md"]
    assert beta["repairs"] == 1
    assert [a["number"] for a in beta["attempts"]] == [1, 2]
    assert [a["usage"] for a in beta["attempts"]] == [U2.as_dict(), U3.as_dict()]
    assert [a["cost_usd"] for a in beta["attempts"]] == [round(HAIKU.cost(U2), 6), round(HAIKU.cost(U3), 6)]
    assert beta["attempts"][0]["failed_checks"] == ["category-value: bad"]
    assert [a["call"] for a in beta["attempts"]] == ["live", "live"]
    assert beta["usage"] == (U2 + U3).as_dict()
    assert rows["alpha.md"]["repairs"] == 0
    assert (
        rows["done.md"]["generation"] is None and rows["done.md"]["attempts"] == [] and rows["done.md"]["repairs"] == 0
    )
    assert rows["gamma.md"]["failures"][0] == {
        "check": "category-value",
        "message": "category is 'Z', expected one of: A, B, C",
        "plan_line": 16,
        "output": "output/gamma.md",
        "output_line": 3,
    }
    assert doc["totals"]["calls"] == 5 and doc["totals"]["calls_live"] == 5
    assert doc["totals"]["all_replayed"] is False
    assert doc["totals"]["budget_note"] is None
    import json

    json.dumps(doc)  # plain data throughout


def test_a_failed_call_is_reported_as_failed_not_live():
    row = make_row("down.md")
    gen = RowResult("k", "error", [attempt(1, Usage(), error="InternalServerError: HTTP 500")], error="boom")
    reports = [RowReport("plan.md", row, "pending", "pending", "failed", gen, [ItemFailure("generate", "error: boom")])]
    t = totals(reports, PriceTable())
    assert (t.attempts, t.live, t.replayed) == (1, 0, 0)
    assert json_report(reports, PriceTable(), meta={})["plans"][0]["rows"][0]["attempts"][0]["call"] == "failed"


def test_github_annotations_point_at_the_output_file_and_line():
    reports = sample_reports()
    assert github_annotations(reports) == [
        "::error file=output/gamma.md,line=3,title=batchgen gamma.md%3A category-value::"
        "category is 'Z', expected one of: A, B, C",
        # no output file known: the row's line in the plan
        "::error file=plan.md,line=22,title=batchgen gamma.md%3A category-value::again",
        "::error file=plan.md,line=22,title=batchgen gamma.md%3A lint::linter exited 1",
    ]


def test_github_annotations_escape_data_and_properties():
    row = make_row("a,b:c.md", line=9)
    failures = [
        ItemFailure("lint", "100% wrong\nsecond line\r\nthird", None, "out/a,b:c.md", None),
    ]
    reports = [RowReport("plans/p.md", row, "pending", "pending", "failed", None, failures)]
    assert github_annotations(reports) == [
        "::error file=out/a%2Cb%3Ac.md,title=batchgen a%2Cb%3Ac.md%3A lint::100%25 wrong%0Asecond line%0D%0Athird"
    ]
    assert github_annotations(sample_reports()[:2]) == []  # nothing failed, nothing to say


def test_an_annotation_carries_the_first_lines_of_a_failures_detail():
    row = make_row("a.md", line=9)
    report = "\n".join(f"out/a.md:{n}: MD0{n} finding" for n in range(1, 15))
    failures = [ItemFailure("lint", "linter exited 1: pymarkdown scan out/a.md", 4, "out/a.md", 1, report)]
    (annotation,) = github_annotations([RowReport("plans/p.md", row, "pending", "pending", "failed", None, failures)])
    message = annotation.split("::", 2)[2]
    assert message.split("%0A") == ["linter exited 1: pymarkdown scan out/a.md", *report.splitlines()[:10]]


# -- Progress: the live line --------------------------------------------------------------------


class FakeDispatcher(SimpleNamespace):
    pass


def dispatcher(done=0, total=3, in_flight=0, failed=0, tokens=0, spent=0.0, replies=0) -> FakeDispatcher:
    return FakeDispatcher(
        jobs=[object()] * total,
        done=done,
        in_flight=in_flight,
        failed=failed,
        tokens=tokens,
        spent=spent,
        replies=replies,
        note="",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(report.time, "monotonic", c)
    return c


def test_progress_text():
    d = dispatcher(done=2, total=5, in_flight=3, failed=1, tokens=1234567, spent=0.123456, replies=7)
    assert Progress.text(d) == (
        "[batchgen] 2/5 rows done, 3 in flight, 1 failed; 7 replies, 1,234,567 tokens, $0.1235 so far"
    )


def test_progress_text_says_replies_so_tokens_before_any_row_is_done_make_sense():
    d = dispatcher(done=0, total=8, in_flight=8, tokens=8130, spent=0.01, replies=8)
    assert (
        Progress.text(d) == "[batchgen] 0/8 rows done, 8 in flight, 0 failed; 8 replies, 8,130 tokens, $0.0100 so far"
    )
    assert "1 reply," in Progress.text(dispatcher(replies=1))


def test_progress_on_a_terminal_redraws_in_place(clock):
    written, drawn = [], []
    p = Progress(written.append, drawn.append, plain_every=15)
    d = dispatcher(total=3, in_flight=3)
    p.update(d)
    p.update(d)  # nothing changed: offered again (pytest's output may have taken the line down)
    d.done, d.in_flight, d.tokens, d.spent, d.replies = 1, 2, 500, 0.01, 1
    clock.now += 0.25  # no throttling on a terminal
    p.update(d)
    assert drawn == [
        "[batchgen] 0/3 rows done, 3 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far",
        "[batchgen] 0/3 rows done, 3 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far",
        "[batchgen] 1/3 rows done, 2 in flight, 0 failed; 1 reply, 500 tokens, $0.0100 so far",
    ]
    assert written == []  # in place until the end
    d.done, d.in_flight, d.failed = 3, 0, 1
    p.update(d)
    # the final count stays: a plain line
    assert written == ["[batchgen] 3/3 rows done, 0 in flight, 1 failed; 1 reply, 500 tokens, $0.0100 so far"]
    assert p.finished
    p.update(dispatcher(done=0, total=3))  # finished: never drawn again
    assert len(drawn) == 3 and len(written) == 1


def test_the_progress_line_takes_pytest_8s_isatty_a_plain_bool():
    # pytest 8's TerminalReporter.isatty is a bool (pytest 9's a bool that may be called): every
    # generating run on pytest 8.3 ended in "INTERNALERROR> TypeError: 'bool' object is not callable"
    from pytest_batchgen.terminal import progress_line

    class Reporter:
        isatty = False

    class Plugins:
        def get_plugin(self, name):
            return Reporter() if name == "terminalreporter" else None

    class Config:
        pluginmanager = Plugins()

    progress = progress_line(Config())  # type: ignore[arg-type]
    assert progress is not None and progress._rewrite is None  # plain lines


def test_progress_off_a_terminal_writes_plain_lines_at_most_every_plain_every_seconds(clock):
    written = []
    p = Progress(written.append, None, plain_every=10)
    d = dispatcher(total=30, in_flight=3)  # one row is less than a tenth: throttled by time
    p.update(d)  # the first line at once
    assert written == ["[batchgen] 0/30 rows done, 3 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far"]
    clock.now += 4
    d.done, d.in_flight = 1, 2
    p.update(d)  # changed, but too soon
    clock.now += 5
    p.update(d)
    assert len(written) == 1
    clock.now += 1.5  # 10.5 s after the last line
    p.update(d)
    assert written[-1] == "[batchgen] 1/30 rows done, 2 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far"
    clock.now += 20
    p.update(d)  # nothing changed since the last line: not repeated
    assert len(written) == 2
    d.done = 4  # a tenth of the rows more (3 of 30): written at once, whatever the time
    clock.now += 0.1
    p.update(d)
    assert written[-1] == "[batchgen] 4/30 rows done, 2 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far"


def test_progress_off_a_terminal_shows_a_state_first_seen_while_throttled(clock):
    written = []
    p = Progress(written.append, None, plain_every=10)
    d = dispatcher(total=30, in_flight=3)  # one row is less than a tenth: throttled by time
    p.update(d)
    clock.now += 2
    d.done, d.in_flight = 1, 2
    p.update(d)  # throttled: not shown
    clock.now += 30  # a slow request: the state has not changed since
    p.update(d)
    assert written == [
        "[batchgen] 0/30 rows done, 3 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far",
        "[batchgen] 1/30 rows done, 2 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far",
    ]


def test_progress_off_a_terminal_writes_its_first_line_at_once_even_early_after_boot(clock):
    clock.now = 3.0  # time.monotonic() counts from boot on Linux: a fresh CI machine is near 0
    written = []
    p = Progress(written.append, None, plain_every=15)
    p.update(dispatcher(total=2, in_flight=2))
    assert written == ["[batchgen] 0/2 rows done, 2 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far"]


def test_progress_off_a_terminal_always_writes_the_final_line(clock):
    written = []
    p = Progress(written.append, None, plain_every=3600)
    d = dispatcher(total=2, in_flight=2)
    p.update(d)
    d.done, d.in_flight, d.tokens, d.spent, d.replies = 2, 0, 2400, 0.02, 2
    clock.now += 0.5  # well within plain_every: the end is shown anyway
    p.update(d)
    assert written == [
        "[batchgen] 0/2 rows done, 2 in flight, 0 failed; 0 replies, 0 tokens, $0.0000 so far",
        "[batchgen] 2/2 rows done, 0 in flight, 0 failed; 2 replies, 2,400 tokens, $0.0200 so far",
    ]
    assert p.finished
    p.update(d)
    assert len(written) == 2


# -- helpers ------------------------------------------------------------------------------------


def assert_price(got: Price, expected: Price) -> None:
    for name in ("input", "output", "cache_write", "cache_read"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name)), name


def report_cells(line: str) -> list[str]:
    import re

    return re.split(r"\s{2,}", line.rstrip())


def money(x: float) -> str:
    return f"${x:.4f}"
