"""Recordings read and matched without vcrpy (pytest_batchgen.cassettes, issue 12).

A replay reads each row's cassette with PyYAML and matches requests itself, so that neither
vcrpy nor httpx is imported. These tests hold it to what vcrpy does: the same interactions out
of the same file, the same recorded reply chosen for the same request (a Hypothesis property
against vcrpy's own ``Cassette``), and the same strictness about broken files. Writing stays
vcrpy's (``recording.Recorder``): the last tests check what it leaves in each record mode.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import yaml

from pytest_batchgen.cassettes import CassetteLoader, CorruptCassette, Recordings, load_cassette_yaml, read_cassette

URL = "https://api.anthropic.com/v1/messages"


def message(text: str) -> dict:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def reply(text: str) -> dict:
    return {
        "status": {"code": 200, "message": "OK"},
        "headers": {"content-type": ["application/json"]},
        "body": {"string": json.dumps(message(text)).encode("utf-8")},
    }


def write_with_vcrpy(path: Path, interactions: list[tuple[str, str, bytes | None, dict, str]]) -> None:
    """A cassette exactly as vcrpy serialises it: (method, uri, body, headers, reply text)."""
    from vcr.request import Request
    from vcr.serialize import serialize
    from vcr.serializers import yamlserializer

    cassette = {
        "requests": [Request(m, u, b, h) for m, u, b, h, _ in interactions],
        "responses": [reply(t) for *_, t in interactions],
    }
    path.write_text(serialize(cassette, yamlserializer), encoding="utf-8")


def params(title: str, **extra) -> dict:
    return {"model": "claude-haiku-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": title}], **extra}


JSON = {"content-type": "application/json"}


# -- reading ------------------------------------------------------------------------------------


def test_a_cassette_reads_as_vcrpy_reads_it(tmp_path):
    from vcr.serialize import deserialize
    from vcr.serializers import yamlserializer

    path = tmp_path / "row.yaml"
    body = json.dumps(params("Alpha")).encode()
    write_with_vcrpy(path, [("POST", URL, body, JSON, "one"), ("POST", URL, b"\xff\xfe binary", {}, "two")])

    ours = read_cassette(path)
    requests, responses = deserialize(path.read_text(encoding="utf-8"), yamlserializer)

    assert ours is not None and len(ours) == 2
    assert [i.body for i in ours] == [r.body for r in requests]
    assert [i.request["method"] for i in ours] == [r.method for r in requests]
    assert [i.request["uri"] for i in ours] == [r.uri for r in requests]
    assert [dict(i.response) for i in ours] == responses


@pytest.mark.parametrize("content", [None, b"", b"  \n\t\n"])
def test_no_file_or_a_blank_one_is_no_recording(tmp_path, content):
    path = tmp_path / "row.yaml"
    if content is not None:
        path.write_bytes(content)
    assert read_cassette(path) is None


def test_an_empty_list_of_interactions_is_a_recording_with_none(tmp_path):
    path = tmp_path / "row.yaml"
    path.write_text("interactions: []\nversion: 1\n")
    assert read_cassette(path) == ()
    recordings = Recordings({"k": path}, "once")
    assert recordings.write_protected("k")  # vcrpy: a loaded file in mode once takes nothing new


def _recorded(tmp_path: Path) -> Path:
    path = tmp_path / "row.yaml"
    write_with_vcrpy(path, [("POST", URL, json.dumps(params("Alpha")).encode(), JSON, "one")])
    return path


@pytest.mark.parametrize(
    "corrupt, says",
    [
        (lambda b: b[:30] + b"\xff\xfe" + b[30:], "is not UTF-8 (line 3, byte 30)"),
        (lambda b: b"<<<<<<< HEAD\n" + b + b"=======\n>>>>>>> theirs\n", "merge-conflict marker at line 1"),
        (lambda b: b[: len(b) // 2] + b"\n  - [unclosed", "is not valid YAML at line"),
        (lambda b: b.replace(b"interactions:", b"interactionz:"), "is not a vcrpy cassette (KeyError"),
        (lambda b: b.replace(b"    method: POST\n", b""), "is not a vcrpy cassette (TypeError"),
        (lambda b: b.replace(b"code: 200", b"code: 429"), "holds only refused requests (HTTP 429): no reply to replay"),
        (
            lambda b: b.replace(b'"type": "message"', b'"type": "error"'),
            "has a reply that is not a message (interaction 1, HTTP 200)",
        ),
        (
            lambda b: b.replace(b'"input_tokens": 3', b'"input_tokens": -3'),
            "(interaction 1, HTTP 200): usage.input_tokens is -3, not a token count",
        ),
        (
            lambda b: b.replace(b'"output_tokens": 2', b'"output_tokens": 2.5'),
            "(interaction 1, HTTP 200): usage.output_tokens is 2.5, not a whole number",
        ),
        (lambda b: b"- request: {}\n", "is not a vcrpy cassette"),
        (lambda b: b"just text\n", "is not a vcrpy cassette"),
    ],
    ids=[
        "not-utf8",
        "conflict",
        "truncated",
        "no-interactions",
        "request-keys",
        "a-429",
        "not-a-message",
        "negative-usage",
        "float-usage",
        "list",
        "scalar",
    ],
)
def test_a_broken_cassette_says_what_is_wrong_with_it(tmp_path, corrupt, says):
    path = _recorded(tmp_path)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(CorruptCassette) as info:
        read_cassette(path)
    assert says in info.value.why and info.value.path == path


def test_a_corrupt_cassette_is_noted_and_named_with_its_fix(tmp_path):
    path = _recorded(tmp_path)
    path.write_bytes(b"interactions: [\n")
    recordings = Recordings({"k": path}, "none", {"k": "pytest --batch-plan plan.md 'plan.md::row.md'"})
    recordings.labels["k"] = "cassettes/row.yaml"
    recordings.live_refusal = "ANTHROPIC_API_KEY is not set, so this run can only replay"
    recordings.load("k")
    message = recordings.corrupt_message("k")
    assert message is not None and message.startswith(
        "the recording cassettes/row.yaml cannot be read: it is not valid YAML"
    )
    assert (
        "restore it from version control or delete it, then record it again: ANTHROPIC_API_KEY=sk-ant-... pytest"
        in message
    )
    assert path.read_bytes() == b"interactions: [\n"  # a run that cannot record leaves it alone


# -- loading: the same values as PyYAML's own constructor ---------------------------------------

SCALARS = st.one_of(st.text(), st.integers(), st.none(), st.booleans(), st.binary(), st.floats(allow_nan=False))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _loaded(text: str):
    try:
        return "value", yaml.load(text, Loader=CassetteLoader)
    except yaml.YAMLError as exc:
        return "error", type(exc)


def _fast(text: str):
    try:
        return "value", load_cassette_yaml(text)
    except yaml.YAMLError as exc:
        return "error", type(exc)


@settings(max_examples=200, deadline=None)
@given(value=VALUES, flow=st.booleans())
def test_a_dumped_value_loads_as_pyyaml_loads_it(value, flow):
    """``load_cassette_yaml`` builds the nodes vcrpy writes itself and leaves the rest (floats,
    booleans, aliases, odd tags) to PyYAML: the value is PyYAML's either way."""
    text = yaml.dump({"interactions": [value, value]}, default_flow_style=flow)
    assert _fast(text) == _loaded(text)


@settings(max_examples=300, deadline=None)
@given(value=VALUES, shared=st.booleans())
def test_the_recorder_writes_any_value_as_vcrpys_serializer_does(value, shared):
    """The recorder's serializer (``_CassetteYaml``) builds the representer's nodes itself for
    what a cassette holds and leaves the rest (bytes, floats, a list met twice) to vcrpy's: the
    text is vcrpy's, byte for byte, either way."""
    from vcr.serializers import yamlserializer

    from pytest_batchgen.recording import _CassetteYaml

    data = {"interactions": [value, value if shared else copy.deepcopy(value)], "version": 1}
    assert _CassetteYaml.serialize(data) == yamlserializer.serialize(data)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab01 :-[]{},&*!|>'\"#~\n\t")), max_size=60)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(YAMLISH, st.text(max_size=60)))
def test_any_text_loads_or_fails_as_pyyaml_does(text):
    assert _fast(text) == _loaded(text)


def test_the_recorded_corner_cases_load_as_pyyaml_loads_them():
    for text in [
        "a: &x [1, 2]\nb: *x\n",  # an alias: one shared list
        "a: 1\na: 2\n",  # a duplicate key: the last one
        "a: 0777\n",  # integers vcrpy never writes: octal, hexadecimal, with _, signed
        "a: 0x1f\n",
        "a: 1_000\n",
        "a: -3\n",
        "a: +4\n",
        "a: 0\n",
        "a: !!binary aGVsbG8=\nb: ~\nc: null\nd:\n",
        "? [1]\n: x\n",  # a key that is not text
        "a: !!python/tuple [1, 2]\nb: !!python/str x\n",
        "a: &r [*r]\n",  # a list holding itself
        "",
    ]:
        fast, loaded = _fast(text), _loaded(text)
        if text.startswith("a: &r"):  # a cycle: compared by shape
            assert fast[1]["a"][0] is fast[1]["a"]
            continue
        assert fast == loaded, text


# -- matching: what vcrpy would play -------------------------------------------------------------


def test_each_recorded_reply_plays_once_in_order(tmp_path):
    path = tmp_path / "row.yaml"
    body = json.dumps(params("Alpha")).encode()
    write_with_vcrpy(path, [("POST", URL, body, JSON, "first"), ("POST", URL, body, JSON, "second")])
    recordings = Recordings({"k": path}, "none")
    texts = [recordings.replay_directly("k", URL, params("Alpha")) for _ in range(3)]
    assert [t and t.body["content"][0]["text"] for t in texts] == ["first", "second", None]


@pytest.mark.parametrize("status", [429, 529, 500])
def test_a_refusal_the_sdk_retried_is_passed_over_and_its_retrys_reply_plays(tmp_path, status):
    # plain vcrpy around the SDK records the refused attempt, then the retry: vcrpy replays the
    # refusal and the SDK retries it; this reader goes straight to the retry's reply
    from vcr.request import Request
    from vcr.serialize import serialize
    from vcr.serializers import yamlserializer

    path = tmp_path / "row.yaml"
    body = json.dumps(params("Alpha")).encode()
    refused = {
        "status": {"code": status, "message": "Too Many Requests"},
        "headers": {"content-type": ["application/json"], "retry-after": ["1"]},
        "body": {"string": b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}'},
    }
    cassette = {"requests": [Request("POST", URL, body, JSON)] * 2, "responses": [refused, reply("after the retry")]}
    path.write_text(serialize(cassette, yamlserializer), encoding="utf-8")

    assert [i.response["status"]["code"] for i in read_cassette(path)] == [200]
    played = Recordings({"k": path}, "none").replay_directly("k", URL, params("Alpha"))
    assert played is not None and played.body["content"][0]["text"] == "after the retry"


def test_a_reply_opens_the_recording_only_when_it_is_the_first_played_for_the_rows_first_request(tmp_path):
    """What lets a replayed row's freshness be known without reading its cassette again: the
    recording opens with the request just sent (``Played.opens_recording``)."""
    path = tmp_path / "row.yaml"
    body = json.dumps(params("Alpha")).encode()
    write_with_vcrpy(path, [("POST", URL, body, JSON, "first"), ("POST", URL, body, JSON, "second")])
    recordings = Recordings({"k": path}, "none")
    played = [recordings.replay_directly("k", URL, params("Alpha")) for _ in range(2)]
    assert [(p.body["content"][0]["text"], p.opens_recording) for p in played] == [("first", True), ("second", False)]

    # the row's first request matched the second recorded one: the recording opens with another
    other = tmp_path / "other.yaml"
    write_with_vcrpy(
        other, [("POST", URL, json.dumps(params("Beta")).encode(), JSON, "b"), ("POST", URL, body, JSON, "a")]
    )
    recordings = Recordings({"k": other}, "none")
    found = recordings.replay_directly("k", URL, params("Alpha"))
    assert found is not None and found.body["content"][0]["text"] == "a" and not found.opens_recording
    # and its first reply, played for a later request of the row, does not make it so either
    later = recordings.replay_directly("k", URL, params("Beta"))
    assert later is not None and later.body["content"][0]["text"] == "b" and not later.opens_recording

    # a request that carried a secret matched the recording only once redacted: not the same
    secret = tmp_path / "secret.yaml"
    write_with_vcrpy(secret, [("POST", URL, json.dumps(params("key <redacted>")).encode(), JSON, "s")])
    with_key = Recordings({"k": secret}, "none", secrets=("sk-ant-secret",))
    found = with_key.replay_directly("k", URL, params("key sk-ant-secret"))
    assert found is not None and not found.opens_recording


def test_a_request_with_nothing_left_to_play_is_not_encoded_to_look_for_it(tmp_path, monkeypatch):
    """The fast path encoded every live request (the whole system prompt) to look it up, also a
    fresh row's, which has no recording, and a row whose replies all played."""
    from pytest_batchgen import cassettes

    path = tmp_path / "row.yaml"
    write_with_vcrpy(path, [("POST", URL, json.dumps(params("Alpha")).encode(), JSON, "one")])
    recordings = Recordings({"k": path, "fresh": tmp_path / "fresh.yaml"}, "new_episodes")
    encoded: list[object] = []
    real = json.dumps
    monkeypatch.setattr(cassettes.json, "dumps", lambda value: encoded.append(value) or real(value))

    assert recordings.replay_directly("fresh", URL, params("Fresh")) is None
    assert encoded == []
    assert recordings.replay_directly("k", URL, params("Alpha")) is not None
    assert len(encoded) == 1
    assert recordings.replay_directly("k", URL, params("Alpha")) is None  # played: nothing left
    assert len(encoded) == 1


def test_json_bodies_match_whatever_their_key_order_and_spacing_and_hosts_are_ignored(tmp_path):
    path = tmp_path / "row.yaml"
    recorded = b'{"max_tokens": 64, "messages": [{"content": "Alpha", "role": "user"}], "model": "claude-haiku-5-5"}'
    write_with_vcrpy(path, [("POST", "http://127.0.0.1:5000/v1/messages", recorded, JSON, "one")])
    recordings = Recordings({"k": path}, "none")
    assert recordings.replay_directly("k", URL, params("Alpha")) is not None


def test_record_mode_all_plays_nothing_and_a_secret_is_matched_redacted(tmp_path):
    path = tmp_path / "row.yaml"
    write_with_vcrpy(path, [("POST", URL, json.dumps(params("key <redacted>")).encode(), JSON, "one")])
    assert Recordings({"k": path}, "all").replay_directly("k", URL, params("key <redacted>")) is None
    # the recorder stored the body with the key redacted; the same request made with the key matches
    with_key = Recordings({"k": path}, "new_episodes", secrets=("sk-ant-secret",))
    assert with_key.replay_directly("k", URL, params("key sk-ant-secret")) is not None


BODIES = [
    json.dumps(params("Alpha")).encode(),
    json.dumps(params("Alpha"), indent=1, sort_keys=True).encode(),
    json.dumps(params("Beta")).encode(),
    b'{"not json',
    b"",
    None,
    b"plain text",
    b"a=1&b=2",
    b"b=2&a=1",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    b"5\r\nhel",
    b"<?xml version='1.0'?><methodCall><methodName>run</methodName><params></params></methodCall>",
]
HEADERS = [
    {"content-type": "application/json"},
    {"Content-Type": "application/json; charset=utf-8"},
    {"content-type": "text/plain"},
    {},
    {"content-type": "application/json", "transfer-encoding": "chunked"},
    {"Transfer-Encoding": "chunked"},
    {"content-type": "application/x-www-form-urlencoded"},
    {"content-type": "text/xml", "user-agent": "xmlrpc-client/1.0"},
]
URIS = [URL, "http://127.0.0.1:1234/v1/messages", "https://api.anthropic.com/v1/messages/batches", "https://x"]
REQUEST = st.tuples(
    st.sampled_from(["POST", "GET"]), st.sampled_from(URIS), st.sampled_from(BODIES), st.sampled_from(HEADERS)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded=st.lists(REQUEST, min_size=1, max_size=4), asked=st.lists(REQUEST, min_size=1, max_size=5))
def test_the_reply_played_is_the_one_vcrpy_would_play(tmp_path_factory, recorded, asked):
    """For any recorded interactions and any sequence of requests, the lean matcher plays the
    same recorded reply as vcrpy's Cassette (method, path and body matchers, each reply once)."""
    from vcr import matchers
    from vcr.cassette import Cassette
    from vcr.record_mode import RecordMode
    from vcr.request import Request

    path = tmp_path_factory.mktemp("c") / "row.yaml"
    write_with_vcrpy(path, [(m, u, b, h, f"reply {n}") for n, (m, u, b, h) in enumerate(recorded)])
    theirs = Cassette.load(
        path=str(path), record_mode=RecordMode.NEW_EPISODES, match_on=(matchers.method, matchers.path, matchers.body)
    )
    ours = Recordings({"k": path}, "new_episodes")
    for method, uri, body, headers in asked:
        request = Request(method, uri, body, dict(headers))
        expected = None
        if theirs.can_play_response_for(request):
            expected = json.loads(theirs.play_response(request)["body"]["string"])["content"][0]["text"]
        played = ours.play("k", method, uri, body, headers)
        got = None if played is None else json.loads(played.response["body"]["string"])["content"][0]["text"]
        assert got == expected, (method, uri, body, headers)


# -- writing stays vcrpy's ----------------------------------------------------------------------


def _record(recorder, key: str, title: str, text: str) -> None:
    recorder.record(key, "POST", URL, json.dumps(params(title)).encode(), JSON, reply(text))


def test_record_says_whether_the_file_now_opens_with_the_request_as_sent(tmp_path):
    """``Recorder.record`` is True only for the first request of a new file whose body held no
    secret: then the row's freshness needs no read of the file (``RowResult.recorded_as_sent``).
    Not for a second request, a reply added to an older file, nor a body a secret was redacted from."""
    from pytest_batchgen.recording import Recorder

    secret = "sk-ant-secret-0123"
    older = _recorded(tmp_path)
    recorder = Recorder(
        {"new": tmp_path / "new.yaml", "old": older, "secret": tmp_path / "s.yaml"}, "new_episodes", secrets=(secret,)
    )
    recorder.load_all()

    def record(key: str, title: str) -> bool:
        return recorder.record(key, "POST", URL, json.dumps(params(title)).encode(), JSON, reply(title))

    assert record("new", "Alpha") is True
    assert record("new", "Alpha again") is False
    assert record("old", "Beta") is False
    assert record("secret", f"Gamma {secret}") is False
    first = read_cassette(tmp_path / "new.yaml")
    assert first is not None and json.loads(first[0].request["body"]) == params("Alpha")


@pytest.mark.parametrize(
    "mode, kept",
    [("new_episodes", ["old", "new"]), ("all", ["new"])],
)
def test_a_new_reply_is_added_or_replaces_as_the_record_mode_says(tmp_path, mode, kept):
    from pytest_batchgen.recording import Recorder

    path = tmp_path / "row.yaml"
    write_with_vcrpy(path, [("POST", URL, json.dumps(params("Old")).encode(), JSON, "old")])
    recorder = Recorder({"k": path}, mode)
    recorder.load_all()
    _record(recorder, "k", "New", "new")
    on_disk = read_cassette(path)
    assert on_disk is not None
    assert [json.loads(i.response["body"]["string"])["content"][0]["text"] for i in on_disk] == kept


def test_a_row_started_afresh_replaces_its_file_and_a_reply_recorded_now_is_not_played_again(tmp_path):
    from pytest_batchgen.recording import Recorder

    path = tmp_path / "row.yaml"
    write_with_vcrpy(path, [("POST", URL, json.dumps(params("Alpha")).encode(), JSON, "old")])
    recorder = Recorder({"k": path}, "new_episodes")
    recorder.load_all()
    assert recorder.start_afresh("k")
    assert recorder.replay_directly("k", URL, params("Alpha")) is None  # forgotten: goes out live
    _record(recorder, "k", "Alpha", "new")
    assert recorder.replay_directly("k", URL, params("Alpha")) is None  # recorded in this run
    on_disk = read_cassette(path)
    assert on_disk is not None and [
        json.loads(i.response["body"]["string"])["content"][0]["text"] for i in on_disk
    ] == ["new"]
    fresh = Recordings({"k": path}, "none")  # the next run replays it
    assert fresh.replay_directly("k", URL, params("Alpha")) is not None


def _texts(path: Path) -> list[str]:
    on_disk = read_cassette(path)
    assert on_disk is not None
    return [json.loads(i.response["body"]["string"])["content"][0]["text"] for i in on_disk]


@pytest.mark.parametrize("mode", ["new_episodes", "all"])
def test_a_held_recording_stays_ahead_of_the_new_replies_unplayed_until_superseded(tmp_path, mode):
    # a re-recorded row whose output passes: its drafts go aside, so the recording its output
    # is the reply of stays in the file until a new draft replaces the output
    from pytest_batchgen.recording import Recorder

    path, plain = tmp_path / "row.yaml", tmp_path / "plain.yaml"
    for p in (path, plain):
        write_with_vcrpy(p, [("POST", URL, json.dumps(params("Alpha")).encode(), JSON, "old")])
    recorder = Recorder({"k": path, "plain": plain}, mode)
    recorder.load_all()
    if mode == "new_episodes":  # (record mode all replaces every file it records)
        assert recorder.start_afresh("k") and recorder.start_afresh("plain")
    recorder.hold_previous("k")
    # the old request is today's, byte for byte: it still never plays
    assert recorder.replay_directly("k", URL, params("Alpha")) is None
    _record(recorder, "k", "Alpha", "new")
    _record(recorder, "k", "Alpha", "repair")
    assert recorder.replay_directly("k", URL, params("Alpha")) is None
    assert _texts(path) == ["old", "new", "repair"]

    recorder.supersede("k")
    assert _texts(path) == ["new", "repair"]
    _record(recorder, "plain", "Alpha", "new")  # never held: replaced, as before
    _record(recorder, "plain", "Alpha", "repair")
    assert path.read_bytes() == plain.read_bytes()
    recorder.supersede("plain")  # nothing held: nothing written
    assert _texts(plain) == ["new", "repair"]


def test_holding_an_added_to_recording_does_nothing_and_superseding_before_a_reply_writes_nothing(tmp_path):
    from pytest_batchgen.recording import Recorder

    path = _recorded(tmp_path)
    before = path.read_bytes()
    recorder = Recorder({"k": path}, "new_episodes")
    recorder.load_all()
    recorder.hold_previous("k")  # new_episodes adds to the file: it keeps the old one anyway
    _record(recorder, "k", "Beta", "new")
    assert _texts(path) == ["one", "new"]

    fresh = tmp_path / "again.yaml"
    fresh.write_bytes(before)
    recorder = Recorder({"k": fresh}, "all")
    recorder.load_all()
    recorder.hold_previous("k")
    recorder.supersede("k")  # a draft replaced the output before any reply was recorded
    assert fresh.read_bytes() == before
    _record(recorder, "k", "Alpha", "new")
    assert _texts(fresh) == ["new"]


def test_record_mode_once_keeps_an_existing_recording_write_protected(tmp_path):
    from pytest_batchgen.recording import Recorder

    path = _recorded(tmp_path)
    recorder = Recorder({"k": path, "new": tmp_path / "new.yaml"}, "once")
    recorder.load_all()
    assert recorder.write_protected("k") and not recorder.start_afresh("k")
    assert not recorder.write_protected("new")
    assert "record mode 'once' adds nothing to an existing recording" in recorder.miss_message(
        "k", json.dumps(params("Beta")).encode()
    )


_HEADER_NAMES = st.sampled_from(
    ["content-type", "x-api-key", "authorization", "user-agent", "x-stainless-os", "anthropic-version", "X-Custom"]
)
_REPLY_HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "request-id", "set-cookie", "anthropic-ratelimit-requests-remaining"]),
    st.lists(st.text(max_size=8), min_size=1, max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(["all", "once", "new_episodes"]),
    interactions=st.lists(
        st.tuples(st.dictionaries(_HEADER_NAMES, st.text(max_size=12)), st.text(max_size=40), _REPLY_HEADERS),
        min_size=1,
        max_size=3,
    ),
)
def test_a_cassette_that_starts_empty_is_written_as_vcrpys_cassette_writes_it(tmp_path, mode, interactions):
    """The recorder writes a row's new cassette itself (``_NewCassette``): the file must be the
    one a vcrpy ``Cassette`` with the same options writes, byte for byte, secrets scrubbed."""
    from vcr.cassette import Cassette
    from vcr.request import Request

    from pytest_batchgen.recording import Recorder, _NewCassette, _recorded_header

    secret = "sk-ant-secret-0123"
    ours_path, theirs_path = tmp_path / f"ours-{mode}.yaml", tmp_path / f"theirs-{mode}.yaml"
    for path in (ours_path, theirs_path):
        path.unlink(missing_ok=True)
    ours = Recorder({"k": ours_path}, mode, secrets=(secret,))
    reference = Recorder({"k": theirs_path}, mode, secrets=(secret,))
    theirs = Cassette(**reference._options("k"))
    for number, (headers, text, reply_headers) in enumerate(interactions):
        body = json.dumps(params(f"{text} {secret} {number}")).encode()
        response = reply(text + secret)
        response["headers"] = {**response["headers"], **reply_headers}
        ours.record("k", "POST", URL, body, headers, copy.deepcopy(response))
        theirs.append(Request("POST", URL, body, dict(headers)), copy.deepcopy(response))
        theirs._save()
        assert isinstance(ours._cassettes["k"], _NewCassette)
        assert ours_path.read_bytes() == theirs_path.read_bytes()
    written = ours_path.read_text(encoding="utf-8")
    assert secret not in written
    recorded = yaml.safe_load(written)["interactions"]
    assert len(recorded) == len(interactions)
    assert all(_recorded_header(name) for i in recorded for name in i["request"]["headers"])


@pytest.mark.parametrize("loaded_before", [False, True], ids=["dropped-then-recorded", "recorded-then-dropped"])
def test_a_dropped_reply_leaves_the_file_and_only_it(tmp_path, loaded_before):
    """Recordings.drop (a judge's recorded answer without a verdict): the row's other replies
    stay, whether vcrpy's cassette of the file was loaded before the drop or after it."""
    from pytest_batchgen.recording import Recorder

    def texts() -> list[str]:
        on_disk = read_cassette(path)
        assert on_disk is not None
        return [json.loads(i.response["body"]["string"])["content"][0]["text"] for i in on_disk]

    path = tmp_path / "row.judge.yaml"
    write_with_vcrpy(
        path,
        [("POST", URL, json.dumps(params(t)).encode(), JSON, t.lower()) for t in ("Alpha", "Beta", "Gamma")],
    )
    recorder = Recorder({"k": path}, "new_episodes")
    recorder.load_all()
    if loaded_before:
        _record(recorder, "k", "Delta", "delta")
    played = recorder.replay_directly("k", URL, params("Beta"))
    assert played is not None and played.position == 1
    assert recorder.drop("k", played.position)
    assert texts() == (["alpha", "beta", "gamma", "delta"] if loaded_before else ["alpha", "beta", "gamma"])
    _record(recorder, "k", "Beta", "beta again")
    assert texts() == ["alpha", "gamma", *(["delta"] if loaded_before else []), "beta again"]
    # a run that may not record keeps the reply: it is what the request gets
    assert not Recordings({"k": path}, "none").drop("k", 0)
