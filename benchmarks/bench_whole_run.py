"""The whole ``pytest --batch-plan`` run, side by side with a bare SDK script and with promptfoo.

Issue 12's targets, each printed as one ratio line (``RATIO name: value (target ...)``):

1. ours / promptfoo 0.118.17 (``-j 16``, cache off) for 48 rows at 1 s latency, concurrency 16
   (target <= 0.85). promptfoo is installed from npm into a cache folder (never into the
   repository) with ``--ignore-scripts`` then ``npm rebuild better-sqlite3``; when it cannot be
   installed or run, the script says so and still prints our time.
2. ours / bare for 1,000 rows at zero latency, concurrency 8 and 64 (target <= 1.3), where
   "bare" is an asyncio script sending the same requests with the same ``AsyncAnthropic``
   client and writing each reply to a file; plus the per-row overhead (ours - bare) / rows in ms
   at 100, 1,000 and 5,000 rows (should stay flat).
3. time to the first request, ours against bare (target <= bare + 0.3 s).
4. replay of 1,000 and 5,000 recorded rows (offline, no key) against validate-only of the same
   outputs: time and peak RSS (target <= 1.3x each).

Beside three of them it prints their floors, measured in the same run (``FLOOR name: value``,
and the bare script against promptfoo): what the fastest runner built on the same SDK takes
(the bare script); how long pytest itself takes to run a plugin's ``pytest_configure``, against
a bare interpreter's first line (:func:`plugin_start`: no plugin starts importing the SDK
sooner); and validate-only with a replay's extra item a row, trivial, then reading the row's
cassette and writing its reply (``replay_floor.py``).

Every run is a fresh process against the same loopback server (tests/fakeapi.py, in this
process). Figures are wall-clock and noisy on a shared machine: re-run on a quiet one.

    python benchmarks/bench_whole_run.py            # the issue's sizes (several minutes)
    python benchmarks/bench_whole_run.py --quick    # small sizes, a minute or two
    python benchmarks/bench_whole_run.py --only bare,replay --sizes 100,1000
    python benchmarks/bench_whole_run.py --only replay --replay-sizes 1000 --replay-pairs 9   # a median
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_validate_only import run_process, write_trivial_tests  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402
from replay_floor import add_floor, clear_floor_output  # noqa: E402

PROMPTFOO_VERSION = "0.118.17"
PROMPTFOO_CACHE = Path(os.environ.get("BATCHGEN_BENCH_CACHE", Path.home() / ".cache" / "pytest-batchgen-bench"))

#: the bare script: the same client, the same request shape, one file per reply
BARE = r"""
import asyncio, sys
from pathlib import Path
import anthropic

async def main(rows: int, concurrency: int, out: Path, system: str) -> None:
    client = anthropic.AsyncAnthropic(max_retries=2)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            message = await client.messages.create(
                model="claude-haiku-5-5",
                max_tokens=8192,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": f"Write the output for the row 'Term {i}' (file term-{i}.md)."}],
            )
        text = "".join(b.text for b in message.content if b.type == "text")
        (out / f"term-{i}.md").write_text(text)

    await asyncio.gather(*(one(i) for i in range(rows)))
    await client.close()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]).read_text()))
"""


@dataclass
class Timing:
    wall: float
    first_request: float | None = None  # seconds from process start to the server's first request
    span: float | None = None  # first request in to last reply out, at the server
    peak_mb: float | None = None
    note: str = ""
    cpu: float | None = None  # the process's CPU seconds (user + system, every thread)
    server_cpu: float = 0.0  # the loopback server's CPU seconds during the run (this process)


def server_view(server: FakeAnthropic, start: float, rows: int) -> tuple[float, float]:
    server.wait_idle()
    logged = server.messages_requests()
    if len(logged) < rows:
        raise SystemExit(f"the server saw {len(logged)} requests for {rows} rows")
    first = min(e.started for e in logged)
    last = max(e.finished or e.started for e in logged)
    return first - start, last - first


#: pytest plugins installed here that a batchgen run does not use (``--all-plugins`` keeps them):
#: hypothesis' plugin alone imports hypothesis at the end of every session (about 2 s)
OTHER_PLUGINS = ("hypothesispytest", "anyio")
DISABLED: list[str] = list(OTHER_PLUGINS)
#: ``batchgen_sender`` of our runs (``--sender``): the default, or the thread, to compare
SENDER: list[str] = []


def offline_env() -> dict[str, str]:
    """This environment without a key, CI or ``PYTHONDONTWRITEBYTECODE`` (a user's machine keeps
    bytecode caches; without them every module of the plugin is compiled, and rewritten by
    pytest, on every run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    for name in ("CI", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def base_env(server: FakeAnthropic) -> dict[str, str]:
    env = {**offline_env(), "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "bench"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def pytest_cmd(*extra: str) -> list[str]:
    off = [arg for name in DISABLED for arg in ("-p", f"no:{name}")]
    sender = [arg for value in SENDER for arg in ("-o", f"batchgen_sender={value}")]
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *off, *sender, *extra]


def ours(rows: int, concurrency: int, latency: float) -> Timing:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=latency) as server:
        folder = Path(tmp)
        write_plan(folder, rows)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        cmd = pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", str(concurrency), "--rootdir", tmp)
        before = own_cpu()
        ran = run_process(cmd, folder, base_env(server))
        served = own_cpu() - before
        first, span = server_view(server, ran.start, rows)
        return Timing(ran.wall, first, span, ran.peak_kib / 1024, cpu=ran.cpu, server_cpu=served)


def bare(rows: int, concurrency: int, latency: float) -> Timing:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=latency) as server:
        folder = Path(tmp)
        write_plan(folder, rows)
        (folder / "bare.py").write_text(BARE)
        (folder / "bare-out").mkdir()
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        cmd = [sys.executable, "bare.py", str(rows), str(concurrency), "bare-out", "out/reference.md"]
        before = own_cpu()
        ran = run_process(cmd, folder, base_env(server))
        served = own_cpu() - before
        first, span = server_view(server, ran.start, rows)
        return Timing(ran.wall, first, span, ran.peak_kib / 1024, cpu=ran.cpu, server_cpu=served)


def own_cpu() -> float:
    """This process's CPU seconds: while it waits for a run, its loopback server's threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pytest_floor(items: int) -> Timing:
    """pytest alone: a session of ``items`` trivial parametrised tests, with the same flags.
    A generation run has this many items (a generate item and one per checklist line, per row),
    so this is the part of its time that pytest takes whatever the plugin does."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tests = write_trivial_tests(folder, items)
        ran = run_process(pytest_cmd("--rootdir", tmp, tests), folder, offline_env())
        return Timing(ran.wall, peak_mb=ran.peak_kib / 1024, cpu=ran.cpu)


# -- promptfoo -------------------------------------------------------------------------------


def promptfoo_bin() -> tuple[Path | None, str]:
    """promptfoo's CLI, installed once into the cache folder; (None, why) when it cannot be."""
    folder = PROMPTFOO_CACHE / f"promptfoo-{PROMPTFOO_VERSION}"
    cli = folder / "node_modules" / ".bin" / "promptfoo"
    if cli.exists():
        return cli, ""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None, "node/npm not found"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text('{"name": "bench-promptfoo", "private": true}\n')
    print(f"installing promptfoo {PROMPTFOO_VERSION} into {folder} (once) ...", flush=True)
    steps = [
        [npm, "install", f"promptfoo@{PROMPTFOO_VERSION}", "--ignore-scripts", "--no-audit", "--no-fund"],
        [npm, "rebuild", "better-sqlite3"],
    ]
    for step in steps:
        proc = subprocess.run(step, cwd=folder, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, f"`{' '.join(step[1:3])}` failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return (cli, "") if cli.exists() else (None, "installed, but no promptfoo CLI found")


def promptfoo_config(folder: Path, rows: int, base_url: str) -> Path:
    """An eval of the same rows: the same system prefix, one prompt per row, three assertions
    of the weight of our checklist (front matter keys, a category value, two sections in order)."""
    tests = [{"vars": {"title": f"Term {i}", "filename": f"term-{i}.md"}} for i in range(rows)]
    config = {
        "description": "pytest-batchgen benchmark",
        "prompts": [
            json.dumps(
                [
                    {"role": "system", "content": "Write outputs in the format of this reference:\n\n" + REFERENCE},
                    {"role": "user", "content": "Write the output for the row '{{title}}' (file {{filename}})."},
                ]
            )
        ],
        "providers": [
            {
                "id": "anthropic:messages:claude-haiku-4-5-20251001",
                "config": {"apiBaseUrl": base_url, "max_tokens": 8192, "temperature": 0},
            }
        ],
        "defaultTest": {
            "assert": [
                {
                    "type": "javascript",
                    "value": "/^term:/m.test(output) && /^category:/m.test(output) && /^tags: \\[[^,\\]]+,[^\\]]+\\]/m.test(output)",
                },
                {"type": "javascript", "value": "/^category: (Alpha|Beta)\\s*$/m.test(output)"},
                {"type": "regex", "value": "## Definition[\\s\\S]*## Details"},
            ]
        },
        "tests": tests,
    }
    path = folder / "promptfooconfig.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def promptfoo(rows: int, concurrency: int, latency: float) -> Timing:
    cli, why = promptfoo_bin()
    if cli is None:
        return Timing(float("nan"), note=f"promptfoo unavailable: {why}")
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=latency) as server:
        folder = Path(tmp)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        config = promptfoo_config(folder, rows, server.base_url)
        env = {
            **base_env(server),
            "PROMPTFOO_CONFIG_DIR": str(folder / ".promptfoo"),
            "PROMPTFOO_DISABLE_TELEMETRY": "1",
            "PROMPTFOO_DISABLE_UPDATE": "1",
            "PROMPTFOO_CACHE_ENABLED": "false",
            "PROMPTFOO_DISABLE_SHARING": "1",
            "NO_COLOR": "1",
        }
        cmd = [
            str(cli),
            "eval",
            "-c",
            str(config),
            "-j",
            str(concurrency),
            "--no-cache",
            "--no-progress-bar",
            "--no-table",
            "-o",
            str(folder / "results.json"),
        ]
        try:
            ran = run_process(cmd, folder, env)
        except SystemExit as exc:
            return Timing(float("nan"), note=f"promptfoo failed to run: {exc}")
        logged = server.messages_requests()
        if len(logged) < rows:
            return Timing(ran.wall, note=f"promptfoo sent {len(logged)} of {rows} requests: {ran.text[-500:]}")
        first, span = server_view(server, ran.start, rows)
        return Timing(ran.wall, first, span, ran.peak_kib / 1024, cpu=ran.cpu)


# -- replay ------------------------------------------------------------------------------------


@dataclass
class ReplayPair:
    """One pair of runs on the same outputs, and the floor's two runs beside it."""

    replay: Timing
    validate: Timing
    item: Timing  # validate-only with a trivial item more a row (replay_floor.py)
    read_write: Timing  # the same, the item reading the row's cassette and writing its reply


def replay_vs_validate(rows: int, pairs: int = 1) -> list[ReplayPair]:
    """Record ``rows`` rows once, then ``pairs`` times (a) replay them offline from scratch
    (outputs deleted, plan pending, no key, record mode none) and (b) validate-only the same
    outputs, then the floor of a replay (``replay_floor.py``): validate-only with a trivial item
    more a row (a replay's item count: no replay runs fewer), and with that item reading the
    row's cassette and writing its reply (the least work a replay does). On a shared VM one pair
    is one draw: the ratio of a pair moved from 1.2 to 2.35 x over 15 pairs on one folder, so
    ``--replay-pairs`` prints their median too."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_plan(folder, rows)
        with FakeAnthropic() as server:
            server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
            run_process(
                pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", "16", "--rootdir", tmp),
                folder,
                base_env(server),
            )
        offline = offline_env()

        def timed(*extra: str, env: dict[str, str] = offline) -> Timing:
            ran = run_process(pytest_cmd("--batch-plan", "plan.md", *extra, "--rootdir", tmp), folder, env)
            return Timing(ran.wall, peak_mb=ran.peak_kib / 1024, cpu=ran.cpu)

        for _ in range(pairs):
            for i in range(rows):
                (folder / "out" / f"term-{i}.md").unlink()
            write_plan(folder, rows)  # every row pending again
            replay = timed("--batch-record-mode", "none")
            complete = (folder / "plan.md").read_text().count("| complete |")
            if complete != rows:  # (a run with a failing row exits non-zero: run_process shows it)
                raise SystemExit(f"the replay completed {complete} of {rows} rows")
            validate = timed("--batch-validate-only")
            add_floor(folder)  # only for the floor's runs: the pair above ran without its conftest
            clear_floor_output(folder)
            item = timed("--batch-validate-only", "floor.txt", env={**offline, "BATCHGEN_FLOOR": "item"})
            read_write = timed("--batch-validate-only", "floor.txt", env={**offline, "BATCHGEN_FLOOR": "read-write"})
            written = len(list((folder / "floor-out").iterdir()))
            if written != rows:
                raise SystemExit(f"the floor's run wrote {written} of {rows} files")
            for name in ("conftest.py", "floor.txt"):
                (folder / name).unlink()
            clear_floor_output(folder)
            out.append(ReplayPair(replay, validate, item, read_write))
    return out


def plugin_start(runs: int = 5) -> tuple[float, float, float]:
    """When, after its process starts, pytest first runs a plugin's code, against when a bare
    interpreter runs its first line: medians of ``runs`` starts each, interleaved, as
    (a plugin module imported, its ``pytest_configure`` called, the interpreter's first line).

    No pytest plugin can start importing the SDK before pytest imports it, nor know that the
    run was given ``--batch-plan`` before its options are parsed (``pytest_configure``), while a
    bare script imports the SDK from its first line: the difference is the least by which a
    plugin's first request can follow the bare script's (both then import the same SDK and send
    the same request). The probe is loaded with ``-p``, which pytest imports before the plugins
    it finds installed (this one among them), and ends the process at its ``pytest_configure``,
    which runs first of every plugin's."""
    probe = (
        "import os, time\n"
        "import pytest\n"
        "def _stamp(name):\n"
        "    with open(os.environ['BATCHGEN_START_STAMPS'], 'a') as out:\n"
        "        out.write(f'{name} {time.time()!r}\\n')\n"
        "_stamp('imported')\n"
        "@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_configure(config):\n"
        "    _stamp('configure')\n"
        "    os._exit(0)\n"
    )
    first_line = (
        "import os, time; open(os.environ['BATCHGEN_START_STAMPS'], 'a').write(f'first-line {time.time()!r}\\n')"
    )
    found: dict[str, list[float]] = {"imported": [], "configure": [], "first-line": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_plan(folder, 48)
        (folder / "batchgen_start_probe.py").write_text(probe)
        stamps = folder / "stamps.txt"
        env = {**offline_env(), "BATCHGEN_START_STAMPS": str(stamps)}
        env["PYTHONPATH"] = os.pathsep.join([tmp, env["PYTHONPATH"]])
        plugin = pytest_cmd("-p", "batchgen_start_probe", "--batch-plan", "plan.md", "--rootdir", tmp)
        for _ in range(runs):
            for cmd in (plugin, [sys.executable, "-c", first_line]):
                stamps.unlink(missing_ok=True)
                started = time.time()
                subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True)
                for line in stamps.read_text().splitlines():
                    name, at = line.split()
                    found[name].append(float(at) - started)
    return tuple(statistics.median(found[name]) for name in ("imported", "configure", "first-line"))  # type: ignore[return-value]


# -- main --------------------------------------------------------------------------------------


def file_creation_cost(files: int = 1000) -> tuple[float, str]:
    """The CPU seconds a new file costs in a fresh temporary folder (written to a hidden
    temporary and renamed, as the plugin writes each output and cassette), and where.

    Printed beside the figures: on this project's VMs, ext4 charged 20 us a file in one folder
    and 1 ms in another (its search for a free inode in the block group of the folder), and
    each benchmark run gets a new temporary folder. A replay and a generating run create two
    files a row (output and cassette, or output and its temporary); validate-only creates none,
    and the bare script one a row."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.process_time()
        for i in range(files):
            temporary = os.path.join(tmp, f".out-{i}.md.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.write(fd, b"x" * 1500)
            os.close(fd)
            os.replace(temporary, os.path.join(tmp, f"out-{i}.md"))
        return (time.process_time() - started) / files, os.path.dirname(tmp)


@functools.cache
def start_floor() -> str:
    """The floor of "first request, ours - bare" (:func:`plugin_start`): measured once a run,
    printed by whichever of the peer and bare sections asks first, and again by the other."""
    imported, configured, first_line = plugin_start()
    return (
        f"pytest's own start: a plugin imported {imported:.2f}s and configured {configured:.2f}s after its "
        f"process starts; a bare interpreter's first line {first_line:.2f}s after (medians of 5)\n"
        f"FLOOR first request ours - bare (s): {configured - first_line:.2f} (from a plugin's configure hook, "
        f"where it learns it generates; {imported - first_line:.2f} from its import)"
    )


def ratio_line(name: str, value: float, target: str) -> None:
    print(f"RATIO {name}: {value:.2f} ({target})", flush=True)


def best(fn, repeat: int, *args) -> Timing:
    return min((fn(*args) for _ in range(repeat)), key=lambda t: t.wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a quick look, not the targets")
    ap.add_argument("--only", default="peer,bare,replay", help="comma-separated: peer, bare, replay")
    ap.add_argument("--peer-rows", type=int, default=48)
    ap.add_argument("--peer-latency", type=float, default=1.0)
    ap.add_argument("--peer-concurrency", type=int, default=16)
    ap.add_argument("--bare-rows", type=int, default=1000)
    ap.add_argument("--concurrencies", default="8,64")
    ap.add_argument("--sizes", default="100,1000,5000", help="row counts of the per-row overhead series")
    ap.add_argument("--replay-sizes", default="1000,5000")
    ap.add_argument(
        "--replay-pairs", type=int, default=1, help="replay and validate-only runs per size; the median is kept"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure; the best is kept")
    ap.add_argument("--all-plugins", action="store_true", help=f"keep {', '.join(OTHER_PLUGINS)} loaded")
    ap.add_argument("--sender", choices=("process", "thread"), help="batchgen_sender of our runs (default: the ini's)")
    args = ap.parse_args()
    if args.sender:
        SENDER.append(args.sender)
    if args.replay_pairs < 1:
        ap.error("--replay-pairs needs at least 1")
    if args.all_plugins:
        DISABLED.clear()
    if args.quick:
        args.peer_rows, args.peer_latency, args.bare_rows = 16, 0.5, 200
        args.sizes, args.replay_sizes = "50,200", "200"
    only = set(args.only.split(","))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"pytest plugins disabled: {', '.join(DISABLED) or 'none'}; bytecode caches on"
        + (f"; batchgen_sender = {args.sender}" if args.sender else ""),
        flush=True,
    )
    ours(4, 4, 0.0), bare(4, 4, 0.0)  # warm-up: bytecode caches written, files in the page cache
    per_file, where = file_creation_cost()
    # its 1,000 files, created and deleted, are written back before the next run starts, not
    # during it: the next run is always ours (the peer section's first request came at 3.08 to
    # 3.29 s after it, at 2.47 to 2.59 s in runs of their own)
    os.sync()
    print(
        f"a new file in a fresh folder of {where} (TMPDIR): {per_file * 1e6:.0f} us of CPU "
        "(each run gets its own folder; the file system's charge varies by folder, see file_creation_cost)",
        flush=True,
    )

    if "peer" in only:
        n, lat, c = args.peer_rows, args.peer_latency, args.peer_concurrency
        mine = best(ours, args.repeat, n, c, lat)
        print(
            f"peer: {n} rows, {lat:g}s latency, concurrency {c}: ours {mine.wall:.2f}s (first request at {mine.first_request:.2f}s)",
            flush=True,
        )
        theirs = best(promptfoo, args.repeat, n, c, lat)
        if theirs.note:
            print(f"peer: {theirs.note}; ours alone: {mine.wall:.2f}s")
        else:
            print(f"peer: promptfoo {PROMPTFOO_VERSION} -j {c} --no-cache: {theirs.wall:.2f}s")
            ratio_line(f"ours/promptfoo {n} rows {lat:g}s latency c={c}", mine.wall / theirs.wall, "target <= 0.85")
            # the floor of any SDK-based runner: a script that only sends and writes
            ref = best(bare, args.repeat, n, c, lat)
            print(
                f"peer: the bare SDK script on the same rows: {ref.wall:.2f}s (first request at "
                f"{ref.first_request:.2f}s) = {ref.wall / theirs.wall:.2f} x promptfoo",
                flush=True,
            )
        print(start_floor(), flush=True)

    if "bare" in only:
        firsts = []
        refs: dict[int, Timing] = {}  # the bare script's run at each concurrency
        for c in (int(x) for x in args.concurrencies.split(",")):
            mine = best(ours, args.repeat, args.bare_rows, c, 0.0)
            ref = refs[c] = best(bare, args.repeat, args.bare_rows, c, 0.0)
            firsts.append((mine.first_request, ref.first_request))
            print(
                f"bare: {args.bare_rows} rows, zero latency, concurrency {c}: ours {mine.wall:.2f}s "
                f"(span {mine.span:.2f}s, {mine.peak_mb:.0f} MB, {mine.cpu:.2f}s CPU), bare {ref.wall:.2f}s "
                f"(span {ref.span:.2f}s, {ref.peak_mb:.0f} MB, {ref.cpu:.2f}s CPU)",
                flush=True,
            )
            ratio_line(f"ours/bare {args.bare_rows} rows zero latency c={c}", mine.wall / ref.wall, "target <= 1.3")
            # the work itself: the run's processes and the loopback server share two cores, so no
            # split of that work ends sooner than half of it (the bound assumes no core ever idles)
            bound = (mine.cpu + mine.server_cpu) / 2
            print(
                f"CPU ours/bare {args.bare_rows} rows c={c}: {mine.cpu / ref.cpu:.2f} (the loopback server: "
                f"{mine.server_cpu:.2f}s for ours, {ref.server_cpu:.2f}s for bare); ours with the server over two "
                f"cores: {bound:.2f}s = {bound / ref.wall:.2f} x the bare script's time",
                flush=True,
            )
        floor = pytest_floor(4 * args.bare_rows)
        against = ", ".join(
            f"{floor.wall / ref.wall:.2f} x the bare script's time at concurrency {c} ({floor.cpu / ref.cpu:.2f} x its CPU)"
            for c, ref in refs.items()
        )
        print(
            f"pytest alone: {4 * args.bare_rows} trivial items (the run's item count, 4 per row) take "
            f"{floor.wall:.2f}s, {floor.cpu:.2f}s CPU = {against}",
            flush=True,
        )
        previous: tuple[int, float] | None = None
        for n in (int(x) for x in args.sizes.split(",")):
            mine = best(ours, args.repeat, n, 8, 0.0)
            ref = best(bare, args.repeat, n, 8, 0.0)
            firsts.append((mine.first_request, ref.first_request))
            extra = mine.wall - ref.wall
            # the marginal cost of a row: the extra time's growth since the previous size
            # (the fixed part, pytest's start and end, cancels out)
            marginal = (
                f", marginal {(extra - previous[1]) / (n - previous[0]) * 1000:.1f} ms/row since {previous[0]}"
                if previous
                else ""
            )
            print(
                f"overhead: {n} rows, c=8: ours {mine.wall:.2f}s, bare {ref.wall:.2f}s, "
                f"(ours - bare) / rows {extra / n * 1000:.1f} ms{marginal} (should stay flat)",
                flush=True,
            )
            previous = (n, extra)
        mine_first = min(f for f, _ in firsts)
        ref_first = min(f for _, f in firsts)
        print(f"first request: ours {mine_first:.2f}s, bare {ref_first:.2f}s after process start")
        ratio_line("first request ours - bare (s)", mine_first - ref_first, "target <= 0.30")
        print(start_floor(), flush=True)

    if "replay" in only:
        for n in (int(x) for x in args.replay_sizes.split(",")):
            timings = replay_vs_validate(n, args.replay_pairs)
            for t in timings:
                replay, validate = t.replay, t.validate
                print(
                    f"replay: {n} rows offline {replay.wall:.2f}s {replay.peak_mb:.0f} MB {replay.cpu:.2f}s CPU; "
                    f"validate-only {validate.wall:.2f}s {validate.peak_mb:.0f} MB {validate.cpu:.2f}s CPU "
                    f"(time {replay.wall / validate.wall:.2f} x, CPU {replay.cpu / validate.cpu:.2f} x); "
                    f"its floor: a trivial item more a row {t.item.wall:.2f}s ({t.item.wall / validate.wall:.2f} x), "
                    f"that item reading the cassette and writing the reply {t.read_write.wall:.2f}s "
                    f"({t.read_write.wall / validate.wall:.2f} x)",
                    flush=True,
                )
            of = f" (median of {len(timings)} pairs)" if len(timings) > 1 else ""
            time_ratio = statistics.median(t.replay.wall / t.validate.wall for t in timings)
            memory_ratio = statistics.median(t.replay.peak_mb / t.validate.peak_mb for t in timings)
            ratio_line(f"replay/validate-only time {n} rows{of}", time_ratio, "target <= 1.3")
            ratio_line(f"replay/validate-only peak memory {n} rows{of}", memory_ratio, "target <= 1.3")
            floors = (("a trivial item more a row", "item"), ("that item reading and writing", "read_write"))
            for label, floor in floors:
                value = statistics.median(getattr(t, floor).wall / t.validate.wall for t in timings)
                print(f"FLOOR replay/validate-only time {n} rows{of}, {label}: {value:.2f}", flush=True)


if __name__ == "__main__":
    main()
