"""How far to trust a judge: its verdicts against labels people gave, per criterion.

A labelled set (``tests/data/judge/labels.yaml``) names a plan, its criteria and outputs each
labelled pass/fail per criterion. :func:`judge_set` asks the plugin's own judge (the same
requests as a ``Judge:`` checklist line, K samples each) and :func:`score` compares: accuracy,
Cohen's kappa (agreement beyond what two raters who said "pass" at their own rates would reach
by chance) and the flip rate (items whose K samples did not all agree). The arithmetic is plain
and unit-tested; ``benchmarks/judge_calibration.py`` is the command.

A judge call that fails (an API error after the SDK's retries) is not a verdict: the judge
stops sampling that item, so its samples are cut short. Such an item is left out of accuracy,
kappa and the flip rate, and counted (and shown) apart: an error said nothing about the judge,
and counting it as a sample made a judge that never disagreed with itself look unstable.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .checklist import CheckSkipped
from .judge import JudgeService, JudgeSettings
from .plan import Plan, load_plan, resolve_model
from .rowid import RowId


def accuracy(pairs: Sequence[tuple[str, str]]) -> float:
    """The share of (label, verdict) pairs that agree."""
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over the same items: (po - pe) / (1 - pe).

    ``po`` is the observed agreement, ``pe`` the agreement expected by chance from each
    rater's own rate of each verdict. None when ``pe`` is 1 (both raters gave one and the
    same verdict to every item: kappa is undefined, and the set cannot tell a judge apart)."""
    if not pairs:
        return None
    n = len(pairs)
    po = accuracy(pairs)
    values = {v for pair in pairs for v in pair}
    pe = sum((sum(a == v for a, _ in pairs) / n) * (sum(b == v for _, b in pairs) / n) for v in values)
    if pe >= 1.0:
        return None
    return (po - pe) / (1 - pe)


def flip_rate(samples: Sequence[Sequence[str | None]]) -> float:
    """The share of items whose verdicts were not unanimous (0 with one sample each). A sample
    without a verdict (None) is no answer, not a different one: it is left out."""
    if not samples:
        return 0.0
    return sum(len({v for v in s if v is not None}) > 1 for s in samples) / len(samples)


def majority_of(samples: Sequence[str | None]) -> str | None:
    """The judge's rule: pass only with more passes than fails (a tie fails); None without any."""
    passes, fails = samples.count("pass"), samples.count("fail")
    if not passes and not fails:
        return None
    return "pass" if passes > fails else "fail"


@dataclass(frozen=True)
class CriterionScore:
    criterion: str
    items: int
    answered: int
    accuracy: float
    kappa: float | None
    flip_rate: float
    #: items whose sampling an API error cut short: in ``items``, in none of the figures
    cut_short: int = 0


@dataclass(frozen=True)
class JudgedSet:
    """What :func:`judge_set` asked: each item's verdicts (failed calls left out), the items
    whose sampling a failed call cut short (with its error), and the service (its attempts)."""

    verdicts: Mapping[tuple[str, str], Sequence[str | None]]
    cut_short: Mapping[tuple[str, str], str]
    service: JudgeService


def score(
    labels: Mapping[str, Any],
    verdicts: Mapping[tuple[str, str], Sequence[str | None]],
    cut_short: Collection[tuple[str, str]] = (),
) -> list[CriterionScore]:
    """Per criterion: the judge's majority against the labels (unanswered items left out of
    accuracy and kappa, and counted), and the flip rate of the samples. Items in ``cut_short``
    (sampling stopped by a failed call) are left out of all three and counted apart."""
    out = []
    for criterion in labels["criteria"]:
        pairs, all_samples = [], []
        items = short = 0
        for entry in labels["outputs"]:
            label = entry["labels"].get(criterion)
            if label is None:
                continue
            items += 1
            if (entry["file"], criterion) in cut_short:
                short += 1
                continue
            samples = list(verdicts.get((entry["file"], criterion), []))
            all_samples.append(samples)
            verdict = majority_of(samples)
            if verdict is not None:
                pairs.append((label["verdict"], verdict))
        out.append(
            CriterionScore(
                criterion, items, len(pairs), accuracy(pairs), cohen_kappa(pairs), flip_rate(all_samples), short
            )
        )
    return out


def format_scores(
    scores: Sequence[CriterionScore], samples: int, cut_short: Mapping[tuple[str, str], str] | None = None
) -> list[str]:
    """The table, then one line per item cut short by a failed call (its error)."""
    rows = [("criterion", "items", "answered", "cut short", "accuracy", "kappa", f"flip rate (K={samples})")]
    for s in scores:
        kappa = "n/a" if s.kappa is None else f"{s.kappa:.3f}"
        rows.append(
            (
                s.criterion,
                str(s.items),
                str(s.answered),
                str(s.cut_short),
                f"{s.accuracy:.3f}",
                kappa,
                f"{s.flip_rate:.3f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for (filename, criterion), error in sorted((cut_short or {}).items()):
        lines.append(f"cut short (not scored): {filename} / {criterion}: {error}")
    return lines


def load_labels(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not {"plan", "criteria", "outputs"} <= set(data):
        raise ValueError(f"{path}: a labels file needs 'plan', 'criteria' and 'outputs'")
    return data


def judge_set(
    labels_path: Path,
    *,
    samples: int = 1,
    model: str | None = None,
    api_key: str | None = None,
    workers: int = 8,
    keep: Path | None = None,
) -> JudgedSet:
    """Ask the judge every (output, criterion) of the set, ``samples`` times each, live.

    The set's folder is copied to a scratch folder (or ``keep``), where the calls are recorded
    (record mode ``all``: every sample is a real call, nothing is replayed). A failed call is
    no verdict: it is left out, and its item is cut short (the judge asks no more samples)."""
    labels = load_labels(labels_path)
    source = labels_path.parent
    work = keep or Path(tempfile.mkdtemp(prefix="batchgen-judge-calibration-"))
    shutil.copytree(source, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cassettes", "__pycache__"))
    plan: Plan = load_plan(work / labels["plan"], work)
    judge_model = resolve_model(resolve_model(model or plan.models.get("judge", "sonnet"), plan.models), plan.models)
    service = JudgeService(JudgeSettings(samples=samples, record_mode="all", api_key=api_key, may_call=True))
    rows = {r.filename: r for r in plan.rows}

    def ask(job: tuple[str, str]) -> None:
        filename, criterion = job
        row = rows[filename]
        text = plan.output_path(row).read_text(encoding="utf-8")
        with contextlib.suppress(CheckSkipped):
            service.check(plan, row, criterion, labels["criteria"][criterion], judge_model, text)

    jobs = [(e["file"], c) for e in labels["outputs"] for c in labels["criteria"] if c in e["labels"]]
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(ask, jobs))
    finally:
        service.close()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    verdicts: dict[tuple[str, str], list[str | None]] = {}
    cut_short: dict[tuple[str, str], str] = {}
    for filename in rows:
        for attempt in service.attempts.get(RowId(plan.path, filename).key, []):
            if attempt.error is not None:
                cut_short[(filename, attempt.check)] = attempt.error
                continue
            verdicts.setdefault((filename, attempt.check), []).append(attempt.verdict)
    return JudgedSet(verdicts, cut_short, service)
