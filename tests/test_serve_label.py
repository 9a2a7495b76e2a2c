"""wavegen serve: switching a conditioned model's label while it plays (POST /label, --control-token).

Real servers (the CLI in subprocesses, test_serve's helpers), a real tiny SampleRNN conditioned on two
labels, real HTTP. The archive (exact PCM) shows what was played: up to the switch, the samples of a
stream never switched; from it on, those of the same engine given the new blend at that sample.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import save_tiny_model
from test_serve import ENV, SR, START_TIMEOUT, Server, make_model, refused_here, serve_here

TOKEN = "operator-token-1"
LABELS = ["rain", "bells"]


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("serve_label") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


def post(server: Server, body, token: str | None = TOKEN, content_type: str = "text/plain") -> tuple[int, dict]:
    data = (json.dumps(body) if content_type == "application/json" else body).encode()
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(server.url + "/label", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post_raw_token(server: Server, authorization: bytes) -> int:
    """The status of POST /label "bells" with an Authorization header of these bytes as sent."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest("POST", "/label")
        for name, value in (("Authorization", authorization), ("Content-Type", b"text/plain"), ("Content-Length", b"5")):
            conn.putheader(name, value)
        conn.endheaders(b"bells")
        return conn.getresponse().status
    finally:
        conn.close()


def archived(folder: Path) -> np.ndarray:
    parts = sorted(folder.glob("broadcast_*.wav"))
    return np.concatenate([sf.read(str(p), dtype="int16")[0] for p in parts])


def played(model: Path, n: int, switches: list[tuple[int, str]], seed: int = 0) -> np.ndarray:
    """What the station plays without the guard: the engine run directly, starting with the first
    switch's label at 0 and given each next one's blend at its sample (its state otherwise kept)."""
    from wavegen.audio import dequantize, float_to_int16
    from wavegen.checkpoint import load_model
    from wavegen.generate import make_engine, uniforms
    from wavegen.render import parse_label
    from wavegen.serve.control import apply_label

    model, _ = load_model(model)
    engine = make_engine(model, 1, "auto")
    engine.reset(label_weights=parse_label(switches[0][1], LABELS))
    codes, ends = [], [s for s, _ in switches[1:]] + [n]
    for (start, label), end in zip(switches, ends):
        if start:
            apply_label(engine, parse_label(label, LABELS))
        codes.append(engine.generate(uniforms(seed, [0], start, end - start), 1.0)[0])
    return float_to_int16(dequantize(np.concatenate(codes), engine.q_levels, engine.spec["quantization"]))


@pytest.mark.slow
def test_a_label_switch_starts_at_the_sample_it_names_and_a_restart_keeps_it(conditioned, tmp_path):
    """A switch (POST /label to a server in a subprocess) starts at the sample it answers; the same command
    again (played in this process: test_serve.serve_here) goes on with the label in force, not --label."""
    archive = tmp_path / "archive"
    args = ("--label", "rain", "--no-guard", "--guard-seconds", "0.5", "--buffer-seconds", "1", "--snapshot-seconds",
            "100", "--archive", str(archive), "--control-token", TOKEN)
    server = Server(conditioned, *args)
    try:
        status = server.wait_for(lambda s: s["archive"]["seconds"] >= 1.0)
        assert status["label"] == "rain" and status["label_control"] and status["labels"] == LABELS
        # refused, and nothing switched: no token, a wrong one, a label this model does not have, a bad blend
        assert post(server, "bells", token=None)[0] == 401
        assert post(server, "bells", token="not-the-token")[0] == 403
        assert post_raw_token(server, b"Bearer \xff\xfeabcdefgh") == 403  # not UTF-8: a wrong token (was a 500)
        code, answer = post(server, "drums")
        assert code == 400 and "'drums' is not one of this model's labels: rain, bells" in answer["error"], answer
        code, answer = post(server, "rain:0.5,bells:x")
        assert code == 400 and "'x' is not a number; this model's labels: rain, bells" in answer["error"], answer
        assert server.status()["label_switches"] == 0

        code, answer = post(server, {"label": "bells"}, content_type="application/json")
        assert code == 200, answer
        at = answer["starts_at_sample"]
        assert answer["label"] == "bells" and answer["previous"] == "rain" and answer["changed"]
        assert at % int(0.5 * SR) == 0 and answer["starts_at_seconds"] == at / SR  # at a window's start
        assert 0 <= answer["on_air_in_seconds"] <= 1 + 0.5 + 0.5  # the buffer, a window, some slack
        status = server.wait_for(lambda s: s["archive"]["seconds"] >= at / SR + 1.0)
        assert status["label"] == "bells" and status["label_since_seconds"] == at / SR
        assert status["archive"]["snapshot_seconds"] >= at / SR  # a snapshot at the switch records it
        code, answer = post(server, "bells:1\n")  # the same blend (and a line end, as echo | curl sends)
        assert code == 200 and answer["label"] == "bells" and not answer["changed"], answer
        assert server.status()["label_switches"] == 1
    finally:
        assert server.stop() == 130, "".join(server.stderr)
    first = archived(archive)
    unswitched = played(conditioned, len(first), [(0, "rain")])
    assert np.array_equal(first[:at], unswitched[:at]), "before the switch: as if never switched"
    assert not np.array_equal(first[at:], unswitched[at:]), "after it: another label"
    assert np.array_equal(first, played(conditioned, len(first), [(0, "rain"), (at, "bells")]))

    # the same command: it goes on with the label in force, not --label
    status, _ = serve_here(conditioned, lambda s: s["archive"]["seconds"] >= len(first) / SR + 1.0, label="rain",
                           guard=False, guard_seconds=0.5, buffer_seconds=1.0, snapshot_seconds=100.0,
                           archive=str(archive), control_token=TOKEN)
    assert status["label"] == "bells" and status["label_since_seconds"] == at / SR
    whole = archived(archive)
    assert len(whole) > len(first)
    assert np.array_equal(whole, played(conditioned, len(whole), [(0, "rain"), (at, "bells")]))


@pytest.mark.slow
def test_label_control_is_off_without_a_token_and_refused_for_an_unconditioned_model(conditioned, tmp_path):
    server = Server(conditioned, "--label", "rain", "--no-guard")
    try:
        code, answer = post(server, "bells")
        assert code == 403 and "--control-token" in answer["error"], answer
        status = server.status()
        assert status["label"] == "rain" and not status["label_control"]
    finally:
        server.stop()
    plain = make_model(tmp_path / "plain")
    server = Server(plain, "--no-guard")
    try:
        code, answer = post(server, "bells")
        assert code == 409 and "not conditioned on labels" in answer["error"], answer
    finally:
        server.stop()
    # --control-token for it: refused at start, before it listens (played in this process, test_serve.refused_here),
    # a user's error the CLI says in one line
    error = refused_here(plain, control_token=TOKEN)
    assert error.endswith(
        "--control-token: " f"{plain} is not conditioned on labels, so there is no label to switch; start it without "
        "--control-token"), error


@pytest.mark.parametrize("args, message", [
    (["--control-token", "short"], "--control-token: a token needs at least 8 characters"),
    (["--control-token", "has a space"], "--control-token: a token needs at least 8 characters"),
    (["--control-token-file", "{tmp}/no-such-file"], "--control-token-file {tmp}/no-such-file: cannot read it: "
                                                      "No such file or directory"),
    (["--control-token-file", "{tmp}/empty"], "--control-token-file {tmp}/empty: a token needs at least 8"),
])
def test_a_token_that_cannot_work_is_refused_in_one_line(tmp_path, capsys, args, message):
    from wavegen.cli import main

    (tmp_path / "empty").write_text("\n")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["serve", str(tmp_path / "no-model"), "--port", "0", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(tmp=tmp_path) in err[0], err


def test_a_token_file_is_read_and_both_ways_at_once_are_refused(tmp_path, capsys):
    from wavegen.serve.control import read_token_file

    (tmp_path / "token").write_text(TOKEN + "\n")
    assert read_token_file(str(tmp_path / "token")) == TOKEN
    result = subprocess.run([sys.executable, "-m", "wavegen", "serve", "x", "--control-token", TOKEN,
                             "--control-token-file", str(tmp_path / "token")], capture_output=True, text=True, env=ENV)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


@pytest.mark.parametrize("content, expected", [
    (b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n", TOKEN),  # an editor's byte order mark and line end
    (b"  " + TOKEN.encode() + b"  \nnot the token\n", TOKEN),
    (b"\n" + TOKEN.encode() + b"\n", "its first line is empty; the token is read from the first line"),
    (b"\0" * 10_000_000, "its first line is longer than 4096 bytes: not a token file"),  # read in part, not whole
    (b"\xe9t\xe9-token\n" + b"x" * 100,
     "its first line is not UTF-8 text (invalid continuation byte at byte 0): not a token file"),
], ids=["byte-order-mark-and-crlf", "spaces-and-a-second-line", "empty-first-line", "10-MB-first-line", "not-utf8"])
def test_a_token_file_is_read_from_its_first_line_only(tmp_path, content, expected):
    from wavegen.serve import ServeError
    from wavegen.serve.control import read_token_file

    path = tmp_path / "token"
    path.write_bytes(content)
    if expected == TOKEN:
        assert read_token_file(str(path)) == TOKEN
        return
    with pytest.raises(ServeError) as err:
        read_token_file(str(path))
    assert str(err.value) == f"--control-token-file {path}: {expected}"


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b""])
def test_a_token_line_of_the_most_bytes_is_read_and_one_more_is_refused(tmp_path, line_end):
    """The bound is on the first line, whatever follows it: TOKEN_FILE_MAX_BYTES of token with its line
    end is read (the line end is not the token's), one byte more is refused."""
    from wavegen.serve import ServeError
    from wavegen.serve.control import TOKEN_FILE_MAX_BYTES, read_token_file

    path = tmp_path / "token"
    for size in (TOKEN_FILE_MAX_BYTES - 1, TOKEN_FILE_MAX_BYTES):
        path.write_bytes(b"t" * size + line_end + b"next line\n" * bool(line_end))
        assert read_token_file(str(path)) == "t" * size
    path.write_bytes(b"t" * (TOKEN_FILE_MAX_BYTES + 1) + line_end)
    with pytest.raises(ServeError, match=f"longer than {TOKEN_FILE_MAX_BYTES} bytes"):
        read_token_file(str(path))


def test_a_snapshot_whose_label_is_not_its_engine_blend_is_refused():
    """misfit: what the archive's engine check (archive_resume.engine_fit) falls back from; adopt: the station's
    taking of the snapshot gone on from."""
    from wavegen.serve.control import LabelState

    state = LabelState(LABELS, "rain", np.array([1, 0], np.float32))
    meta, bells = {"label": "bells", "label_since": 16000, "label_switches": 1}, np.array([[0, 1]], np.float32)
    assert state.misfit(meta, {"label_weights": bells}) is None
    state.adopt(meta, {"label_weights": bells})
    assert (state.text, state.since, state.switches) == ("bells", 16000, 1)
    assert state.weights.tolist() == [0, 1]
    assert state.misfit({"label": "rain"}, {"label_weights": bells}) == \
        "its label 'rain' is not the blend its engine state holds"
    assert state.misfit({"label": "drums"}, {"label_weights": bells}).startswith("its label: label 'drums' is not one")


@pytest.mark.parametrize("where", ["file-parent", "/proc/self", "/proc/wavegen-archive"])
def test_an_archive_path_root_cannot_write_is_refused_before_listening(conditioned, tmp_path, where):
    """As root, permissions stop nothing: a folder under a regular file, one of /proc (there and takes
    no files, or cannot be made) is refused at start, in one line naming it, and the server never listens."""
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    if where == "file-parent":
        (tmp_path / "file").write_text("a file where the archive's parent goes")
        where = str(tmp_path / "file" / "archive")
    result = subprocess.run([sys.executable, "-m", "wavegen", "serve", str(conditioned), "--label", "rain", "--port",
                             "0", "--allow-slow", "--archive", where], capture_output=True, text=True, env=ENV,
                            timeout=START_TIMEOUT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "listening:" not in result.stdout and "playing" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("wavegen serve: error: ") and where in lines[0], lines


def test_a_switch_asked_for_after_the_station_stopped_is_answered(conditioned):
    """A request the station never takes (it stopped) fails its waiter instead of leaving it waiting; one asked
    for after it stopped is refused at once."""
    from wavegen.serve import ServeError
    from wavegen.serve.control import LabelState

    state = LabelState(LABELS, "rain", np.array([1, 0], np.float32))
    future = state.request("bells")
    state.fail_pending("the stream stopped before the label switch")
    with pytest.raises(ServeError, match="stopped before the label switch"):
        future.result(0)
    assert state.take() is None
    with pytest.raises(ServeError, match="stopped before the label switch"):  # asked for while the server closes:
        state.request("bells")  # refused at once (it waited 10 s, then answered 202 "pending")
    assert state.take() is None


def test_a_label_is_taken_as_written_spaces_included():
    """A label is its folder's name as it is (" lead" is not "lead"); a blend names weights; the text in
    force is what was asked for, and the same blend written another way changes nothing."""
    from wavegen.serve.control import LabelState

    state = LabelState(["lead", " lead"], "lead", np.array([1, 0], np.float32))
    assert np.array_equal(state.parse(" lead"), [0, 1]) and np.array_equal(state.parse("lead:1, lead:3"), [0.25, 0.75])
    # the labels as said since they are said plainly: the one with a space before it quoted (was "lead,  lead")
    with pytest.raises(ValueError, match="no label given; this model's labels: lead, ' lead'"):
        state.parse("  ")
    with pytest.raises(ValueError, match="at most 1000"):
        state.parse("lead," * 300)


class _Request:
    """What _label_text reads of an aiohttp request: its body and Content-Type."""

    def __init__(self, body: bytes, content_type: str):
        self.body, self.content_type = body, content_type

    async def read(self) -> bytes:
        return self.body


@pytest.mark.parametrize("body, content_type, expected", [
    (b'{"label": "bells"}', "application/json", "bells"),
    # curl -d '{"label": ...}' sends it as a form (was: the JSON's text taken as a label, '{"label"' refused)
    (b'{"label": "rain:0.5,bells:0.5"}', "application/x-www-form-urlencoded", "rain:0.5,bells:0.5"),
    (b' {"label": "bells"}\n', "text/plain", "bells"),
    (b"bells\n", "application/x-www-form-urlencoded", "bells"),
    (b"{live}", "text/plain", "{live}"),  # a label with braces that is no JSON object stays a label
    (b'{"other": 1}', "text/plain", '{"other": 1}'),  # a JSON object naming no label: as sent, refused as a label
])
def test_a_label_is_read_from_plain_text_or_a_json_body_whatever_its_content_type(body, content_type, expected):
    import asyncio

    from wavegen.serve.control import _label_text

    assert asyncio.run(_label_text(_Request(body, content_type))) == expected


@pytest.mark.parametrize("body, content_type", [(b'{"label": 3}', "text/plain"), (b"bells", "application/json")])
def test_a_json_body_without_a_label_text_is_refused(body, content_type):
    import asyncio

    from wavegen.serve.control import _label_text

    with pytest.raises(ValueError, match='a JSON body needs {"label": "name or blend"}|not JSON'):
        asyncio.run(_label_text(_Request(body, content_type)))


def test_a_switch_answered_for_a_window_plays_in_it_and_the_next_one_waits_for_the_window_after(conditioned):
    """Two switches asked for while the station waits for room (ahead of the live edge): the first is taken and
    answered "from sample P"; the second, asked for before the window at P is rendered, starts at the window after,
    so the first plays the window it was answered for (both were taken at P, the first playing nothing)."""
    from wavegen.render import parse_label
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    station = Station(str(conditioned), ServeSettings(label="rain", guard=False, allow_slow=True, backend="torch"))
    assert station.open()  # its timing (allowed slow), its encoder
    station._published = True  # as after the first window: it waits for room from here on
    behind = lambda: station.position / SR - 10.0  # noqa: E731 - ahead of the live edge: waiting for room
    room = lambda: station.position / SR  # noqa: E731 - at the live edge: room for a window
    labels = station.label_state
    first = labels.request("bells")
    station._wake.set()
    assert station._wait_for_room(room)  # takes it
    assert first.result(0)["starts_at_sample"] == 0 and labels.text == "bells"
    second = labels.request("rain:0.5,bells:0.5")
    station._stop.set()  # the wait below ends (False) where it takes nothing it may take
    assert not station._wait_for_room(behind)
    assert not second.done() and labels.text == "bells"  # bells plays the window it was answered for
    station._stop.clear()
    state = station._engine_state()
    assert np.array_equal(state["label_weights"].reshape(-1), parse_label("bells", LABELS))
    station._next_window(state)
    assert station._wait_for_room(room)
    assert second.result(0)["starts_at_sample"] == station.window and second.result(0)["previous"] == "bells"
    assert labels.text == "rain:0.5,bells:0.5" and labels.switches == 2 and labels.since == station.window


def test_a_switch_to_the_label_in_force_is_answered_as_none_and_holds_no_window(conditioned):
    """A request for the label in force ("rain:1" while rain plays) was taken as the window's one switch: a real
    switch asked for right after it waited for the window after. Now it is answered "changed": false and holds
    nothing: the real switch starts at the same sample."""
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    station = Station(str(conditioned), ServeSettings(label="rain", guard=False, allow_slow=True, backend="torch"))
    assert station.open()
    station._published = True  # as after the first window: it waits for room from here on
    behind = lambda: station.position / SR - 10.0  # noqa: E731 - ahead of the live edge: waiting for room
    room = lambda: station.position / SR  # noqa: E731 - at the live edge: room for a window
    labels = station.label_state
    same = labels.request("rain:1")
    station._wake.set()
    assert station._wait_for_room(room)
    answer = same.result(0)
    assert answer["label"] == "rain" and answer["previous"] == "rain" and not answer["changed"], answer
    assert labels.switches == 0
    switch = labels.request("bells")
    station._stop.set()  # the wait below ends (False) once it has taken what it may take
    assert not station._wait_for_room(behind)
    assert switch.done(), "the real switch waited for the window after the one the no-op was taken in"
    answer = switch.result(0)
    assert answer["changed"] and answer["previous"] == "rain" and answer["starts_at_sample"] == 0, answer
    assert labels.text == "bells" and labels.switches == 1


def test_an_unknown_label_names_the_models_labels_plainly(conditioned):
    """The unknown label's refusal listed the labels as a Python list ("['rain', 'bells']"), at start (--label) and
    for a switch asked for (POST /label); now as the other refusals name them: "rain, bells", a label with a comma or
    a space at either end quoted so that where it ends shows."""
    from wavegen.serve.control import LabelState

    with pytest.raises(ValueError) as err:
        LabelState(LABELS, "rain", None).parse("drums")
    assert str(err.value) == "label 'drums' is not one of this model's labels: rain, bells"
    awkward = ["Earth, Wind & Fire", " lead", "bass"]
    with pytest.raises(ValueError) as err:
        LabelState(awkward, None, None).parse("drums")
    assert str(err.value) == "label 'drums' is not one of this model's labels: 'Earth, Wind & Fire', ' lead', bass"
    error = refused_here(conditioned, label="drums", guard=False)
    assert error == "--label 'drums' is not one of this model's labels: rain, bells", error


def test_the_label_in_force_is_named_as_the_models_labels_name_it():
    """/status's label_in_force (where the page's control starts): the one label of the blend in force, however its
    text says it; none for a blend of several."""
    from wavegen.render import parse_label
    from wavegen.serve.control import LabelState

    for text, single in [("bells", "bells"), ("bells:1", "bells"), ("rain:2,rain:1", "rain"), ("rain,bells", None)]:
        assert LabelState(LABELS, text, parse_label(text, LABELS)).single == single, text
    assert LabelState([], None, None).single is None
