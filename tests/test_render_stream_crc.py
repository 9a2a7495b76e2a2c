"""Each stream's CRC-32 in render_report.json (wavegen.render.folder.write_report, folder_report.with_stream_crc32):
of its 16-bit PCM as written (a resumed render's too: carried on from the snapshot), placed right after the
parameters, so a report cut after them keeps it; a damaged report is written again only over streams whose audio
matches it (or, where the report's readable part records none, the CRC-32s of the snapshots a kill left in .state/):
a file of the right length, rate and format that is another's is refused naming it (more in
tests/test_render_report_damaged.py)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import soundfile as sf

from render_helpers import SR, direct_pcm, make_model, render_cli, settings, stopped_render


def pcm_crc32(path) -> int:
    """The CRC-32 of a stream file's samples as 16-bit little-endian PCM, decoded by soundfile."""
    return zlib.crc32(sf.read(str(path), dtype="int16")[0].astype("<i2").tobytes())


def noise_like(path) -> None:
    """Another program's file at ``path``: noise of its length, rate, channels and format."""
    info = sf.info(str(path))
    noise = (np.random.default_rng(5).standard_normal(info.frames) * 0.1).astype("float32")
    sf.write(str(path), noise, info.samplerate, subtype="PCM_16", format=info.format)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_the_report_records_each_streams_crc32_right_after_its_params(tmp_path, fmt):
    from wavegen.render.folder_report import recorded_in

    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    assert render_cli(model, out, "--streams", 3, "--format", fmt) == 0
    report_path = out / "render_report.json"
    text = report_path.read_text()
    report = json.loads(text)
    assert list(report)[:3] == ["status", "params", "stream_crc32"]
    crcs = [pcm_crc32(out / f"stream_{i:03d}.{fmt}") for i in range(3)]
    assert report["stream_crc32"] == crcs and len(set(crcs)) == 3
    report_path.write_text(text[:text.index('"paths"') + 3])  # a copy stopped halfway
    assert recorded_in(report_path) == (report["params"], crcs)
    report_path.write_text(text[:text.index('"stream_crc32"') + 30])  # cut inside the list: not known
    assert recorded_in(report_path) == (report["params"], None)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_resumed_render_records_the_crc32_of_all_its_audio(tmp_path, fmt):
    """The CRC-32 goes on from the snapshot a render resumes from (checked against the file there), not from 0."""
    from wavegen.render import render

    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    s = settings(0.5, streams=2, block_seconds=0.125, format=fmt)
    stopped_render(model, out, s, 2)
    report = render(model, out, s, progress=False)
    assert report["sessions"] == 2
    whole = direct_pcm(model, 2, SR // 2)
    assert report["stream_crc32"] == [zlib.crc32(whole[i].astype("<i2").tobytes()) for i in range(2)]


def test_a_report_rebuilt_beside_a_state_a_kill_left_checks_the_streams_against_its_snapshots(tmp_path, caplog):
    """The report unreadable from its first byte (no CRC-32s there), and the finished snapshots a kill while .state/
    was removed left: their CRC-32s tell another's file at a stream's name; the render's own streams are written
    again with them."""
    from wavegen.render import folder as render_folder
    from wavegen.render import render
    from wavegen.render.settings import RenderStateError

    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    s = settings(0.25, streams=2)
    with pytest.MonkeyPatch.context() as patch:  # the kill: write_report's removal of .state/ never happened
        patch.setattr(render_folder.shutil, "rmtree", lambda *a, **k: None)
        crcs = render(model, out, s, progress=False)["stream_crc32"]
    report_path, foreign = out / "render_report.json", out / "stream_000.wav"
    report_path.write_bytes(b"\x00\x17garbage")
    own = foreign.read_bytes()
    noise_like(foreign)
    with pytest.raises(RenderStateError) as refused:
        render(model, out, s, progress=False)
    assert f"{foreign} is not the stream this render wrote (its audio's CRC-32 differs from the one the snapshots " \
        "its end left in .state/ records" in str(refused.value)
    assert report_path.read_bytes() == b"\x00\x17garbage" and (out / ".state" / "rank0.npz").is_file()
    foreign.write_bytes(own)  # the render's own file put back
    caplog.set_level("INFO", logger="wavegen.render")
    rebuilt = render(model, out, s, progress=False)
    assert rebuilt["stream_crc32"] == crcs and json.loads(report_path.read_text())["stream_crc32"] == crcs
    assert any("(their audio checked against the CRC-32s the snapshots its end left in .state/ records)" in m
               for m in caplog.messages), caplog.messages
