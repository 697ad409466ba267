"""How far to trust a judge: its verdicts against labels people gave, per criterion.

A labelled set (``tests/data/judge/labels.yaml``) names a plan, its criteria and outputs each
labelled pass/fail per criterion. :func:`judge_set` asks the plugin's own judge (the same
requests as a ``Judge:`` checklist line, K samples each) and :func:`score` compares: accuracy,
Cohen's kappa (agreement beyond what two raters who said "pass" at their own rates would reach
by chance) and the flip rate (items whose K samples did not all agree). The arithmetic is plain
and unit-tested; ``benchmarks/judge_calibration.py`` is the command.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
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
    """The share of items whose samples were not unanimous (0 with one sample each)."""
    if not samples:
        return 0.0
    return sum(len(set(s)) > 1 for s in samples) / len(samples)


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


def score(labels: Mapping[str, Any], verdicts: Mapping[tuple[str, str], Sequence[str | None]]) -> list[CriterionScore]:
    """Per criterion: the judge's majority against the labels (unanswered items left out of
    accuracy and kappa, and counted), and the flip rate of the samples."""
    out = []
    for criterion in labels["criteria"]:
        pairs, all_samples = [], []
        items = 0
        for entry in labels["outputs"]:
            label = entry["labels"].get(criterion)
            if label is None:
                continue
            items += 1
            samples = list(verdicts.get((entry["file"], criterion), []))
            all_samples.append(samples)
            verdict = majority_of(samples)
            if verdict is not None:
                pairs.append((label["verdict"], verdict))
        out.append(
            CriterionScore(
                criterion, items, len(pairs), accuracy(pairs), cohen_kappa(pairs), flip_rate(all_samples)
            )
        )
    return out


def format_scores(scores: Sequence[CriterionScore], samples: int) -> list[str]:
    rows = [("criterion", "items", "answered", "accuracy", "kappa", f"flip rate (K={samples})")]
    for s in scores:
        kappa = "n/a" if s.kappa is None else f"{s.kappa:.3f}"
        rows.append((s.criterion, str(s.items), str(s.answered), f"{s.accuracy:.3f}", kappa, f"{s.flip_rate:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


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
) -> tuple[dict[tuple[str, str], list[str | None]], JudgeService]:
    """Ask the judge every (output, criterion) of the set, ``samples`` times each, live.

    The set's folder is copied to a scratch folder (or ``keep``), where the calls are recorded
    (record mode ``all``: every sample is a real call, nothing is replayed)."""
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
    for filename in rows:
        for attempt in service.attempts.get(RowId(plan.path, filename).key, []):
            verdicts.setdefault((filename, attempt.check), []).append(attempt.verdict)
    return verdicts, service
