"""Files, locks, modes and output bounds (issue 10 item 3 and messages, issue 11 items 13, 14, 18).

Each test reproduces a finding: it failed before the fix it is named after.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from filelock import Timeout
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_batchgen import document, fsutil
from pytest_batchgen import tracking as tracking_module
from pytest_batchgen.document import MAX_FRONT_MATTER_BYTES, MAX_HEADINGS, parse_bytes
from pytest_batchgen.tracking import TrackingError, is_registered, register, retitle

GITIGNORE = (".*.batchgen-tmp-*", ".*.batchgen-lock")


def ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in GITIGNORE)


# -- issue 11 item 13: the lock lives beside the file, whatever TMPDIR says ----------------------


def test_the_lock_is_a_hidden_file_beside_the_edited_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "INDEX.md"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp-a"))
    a = fsutil.lock_for(path).lock_file
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp-b"))
    b = fsutil.lock_for(path).lock_file
    assert a == b == str(tmp_path / ".INDEX.md.batchgen-lock")
    assert ignored(Path(a).name)


def test_processes_with_different_tmpdirs_share_the_lock(tmp_path: Path):
    path = tmp_path / "INDEX.md"
    holder = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from pytest_batchgen.fsutil import lock_for
        with lock_for(Path({str(path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    other_tmp = tmp_path / "other-tmp"
    other_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(other_tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(Timeout):  # this process's TMPDIR differs; the lock is still the same one
            fsutil.lock_for(path, timeout=0.2).acquire()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    with fsutil.lock_for(path, timeout=5):
        pass  # released with the holder


# -- issue 11 item 14: temporaries one .gitignore line covers, stale ones swept ------------------


def test_temporaries_are_named_for_one_gitignore_line(tmp_path: Path, monkeypatch):
    seen: list[str] = []

    def boom(src, dst):
        seen.append(Path(src).name)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        fsutil.atomic_write(tmp_path / "INDEX.md", "x")
    assert len(seen) == 1 and seen[0].startswith(".INDEX.md.batchgen-tmp-") and ignored(seen[0])


def test_stale_temporaries_are_swept_on_the_next_write_to_the_folder(tmp_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    dead = folder / ".INDEX.md.batchgen-tmp-0badf00d"  # what a kill -9 mid-write leaves
    other = folder / ".quorum.md.batchgen-tmp-12345678"  # another file's, just as dead
    live = folder / ".INDEX.md.batchgen-tmp-c0ffee00"  # a write in progress right now
    foreign = folder / ".INDEX.md.abcd.tmp"  # not ours: never touched
    for path in (dead, other, live, foreign):
        path.write_text("partial")
    old = time.time() - fsutil.STALE_TMP_SECONDS - 60
    for path in (dead, other, foreign):
        os.utime(path, (old, old))
    fsutil.atomic_write(folder / "alpha.md", "# Alpha\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["alpha.md", live.name, foreign.name])


# -- issue 10 item 3: new files get 0666 & ~umask, existing files keep their mode ----------------


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_umask
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_a_new_file_gets_the_umask_mode(tmp_path: Path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "new.md"
    fsutil.atomic_write(path, "x\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_new_tracking_file_gets_the_umask_mode(tmp_path: Path, umask):
    umask(0o022)
    output = tmp_path / "a.md"
    output.write_text("x")
    register(tmp_path / "INDEX.md", output, "A")
    assert stat.S_IMODE((tmp_path / "INDEX.md").stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o600, 0o444])  # 0o444: a read-only plan in a writable folder (README)
def test_an_existing_file_keeps_its_mode(tmp_path: Path, umask, mode):
    umask(0o022)
    path = tmp_path / "plan.md"
    path.write_text("old\n")
    os.chmod(path, mode)
    fsutil.atomic_write(path, "new\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_text() == "new\n"


# -- issue 11 item 18: outputs too large to parse fail at once, naming the limit -----------------


@pytest.fixture
def parsers(monkeypatch):
    """Record what reaches the YAML loader and the Markdown parser (sizes in characters)."""
    seen: dict[str, list[int]] = {"yaml": [], "markdown": []}
    real_load, real_parser = document._YAML.load, document.heading_parser

    def load(fm, **kw):
        seen["yaml"].append(len(fm))
        return real_load(fm, **kw)

    class Parser:
        def parse(self, src, env=None):
            seen["markdown"].append(len(src))
            return real_parser().parse(src, env)

    monkeypatch.setattr(document._YAML, "load", load)
    monkeypatch.setattr(document, "heading_parser", Parser)
    return seen


def test_a_huge_front_matter_list_fails_without_being_parsed(parsers):
    data = ("---\nterm: X\ntags:\n" + "".join(f"  - tag-{i}\n" for i in range(330_000)) + "---\n\n## A\n").encode()
    assert 4_500_000 < len(data) < 5 * 1024 * 1024
    doc = parse_bytes(Path("big.md"), data)
    assert doc.front_matter_error is not None
    assert f"above the {MAX_FRONT_MATTER_BYTES:,}-byte limit" in doc.front_matter_error
    assert parsers["yaml"] == []  # the YAML was never loaded
    assert parsers["markdown"] == [len("\n\n## A\n")]  # the body is still read: its headings count
    assert doc.line_of("tags") == 3


def test_a_file_with_150000_headings_fails_without_being_parsed(parsers):
    data = "".join(f"## Heading {i}\n\n" for i in range(150_000)).encode()
    assert len(data) > 1_700_000
    doc = parse_bytes(Path("many.md"), data)
    assert doc.error is not None and f"above the {MAX_HEADINGS:,}-heading limit" in doc.error
    assert parsers["markdown"] == []


def test_a_file_just_under_the_bounds_still_parses():
    data = ("---\nterm: X\n---\n" + "## H\n" * MAX_HEADINGS).encode()
    doc = parse_bytes(Path("ok.md"), data)
    assert doc.error is None and doc.front_matter_error is None and len(doc.headings) == MAX_HEADINGS


@pytest.mark.parametrize("ending", ["\n", "\r"])
def test_too_many_lines_fail_with_the_limit(ending):
    data = ("---\nterm: X\n---\n" + f"- item{ending}" * (document.MAX_LINES + 1)).encode()
    doc = parse_bytes(Path("long.md"), data)
    assert doc.error is not None and f"above the {document.MAX_LINES:,}-line limit" in doc.error


# -- issue 10, messages: unterminated front matter says so ---------------------------------------


def test_unterminated_front_matter_says_it_is_never_closed():
    doc = parse_bytes(Path("u.md"), b"---\nterm: X\ncategory: A\n\n## Definition\n\ntext\n")
    assert doc.front_matter_error is not None
    assert "never closed" in doc.front_matter_error and "line 1" in doc.front_matter_error
    assert "add a '---' line" in doc.front_matter_error


PLAN = """\
# Plan

## Format Reference
output/ref.md

## Output Directory
output/

## Content Rules
- front matter: term

## Validation Checklist
1. Front matter includes term
2. Definition sections present

## Phase 1
| # | Title | Filename | Model | Status |
|---|-------|----------|-------|--------|
| 1 | Ref | ref.md | haiku | complete |
| 2 | Unclosed | unclosed.md | haiku | pending |
| 3 | Big | big.md | haiku | pending |
"""


def test_validate_only_reports_unclosed_and_oversized_front_matter(pytester: pytest.Pytester):
    (pytester.path / "plans").mkdir()
    (pytester.path / "plans" / "p.md").write_text(PLAN)
    out = pytester.path / "output"
    out.mkdir()
    (out / "ref.md").write_text("---\nterm: Ref\n---\n\n## Definition\n\nx\n")
    (out / "unclosed.md").write_text("---\nterm: U\n\n## Definition\n\nx\n")
    (out / "big.md").write_text("---\nterm: B\nlist:\n" + "  - x\n" * 20_000 + "---\n\n## Definition\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--batch-plan", "plans/p.md", "--batch-validate-only")
    result.assert_outcomes(passed=4, failed=2)
    text = result.stdout.str()
    assert "output/unclosed.md:1: the front matter opened by '---' on line 1 is never closed" in text
    assert "no YAML front matter" not in text
    assert re.search(
        rf"output/big.md:1: the front matter is [\d,]+ bytes, above the {MAX_FRONT_MATTER_BYTES:,}-byte limit", text
    )


# -- issue 10: a renamed title updates its link; a failing output can be unlisted ----------------


def entry_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    tracking, a, b = tmp_path / "INDEX.md", tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("x")
    b.write_text("x")
    return tracking, a, b


def test_retitle_rewrites_only_the_link_text_of_the_outputs_entry(tmp_path: Path):
    tracking, a, b = entry_files(tmp_path)
    tracking.write_text("# Index\n\nSee [old a](a.md) in prose.\n\n* [Old A](./a.md#top)  \r\n- [B](b.md)\n")
    assert retitle(tracking, a, "New [A]") is True
    assert tracking.read_bytes().decode() == (
        "# Index\n\nSee [old a](a.md) in prose.\n\n* [New \\[A\\]](./a.md#top)  \r\n- [B](b.md)\n"
    )
    assert retitle(tracking, a, "New [A]") is False  # already so: nothing written
    assert is_registered(tracking, a)


def test_retitle_after_register_uses_the_cached_entry(tmp_path: Path):
    tracking, a, b = entry_files(tmp_path)
    register(tracking, a, "A")
    register(tracking, b, "B")
    assert retitle(tracking, b, "B renamed") is True
    assert tracking.read_text() == "- [A](a.md)\n- [B renamed](b.md)\n"
    assert retitle(tracking, a, "A") is False


def test_retitle_leaves_reference_links_alone(tmp_path: Path):
    tracking, a, b = entry_files(tmp_path)
    text = "- [A]\n- [Bee][b]\n\n[a]: a.md\n[b]: b.md\n"  # the text of [A] is its reference key
    tracking.write_text(text)
    assert is_registered(tracking, a) and is_registered(tracking, b)
    assert retitle(tracking, a, "New A") is False
    assert retitle(tracking, b, "New B") is False
    assert tracking.read_text() == text


def test_retitle_of_an_unregistered_output_does_nothing(tmp_path: Path):
    tracking, a, b = entry_files(tmp_path)
    tracking.write_text("- [A](a.md)\n")
    assert retitle(tracking, b, "B") is False
    assert tracking.read_text() == "- [A](a.md)\n"


def test_register_keeps_the_files_line_endings(tmp_path: Path):
    tracking, a, b = entry_files(tmp_path)
    tracking.write_bytes(b"# Index\r\n\r\n- [A](a.md)\r\n")
    register(tracking, b, "B")
    assert tracking.read_bytes() == b"# Index\r\n\r\n- [A](a.md)\r\n- [B](b.md)\r\n"


def test_register_places_entries_in_plan_order_whatever_order_they_come_in(tmp_path: Path):
    tracking = tmp_path / "INDEX.md"
    outputs = [tmp_path / f"{name}.md" for name in "abcde"]
    tracking.write_text("# Index\n\n- [C](c.md)\n\nWritten by hand.\n")
    for i in (4, 0, 3, 1):  # as xdist workers might finish them
        register(tracking, outputs[i], "abcde"[i].upper(), [p.resolve() for p in outputs])
    assert tracking.read_text() == (
        "# Index\n\n- [A](a.md)\n- [B](b.md)\n- [C](c.md)\n- [D](d.md)\n- [E](e.md)\n\nWritten by hand.\n"
    )
    register(tracking, tmp_path / "z.md", "Z", [p.resolve() for p in outputs])  # not in the plan: at the end
    assert tracking.read_text().endswith("Written by hand.\n- [Z](z.md)\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # in a blockquote: a bare "- " line would end the quote, splitting the list in two
        (
            b"> Outputs:\n>\n> - [A](a.md)\n> - [C](c.md)\n",
            b"> - [A](a.md)\n> - [B](b.md)\n> - [C](c.md)\n> - [D](d.md)\n",
        ),
        # nested below a group item: at the left margin, C would become a child of B
        (
            b"- Group\n  - [A](a.md)\n  - [C](c.md)\n\nText\n",
            b"  - [A](a.md)\n  - [B](b.md)\n  - [C](c.md)\n  - [D](d.md)\n",
        ),
        # a numbered list: a "- " item between would cut it in two lists
        (b"1. [A](a.md)\n2. [C](c.md)\n", b"1. [A](a.md)\n1. [B](b.md)\n2. [C](c.md)\n2. [D](d.md)\n"),
        # a tab after the marker, and the line endings of the list (not of the heading) in a mixed file
        (b"# I\r\n\n*\t[A](a.md)\n*\t[C](c.md)\n", b"*\t[A](a.md)\n*\t[B](b.md)\n*\t[C](c.md)\n*\t[D](d.md)\n"),
    ],
    ids=["blockquote", "nested", "numbered", "tab-mixed-endings"],
)
def test_a_new_entry_takes_the_list_marker_and_line_ending_of_its_neighbour(tmp_path: Path, text, expected):
    """A new entry goes beside the entry of the nearest row, written as that entry is (its
    blockquote marks, indent, list marker, line ending): a ``- `` line at the left margin would
    have ended the user's quote or list, changing how the lines around it read."""
    tracking = tmp_path / "INDEX.md"
    outputs = [tmp_path / f"{name}.md" for name in "abcd"]
    tracking.write_bytes(text)
    order = tuple(p.resolve() for p in outputs)
    assert register(tracking, outputs[1], "B", order) and register(tracking, outputs[3], "D", order)
    got = tracking.read_bytes()
    assert expected in got
    for line in text.splitlines(keepends=True):  # every line of the user's is still there
        assert line in got.splitlines(keepends=True)
    assert all(is_registered(tracking, p) for p in outputs)


@pytest.mark.parametrize(
    ("text", "opened"),
    [
        (b"# Index\n\n```\nsome code\n", "3: this line opens a code block"),
        (b"# Index\r\n\r\n<!-- to do\r\n", "3: this line opens an HTML block"),
        (b"<details>\n<summary>More</summary>", "1: this line opens an HTML block"),
    ],
    ids=["open-fence", "open-comment", "html-block"],
)
def test_a_link_that_would_land_in_an_unclosed_block_is_refused_not_appended_every_run(tmp_path: Path, text, opened):
    """A file that ends inside a code block, a comment or an HTML block opened earlier: a line
    appended there is not a link, so the output stayed unregistered and every run appended the
    same line again. The file is left as it is and the error names the line to close."""
    tracking, a, b = entry_files(tmp_path)
    tracking.write_bytes(text)
    with pytest.raises(TrackingError, match=rf"INDEX\.md:{opened} .*not read as a link; close it"):
        register(tracking, a, "A")
    assert tracking.read_bytes() == text
    assert not is_registered(tracking, a)


#: lines a hand-kept index holds: entries in every container, links of other forms, and the
#: blocks that take in what follows them (unclosed fences, HTML, comments)
_INDEX_FRAGMENTS = [
    "# Index",
    "",
    "Prose with [a link](a.md) in it.",
    "- [A](a.md)",
    "* [C](./c.md)",
    "  - [A](<a.md>)",
    "> - [C](c.md)",
    ">",
    "> quoted",
    "1. [D](d.md)",
    "3) [X](x.md)",
    "-\t[Tab](t.md)",
    "- [NBSP](n.md)\u00a0",
    "- [Ref][a]",
    "[a]: a.md",
    '- [T ] | ` title](c.md "a ] | ` title")',
    "| Title | Link |",
    "|---|---|",
    "| A | [A](a.md) |",
    "```",
    "    indented code",
    "<!-- a comment",
    "-->",
    "<details>",
    "- Group",
    "  text",
    "\ufeff- [B](b.md)",
]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.one_of(st.sampled_from(_INDEX_FRAGMENTS), st.text(max_size=12)), max_size=14),
    endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=14, max_size=14),
    bom=st.booleans(),
    final=st.booleans(),
    registrations=st.permutations(range(4)),
)
@example(lines=["# Index", "```"], endings=["\n"] * 14, bom=False, final=True, registrations=[0, 1, 2, 3])
@example(lines=["* [C](./c.md)"], endings=["\n"] * 14, bom=True, final=True, registrations=[0, 1, 2, 3])
def test_registration_keeps_every_byte_of_the_users_lines(lines, endings, bom, final, registrations):
    """Whatever a hand-kept index holds (any line endings, mixed; a BOM; no final newline),
    registering outputs only adds whole lines: the user's lines stay, in order, byte for byte
    (the last one gains a line ending if it had none); each added output then reads as
    registered, or the registration is refused (a :class:`TrackingError`) with the file as it was."""
    lines = [line.replace("\r", "").replace("\n", "") for line in lines]
    text = "".join(line + ending for line, ending in zip(lines, endings, strict=False))
    if not final and text:
        text = text.rstrip("\r\n")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tracking = root / "INDEX.md"
        outputs = [(root / name).resolve() for name in ("a.md", "b.md", "c.md", "d.md")]
        tracking.write_bytes(data)
        added = 0
        for i in registrations:
            before = tracking.read_bytes()
            try:
                added += register(tracking, outputs[i], f"Row {i}", tuple(outputs))
            except TrackingError:
                assert tracking.read_bytes() == before
            else:
                tracking_module._index_cache.clear()  # read as the next run does, not as this one wrote it
                assert is_registered(tracking, outputs[i])
        after = tracking.read_bytes()
        assert after.startswith(b"\xef\xbb\xbf") == data.startswith(b"\xef\xbb\xbf")
        # (compared after the BOM, which stays first, ahead of an entry put before the first line)
        old, new = (
            tracking_lines(data.removeprefix(b"\xef\xbb\xbf")),
            tracking_lines(after.removeprefix(b"\xef\xbb\xbf")),
        )
        assert len(new) == len(old) + added
        rest = iter(new)
        for n, line in enumerate(old, 1):  # a subsequence; the last line may have gained its ending
            unended = n == len(old) and line == line.rstrip(b"\r\n")
            assert any(got == line or (unended and got.rstrip(b"\r\n") == line) for got in rest), (data, after)


def tracking_lines(data: bytes) -> list[bytes]:
    """A file's lines with their endings, as markdown-it and the tracking module count them."""
    return re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", data)


def test_an_entry_on_the_first_line_after_a_bom_is_an_entry(tmp_path: Path):
    """A BOM (an editor's) before a first line that is an entry: a renderer shows a list item,
    but the parser read a paragraph, so the entry was never retitled and new entries were not
    placed beside it. The BOM stays where it is, and out of the lines added."""
    tracking, a, b = entry_files(tmp_path)
    tracking.write_bytes(b"\xef\xbb\xbf* [Old A](a.md)\r\n\r\nKept by hand.\r\n")
    assert retitle(tracking, a, "A") is True
    assert register(tracking, b, "B", (a.resolve(), b.resolve()))
    assert tracking.read_bytes() == b"\xef\xbb\xbf* [A](a.md)\r\n* [B](b.md)\r\n\r\nKept by hand.\r\n"


def test_a_read_only_tracking_file_gets_every_registration_not_only_the_first(tmp_path: Path, monkeypatch):
    """A read-only tracking file in a writable folder: the first registration of a run rewrites
    it through a rename, as every write of the plugin (the mode stays), but the appends after it
    were refused (``O_APPEND`` needs write permission), so a run registered one row and failed
    the others. They rewrite it too now. (Simulated: this suite may run as root, whom a mode
    does not stop.)"""
    tracking, a, b = entry_files(tmp_path)
    tracking.write_bytes(b"# Index\r\n")
    tracking.chmod(0o444)
    real_open = os.open

    def refuse_appends(path, flags, *args, **kwargs):
        if flags & os.O_APPEND and Path(path) == tracking:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(tracking_module.os, "open", refuse_appends)
    order = (a.resolve(), b.resolve())
    assert register(tracking, a, "A", order) and register(tracking, b, "B", order)
    assert tracking.read_bytes() == b"# Index\r\n- [A](a.md)\r\n- [B](b.md)\r\n"
    assert stat.S_IMODE(tracking.stat().st_mode) == 0o444


def test_deferred_writes_are_atomic_at_once_and_fsynced_in_one_pass(tmp_path, monkeypatch):
    """Outputs and cassettes are written with ``sync=False`` (one fsync per file was a tenth of
    a 1,000-row run): the rename happens at once, and :func:`sync_deferred` fsyncs each file
    and its folder once, then forgets them."""
    from pytest_batchgen import fsutil

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    fsutil.sync_deferred()  # what earlier tests in this process left
    monkeypatch.setattr(fsutil.os, "fsync", spy)
    a, b = tmp_path / "out" / "a.md", tmp_path / "out" / "b.md"
    fsutil.atomic_write(a, "one", sync=False)  # the folder is made on the first write
    fsutil.atomic_write(b, "two", sync=False)
    assert a.read_text() == "one" and b.read_text() == "two" and synced == []
    assert not [p for p in a.parent.iterdir() if fsutil.TMP_MARK in p.name]
    assert fsutil.sync_deferred() == 2
    assert sorted(synced) == sorted([str(a), str(b), str(a.parent)])
    assert fsutil.sync_deferred() == 0  # nothing twice
    fsutil.atomic_write(a, "three")  # the default still fsyncs before the rename
    assert len(synced) == 4 and a.read_text() == "three"


def _many_deferred(folders: list[Path], each: int) -> list[Path]:
    fsutil.sync_deferred()  # what earlier tests in this process left
    paths = [folder / f"f{i}.md" for folder in folders for i in range(each)]
    for path in paths:
        fsutil.atomic_write(path, "x", sync=False)
    return paths


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux's")
def test_a_runs_many_deferred_writes_are_synced_a_file_system_at_a_time(tmp_path, monkeypatch):
    """From ``SYNCFS_FROM`` files on (a run's outputs and recordings), each file system they
    are on is synced once (``syncfs``: every file and rename on it durable in one journal
    commit), not each file: 2,000 files took 0.03 s so, against 0.36 to 0.39 s one by one."""
    real = fsutil._syncfs()
    assert real is not None  # glibc and musl have it
    synced: list[str] = []
    paths = _many_deferred([tmp_path / "out", tmp_path / "cassettes"], fsutil.SYNCFS_FROM)

    def syncfs(fd: int) -> int:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    one_by_one: list[Path] = []
    monkeypatch.setattr(fsutil, "_syncfs", lambda: syncfs)
    monkeypatch.setattr(fsutil, "_fsync", one_by_one.append)
    # the run's own files' pages count for nothing against the limit (a large run's, not yet written back)
    ours = fsutil.DIRTY_PER_FILE * len(paths)
    monkeypatch.setattr(fsutil, "_dirty_bytes", lambda: ours + fsutil.SYNCFS_OTHERS_LIMIT)
    assert fsutil.sync_deferred() == len(paths)
    assert len(synced) == 1 and synced[0] in (str(tmp_path / "out"), str(tmp_path / "cassettes"))
    assert one_by_one == []  # the two folders share tmp_path's file system: one sync did both
    assert fsutil.sync_deferred() == 0


@pytest.mark.parametrize("syncfs", ["missing", "failing", "others-dirty", "dirty-unknown"])
def test_without_a_working_syncfs_each_file_and_folder_is_fsynced(tmp_path, monkeypatch, syncfs):
    """Where there is no ``syncfs`` (macOS, Windows), or it fails (an I/O error), or other
    programs have much written that is not on disk yet (``syncfs`` would wait for all of it),
    or that is not known, the files are fsynced one by one, and their folders, as for a few."""
    paths = _many_deferred([tmp_path / "out"], fsutil.SYNCFS_FROM)
    one_by_one: list[Path] = []
    works = {"missing": None, "failing": lambda fd: -1}.get(syncfs, lambda fd: 0)
    others = fsutil.DIRTY_PER_FILE * len(paths) + fsutil.SYNCFS_OTHERS_LIMIT + 1
    dirty = {"others-dirty": others, "dirty-unknown": None}.get(syncfs, 0)
    monkeypatch.setattr(fsutil, "_syncfs", lambda: works)
    monkeypatch.setattr(fsutil, "_dirty_bytes", lambda: dirty)
    monkeypatch.setattr(fsutil, "_fsync", one_by_one.append)
    assert fsutil.sync_deferred() == len(paths)
    assert sorted(one_by_one) == sorted([*paths, tmp_path / "out"])


def test_what_is_left_unsynced_at_exit_is_fsynced_without_a_thread_pool(tmp_path):
    """At interpreter exit no new thread may start (concurrent.futures refuses), so the exit
    pass fsyncs one by one; a process that exits with deferred writes prints no error."""
    import subprocess
    import sys

    code = (
        "from pathlib import Path\n"
        "from pytest_batchgen import fsutil\n"
        f"fsutil.atomic_write(Path({str(tmp_path / 'late.md')!r}), 'x', sync=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "late.md").read_text() == "x"


# -- a file the run cannot write: a message and the rest of the run, never a traceback -----------

#: a project conftest that makes every write of the plan ``plan.md`` fail as a read-only folder
#: makes it (only while the session ends: the outer test process keeps the real function)
REFUSE_PLAN_WRITES = """
import errno
import pytest
from pytest_batchgen import planedit

@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session):
    real = planedit.atomic_write
    def refused(path, data, **kwargs):
        if path.name == "plan.md":
            tmp = path.with_name(".plan.md.batchgen-tmp-0123abcd")
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
        return real(path, data, **kwargs)
    planedit.atomic_write = refused
    try:
        return (yield)
    finally:
        planedit.atomic_write = real
"""


def test_a_plan_that_cannot_be_written_is_named_and_the_other_plans_and_reports_are_written(project):
    """A read-only plan folder made pytest_sessionfinish raise: a PermissionError traceback, no
    summary, the second plan not recorded, no report, and exit 1 only by accident."""
    import json

    from genhelpers import draft, rows_for, rows_plan_text

    project.write_rows(rows_for("quorum"))
    project.write("other.md", rows_plan_text(rows_for("fencing-token")))
    project.write("output/quorum.md", draft("Quorum"))  # pending rows whose outputs pass
    project.write("output/fencing-token.md", draft("Fencing Token"))
    project.write("conftest.py", REFUSE_PLAN_WRITES)
    before = project.read("plan.md")
    result = project.pytest(
        "--batch-plan", "plan.md", "--batch-plan", "other.md", "--batch-validate-only", "--batch-report", "r.json"
    )
    text = "\n".join(result.result.outlines + result.result.errlines)
    assert "Traceback" not in text and "PermissionError" not in text
    result.stdout.fnmatch_lines(
        [
            "plan.md: plan not updated: Permission denied: plan.md; make ./ and the plan writable *, then run again",
            "other.md: plan updated",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the run's statuses were not recorded
    assert project.read("plan.md") == before
    assert project.statuses("other.md") == {"fencing-token.md": "complete"}
    report = json.loads(project.read("r.json"))
    plans = {p["plan"]: p for p in report["plans"]}
    assert plans["plan.md"]["not_updated"].startswith("Permission denied: plan.md; make ./")
    assert "not_updated" not in plans["other.md"]
    assert [r["status_after"] for r in plans["plan.md"]["rows"]] == ["pending"]  # as the plan still says
    assert [r["status_after"] for r in plans["other.md"]["rows"]] == ["complete"]
    assert report["exit_status"] == 1


#: a project conftest that makes the tracking file's lock fail as a read-only folder makes it
REFUSE_TRACKING_LOCK = """
import errno
from pytest_batchgen import fsutil, tracking

real = tracking.lock_for

def refused(path, *args, **kwargs):
    raise PermissionError(errno.EPERM, "Operation not permitted", str(fsutil.lock_path(path)))

def pytest_configure(config):
    tracking.lock_for = refused

def pytest_unconfigure(config):
    tracking.lock_for = real
"""


def test_a_tracking_file_that_cannot_be_written_fails_registered_with_one_line(project):
    """A read-only tracking-file folder failed the ``registered`` item with a ~300-line
    PermissionError traceback, pasted into the plan's notes too."""
    from genhelpers import draft, rows_for

    project.write_rows(rows_for("quorum"))
    project.edit("plan.md", "\n\n## Phase 1", "\n5. Output registered in `output/INDEX.md`\n\n## Phase 1")
    project.write("output/quorum.md", draft("Quorum"))
    project.write("conftest.py", REFUSE_TRACKING_LOCK)
    result = project.run("--batch-validate-only")
    result.assert_items({"quorum.md::lint": "passed", "quorum.md::registered": "failed"})
    message = (
        "tracking file output/INDEX.md cannot be written: Operation not permitted: output/.INDEX.md.batchgen-lock; "
        "make output/ and output/INDEX.md writable (the plugin writes a lock file and a temporary beside it), "
        "then run again"
    )
    assert result.failure("quorum.md::registered").splitlines()[0] == f"output/quorum.md: {message}"
    assert "Traceback" not in str(result.stdout) and "PermissionError" not in str(result.stdout)
    assert project.notes() == {"quorum.md": f"1 check failed\n- registered (plan line 19): output/quorum.md: {message}"}
    assert project.statuses() == {"quorum.md": "pending"}


#: a project conftest that re-saves the plan in Latin-1 once collected, as an editor might
RESAVE_PLAN_LATIN1 = """
from pathlib import Path

def pytest_collection_finish(session):
    plan = Path("plan.md")
    plan.write_bytes(plan.read_bytes() + "\\n<!-- revu par Andr\\u00e9 -->\\n".encode("latin-1"))
"""


def test_a_plan_saved_in_another_encoding_during_the_run_is_named_and_the_other_plans_recorded(project):
    """A UnicodeDecodeError from the plan's re-read at the record step: a traceback, the other
    plans not recorded, no report."""
    import json

    from genhelpers import draft, rows_for, rows_plan_text

    project.write_rows(rows_for("quorum"))
    project.write("other.md", rows_plan_text(rows_for("fencing-token")))
    project.write("output/quorum.md", draft("Quorum"))
    project.write("output/fencing-token.md", draft("Fencing Token"))
    project.write("conftest.py", RESAVE_PLAN_LATIN1)

    result = project.pytest(
        "--batch-plan", "plan.md", "--batch-plan", "other.md", "--batch-validate-only", "--batch-report", "r.json"
    )

    assert "Traceback" not in "\n".join(result.result.outlines + result.result.errlines)
    result.stdout.fnmatch_lines(
        [
            "plan.md: plan not updated: it is no longer UTF-8 text (invalid continuation byte at byte *); "
            "save it as UTF-8, then run again",
            "other.md: plan updated",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses("other.md") == {"fencing-token.md": "complete"}
    assert json.loads(project.read("r.json"))["exit_status"] == 1


def test_locks_another_process_holds_are_named_as_such_and_waited_for_once(project, monkeypatch):
    """A lock timeout (filelock.Timeout, an OSError without strerror) got the advice for a
    read-only folder, and each row's registration waited the whole timeout again."""
    from genhelpers import draft, rows_for

    from pytest_batchgen import planedit, rules, tracking

    waits: list[str] = []
    real = fsutil.lock_for

    def short(path, timeout=60.0):
        waits.append(path.name)
        return real(path, timeout=0.2)

    for module in (fsutil, planedit, tracking, rules):
        if hasattr(module, "lock_for"):
            monkeypatch.setattr(module, "lock_for", short)
    project.write_rows(rows_for("quorum", "backpressure"))
    line = len([x for x in project.read().split("## Phase 1")[0].splitlines() if x[:1].isdigit()]) + 1
    project.write(
        "plan.md",
        project.read().replace("\n## Phase 1", f"{line}. Output registered in `output/INDEX.md`\n\n## Phase 1", 1),
    )
    project.write("output/quorum.md", draft("Quorum"))
    project.write("output/backpressure.md", draft("Backpressure"))
    project.write("output/vector-clock.md", draft("Vector Clock", category="Z"))  # fails: takes no lock
    project.write(
        "plan.md",
        project.read().replace(
            "| backpressure.md | haiku | pending |",
            "| backpressure.md | haiku | pending |\n| Vector Clock | vector-clock.md | haiku | pending |",
            1,
        ),
    )
    held = [real(project.path / "plan.md"), real(project.path / "output" / "INDEX.md")]
    for lock in held:
        lock.acquire()
    try:
        result = project.run("--batch-validate-only", "-p", "no:randomly")
    finally:
        for lock in held:
            lock.release()

    for name in ("quorum.md", "backpressure.md"):
        assert "tracking file output/INDEX.md not updated: another process holds its lock" in result.failure(
            f"{name}::registered"
        )
    result.stdout.fnmatch_lines(["plan.md: plan not updated: another process holds its lock (.plan.md.batchgen-lock*"])
    assert waits.count("INDEX.md") == 1  # the second row did not wait again
    # a row that would not write keeps its own message
    assert "the output is registered once its other checks pass" in result.failure("vector-clock.md::registered")


def test_a_tracking_file_that_is_a_named_pipe_is_an_error_not_a_hang(tmp_path):
    # reading it waited for a writer for good: the run hung at the registration check
    from pytest_batchgen.tracking import TrackingError, is_registered

    fifo = tmp_path / "INDEX.md"
    os.mkfifo(fifo)
    with pytest.raises(TrackingError, match="is a named pipe, not a file: reading it could wait for ever"):
        is_registered(fifo, tmp_path / "a.md")


def test_a_write_into_a_folder_another_thread_removes_as_it_empties_still_lands(tmp_path, monkeypatch):
    """Review round: a finished draft's write removes the row's partial draft and then the
    drafts folder when it is empty (``dispatch.discard_partial``), on another thread than a
    cut-off reply's write of its partial draft into that folder (batch results are filed by a
    pool; the messages path writes in executor threads). Between this write's ``mkdir`` and its
    temporary's creation the folder could go: the paid reply was lost, its row in error."""
    path = tmp_path / ".batchgen-drafts" / "cut.md"
    real = fsutil._create_temporary
    calls = []

    def racing(target: Path):
        calls.append(target)
        if len(calls) == 2 and target.parent.exists():
            target.parent.rmdir()  # the other thread: the folder was empty, it goes
        return real(target)

    monkeypatch.setattr(fsutil, "_create_temporary", racing)

    fsutil.atomic_write(path, "partial\n", sync=False)

    assert path.read_text() == "partial\n"
    assert len(calls) >= 3  # missing, made and removed at once, made again
