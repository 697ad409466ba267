"""The files a user names for the reports (``--batch-report``, ``--batch-summary``,
``$GITHUB_STEP_SUMMARY``) and the paths the reports print.

Each test reproduces a finding of a probe: it failed before the fix it is named after.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from planfactory import SMALL_PLAN as PLAN
from planfactory import lay_out_small_plan

from pytest_batchgen import fsutil


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    lay_out_small_plan(pytester.path, PLAN)
    return pytester


def validate(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest("--batch-plan", "plan.md", "--batch-validate-only", *args)


def no_traceback(result: pytest.RunResult) -> str:
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    return out


# -- the report and summary paths: a symlink is followed, a FIFO or device written, not replaced --


def test_write_through_follows_a_symlink_and_keeps_it(tmp_path: Path):
    real = tmp_path / "artifacts" / "report.json"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "report.json"
    link.symlink_to(real)
    fsutil.write_through(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"


def test_write_through_a_dangling_symlink_creates_the_file_it_names(tmp_path: Path):
    link = tmp_path / "report.json"
    link.symlink_to("artifacts/report.json")  # relative, to a folder not there yet
    fsutil.write_through(link, "new\n")
    assert link.is_symlink()
    assert (tmp_path / "artifacts" / "report.json").read_text() == "new\n"


def test_write_through_a_regular_file_is_atomic_and_keeps_its_mode(tmp_path: Path):
    path = tmp_path / "report.json"
    path.write_text("old\n")
    path.chmod(0o640)
    before = path.stat().st_ino
    fsutil.write_through(path, "new\n")
    assert path.read_text() == "new\n"
    assert path.stat().st_ino != before  # replaced by a rename, as atomic_write does
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if fsutil.TMP_MARK in p.name]


def test_write_through_writes_into_a_fifo(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader already there: the write does not wait
    try:
        fsutil.write_through(fifo, "through the pipe\n")
        assert os.read(reader, 1000) == b"through the pipe\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_the_plugins_own_files_still_replace_a_symlink(tmp_path: Path):
    # an output or a plan that is a link is replaced, never written through (unchanged)
    real = tmp_path / "real.md"
    real.write_text("old\n")
    link = tmp_path / "out.md"
    link.symlink_to(real)
    fsutil.atomic_write(link, "new\n")
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert real.read_text() == "old\n"


def test_a_symlinked_report_and_summary_are_written_through(project: pytest.Pytester):
    # before: 'report.json' became a regular file and the file it pointed at kept the old report
    artifacts = project.path / "artifacts"
    artifacts.mkdir()
    (artifacts / "report.json").write_text("")  # empty: the checks let a report replace it
    (project.path / "report.json").symlink_to(artifacts / "report.json")
    (project.path / "summary.md").symlink_to("artifacts/summary.md")  # dangling: created
    result = validate(project, "--batch-report", "report.json", "--batch-summary", "summary.md")
    assert result.ret == pytest.ExitCode.OK, no_traceback(result)
    assert (project.path / "report.json").is_symlink() and (project.path / "summary.md").is_symlink()
    assert json.loads((artifacts / "report.json").read_text())["plans"][0]["plan"] == "plan.md"
    assert (artifacts / "summary.md").read_text().startswith("## pytest-batchgen\n")


def test_a_report_to_a_fifo_reaches_its_reader(project: pytest.Pytester):
    # before: the FIFO was replaced by a regular file and its reader got nothing
    fifo = project.path / "report.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = validate(project, "--batch-report", "report.pipe")
        assert result.ret == pytest.ExitCode.OK, no_traceback(result)
        received = b""
        while chunk := os.read(reader, 65536):
            received += chunk
    except BlockingIOError:
        pass
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(received)["plans"][0]["plan"] == "plan.md"


def test_a_report_path_that_is_a_symlink_loop_or_a_socket_is_a_usage_error(project: pytest.Pytester):
    (project.path / "a.json").symlink_to("b.json")
    (project.path / "b.json").symlink_to("a.json")
    result = validate(project, "--batch-report", "a.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, no_traceback(result)
    assert "a.json: is a symlink loop" in no_traceback(result)

    # a short name: a socket's path is limited to about 100 bytes
    sock_path = Path(os.path.relpath(project.path / "s.sock"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        result = validate(project, "--batch-summary", "s.sock")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, no_traceback(result)
    assert "s.sock: is a socket" in no_traceback(result)
    assert stat.S_ISSOCK(os.lstat(project.path / "s.sock").st_mode)


# -- a summary or report that cannot be written at the end: a warning, not a traceback -------------


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_a_bad_github_step_summary_is_a_warning_and_the_run_passes(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
):
    # before: FileNotFoundError / IsADirectoryError from the end of the run, exit 1 with every
    # test passed, and no batchgen summary nor pytest's result line
    step = project.path / "nowhere" / "step.md" if where == "missing folder" else project.path / "out"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = validate(project, "--batch-report", "r.json")
    out = no_traceback(result)
    assert result.ret == pytest.ExitCode.OK, out
    reason = "No such file or directory" if where == "missing folder" else "Is a directory"
    result.stdout.fnmatch_lines(
        [
            "*pytest-batchgen*",
            f"WARNING: $GITHUB_STEP_SUMMARY {step}: the summary was not written ({reason}); the run's result is unchanged",
            "*1 passed*",
        ]
    )
    assert json.loads((project.path / "r.json").read_text())["plans"]  # the rest was written


def test_a_report_that_cannot_be_written_at_the_end_is_a_warning(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    # the paths are checked up front, but a disk can fill: that was a traceback at the very end
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pytest_batchgen.jsonreport.write_json", full)
    monkeypatch.setattr("pytest_batchgen.stepsummary.write_through", full)
    result = validate(project, "--batch-report", "r.json", "--batch-summary", "s.md")
    assert result.ret == pytest.ExitCode.OK, no_traceback(result)
    result.stdout.fnmatch_lines(
        [
            "WARNING: --batch-report *r.json: the report was not written (No space left on device); *",
            "WARNING: --batch-summary *s.md: the summary was not written (No space left on device); *",
            "*1 passed*",
        ]
    )


def test_a_report_path_below_a_file_is_a_usage_error(project: pytest.Pytester):
    # 'plan.md/r.json' cannot be made: said up front, not after the run
    result = validate(project, "--batch-report", "plan.md/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, no_traceback(result)
    assert "r.json: cannot be reached (Not a directory)" in no_traceback(result)


# -- the summary never replaces a file of the project: the tracking file, pytest.ini, a README ---------

TRACKED_PLAN = PLAN.replace(
    "1. Front matter includes term\n", "1. Front matter includes term\n2. Output registered in `out/INDEX.md`\n"
)
INDEX = "# Index\n\n- [Ref](ref.md)\n"


def test_the_summary_is_refused_on_the_tracking_file(pytester: pytest.Pytester):
    # the tracking file is a file of the plan: the summary replaced it, every entry lost, and the
    # next run's registered items skipped or failed
    lay_out_small_plan(pytester.path, TRACKED_PLAN)
    (pytester.path / "out" / "INDEX.md").write_text(INDEX, encoding="utf-8")
    for option in ("--batch-summary", "--batch-report"):
        result = validate(pytester, option, "out/INDEX.md")
        out = no_traceback(result)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, out
        assert f"{option} {pytester.path / 'out' / 'INDEX.md'}: is the tracking file of plan.md" in out, out
        assert (pytester.path / "out" / "INDEX.md").read_text(encoding="utf-8") == INDEX


def test_the_summary_is_refused_on_a_file_that_is_no_summary_and_replaces_its_own(project: pytest.Pytester):
    # as the report: `--batch-summary pytest.ini` replaced pytest's configuration with Markdown
    # (the next run stopped at "pytest.ini:7: unexpected line"), `--batch-summary README.md` a README
    ini = "[pytest]\n"
    (project.path / "pytest.ini").write_text(ini, encoding="utf-8")
    result = validate(project, "--batch-summary", "pytest.ini")
    out = no_traceback(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "pytest.ini: the file exists and is not a pytest-batchgen summary; name another file" in out, out
    assert (project.path / "pytest.ini").read_text(encoding="utf-8") == ini
    for _ in range(2):  # the second run replaces the first one's summary
        result = validate(project, "--batch-summary", "summary.md")
        assert result.ret == pytest.ExitCode.OK, no_traceback(result)
        assert (project.path / "summary.md").read_text(encoding="utf-8").startswith("## pytest-batchgen")
    # one committed and checked out with CRLF (core.autocrlf), or saved by an editor with a BOM
    summary = project.path / "summary.md"
    for altered in (summary.read_bytes().replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + summary.read_bytes()):
        summary.write_bytes(altered)
        result = validate(project, "--batch-summary", "summary.md")
        assert result.ret == pytest.ExitCode.OK, no_traceback(result)
        assert summary.read_bytes().startswith(b"## pytest-batchgen\n")


def test_a_summary_path_that_is_a_folder_suggests_a_markdown_file(project: pytest.Pytester):
    (project.path / "reports").mkdir()
    out = no_traceback(validate(project, "--batch-summary", "reports"))
    assert f"is a folder; name a file in it (e.g. {project.path / 'reports' / 'summary.md'})" in out, out


# -- GitHub annotations name files relative to the checkout, not to pytest's rootdir ----------------


def test_annotation_paths_are_relative_to_the_github_workspace(tmp_path: Path):
    from pytest_batchgen.report import annotation_path

    repo = tmp_path / "repo"
    docs = repo / "docs"
    assert annotation_path("output/quorum.md", docs, repo) == "docs/output/quorum.md"
    assert annotation_path("output/quorum.md", docs, None) == "output/quorum.md"  # not on GitHub
    assert annotation_path("output/quorum.md", docs, tmp_path / "other") == "output/quorum.md"  # not in it
    assert annotation_path(str(repo / "shared" / "a.md"), docs, repo) == "shared/a.md"  # outside the rootdir
    link = tmp_path / "link"
    repo.mkdir()
    link.symlink_to(repo)  # the workspace spelled through a link
    assert annotation_path("output/quorum.md", docs, link) == "docs/output/quorum.md"


def test_annotations_in_a_monorepo_name_the_file_from_the_repository_root(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    # before: 'file=out/ref.md' for docs/out/ref.md: GitHub could not attach it to the diff
    docs = pytester.path / "docs"
    (docs / "out").mkdir(parents=True)
    (docs / "plan.md").write_text(PLAN, encoding="utf-8")
    (docs / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (docs / "out" / "ref.md").write_text("---\ntitle: no term\n---\n\n## Definition\n\nR.\n", encoding="utf-8")
    monkeypatch.chdir(docs)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, no_traceback(result)
    annotations = [line for line in result.stdout.lines if line.startswith("::error")]
    assert annotations and all(a.startswith("::error file=docs/out/ref.md,") for a in annotations), annotations
