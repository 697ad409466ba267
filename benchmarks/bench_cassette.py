"""What a cassette costs to write and to read, with and without the client's request headers.

One row is recorded by the plugin through the real SDK against the loopback server
(tests/fakeapi.py). The cassette it writes keeps only the request headers that say what was
asked; the server's log shows every header the SDK sent (user agent, ``x-stainless-*``, host,
transport). The script puts those back into a copy and times, for both, vcrpy's YAML dump and
the recorder's own (``recording._CassetteYaml``, the same text: what recording a reply costs) and
``cassettes.read_cassette`` (what a replay reads per row); then
the recorder's whole step per reply, ``Recorder.record`` into a new cassette.

    python benchmarks/bench_cassette.py [--repeat 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402


def per_call_ms(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1000 * (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=500)
    args = ap.parse_args()
    import yaml
    from vcr.serializers import yamlserializer

    from pytest_batchgen.cassettes import CassetteLoader, read_cassette
    from pytest_batchgen.recording import _CassetteYaml

    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as server:
        folder = Path(tmp)
        write_plan(folder, 1)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": server.base_url,
            "ANTHROPIC_API_KEY": "bench",
            "XDG_CACHE_HOME": str(folder / "user-cache"),
        }
        env.pop("CI", None)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--batch-plan",
            "plan.md",
            "--rootdir",
            tmp,
        ]
        subprocess.run(cmd, cwd=folder, env=env, capture_output=True, check=False)
        (recorded,) = folder.glob("cassettes/**/*.yaml")
        sent = {k: v for k, v in server.messages_requests()[0].headers.items() if k.lower() != "x-api-key"}
        data = yaml.load(recorded.read_text(encoding="utf-8"), Loader=CassetteLoader)
        kept = sorted(data["interactions"][0]["request"]["headers"])
        full = yaml.load(recorded.read_text(encoding="utf-8"), Loader=CassetteLoader)
        full["interactions"][0]["request"]["headers"] = {k.lower(): [v] for k, v in sent.items()}
        with_client = folder / "with-client-headers.yaml"
        with_client.write_text(yamlserializer.serialize(full), encoding="utf-8")
        print(f"request headers recorded: {', '.join(kept)}; the SDK sent {len(sent)}")
        for label, path, cassette in (
            ("as recorded", recorded, data),
            ("with the client's headers", with_client, full),
        ):
            dump = per_call_ms(lambda c=cassette: yamlserializer.serialize(c), args.repeat)
            ours = per_call_ms(lambda c=cassette: _CassetteYaml.serialize(c), args.repeat)
            load = per_call_ms(lambda p=path: read_cassette(p), args.repeat)
            assert _CassetteYaml.serialize(cassette) == yamlserializer.serialize(cassette)
            print(
                f"{label}: {path.stat().st_size} bytes, vcrpy's dump {dump:.3f} ms, the recorder's "
                f"(the same text) {ours:.3f} ms, read {load:.3f} ms"
            )
        print(f"record: {record_ms(folder, data, sent, args.repeat):.3f} ms a reply into a new cassette")


def record_ms(folder: Path, data: dict, sent: dict[str, str], repeat: int) -> float:
    """What the recorder spends on a reply (``Recorder.record``: vcrpy's request, the scrubbing,
    the YAML dump, the write), each into a row's new cassette, with the headers the SDK sent."""
    from pytest_batchgen.recording import Recorder

    interaction = data["interactions"][0]
    body = interaction["request"]["body"].encode()
    reply = interaction["response"]
    rows = folder / "rows"
    recorder = Recorder({f"k{i}": rows / f"k{i}.yaml" for i in range(repeat + 1)}, "once")
    keys = iter(range(repeat + 1))

    def one() -> None:
        response = {**reply, "headers": dict(reply["headers"]), "body": dict(reply["body"])}
        recorder.record(f"k{next(keys)}", "POST", interaction["request"]["uri"], body, sent, response)

    return per_call_ms(one, repeat)


if __name__ == "__main__":
    main()
