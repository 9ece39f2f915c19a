"""The `_audio` configs of the `dfew` builder and tfds_dfew/audio.py, on a small generated release.

The original videos (Clip/original/<id>.mp4) are written here with PyAV: one clip without a video,
one video without sound, one truncated file, a stereo 44.1 kHz clip, a 0.3 s clip, a mono 16 kHz
PCM clip (file named without zero padding) and a mono 16 kHz AAC clip (.mov).
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_dfew import audio, build, dfew
from tfds_dfew.release import ReleaseError

SR = audio.SAMPLE_RATE
FREQ = 440.0


def _sine(seconds, rate, freq=FREQ, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_video(path, seconds=1.0, *, rate=44100, layout="stereo", codec="aac", with_audio=True, fps=8, signal=None):
    """An mp4/mov with a 32x32 mpeg4 video track and (with_audio) a sine (or `signal`) in every channel."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        if with_audio:
            sound = container.add_stream(codec, rate=rate)
            sound.layout = layout
        for i in range(max(1, int(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i % 255, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if not with_audio:
            return
        x = _sine(seconds, rate) if signal is None else signal
        channels = 2 if layout == "stereo" else 1
        pts = 0
        for start in range(0, len(x), 1024):
            block = x[start:start + 1024]
            if codec == "pcm_s16le":  # packed int16
                data = np.repeat(np.round(block * 32767).astype(np.int16), channels)[None]
                frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.stack([block] * channels), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, pts
            pts += len(block)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def _truncate_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.fixture(scope="module")
def audio_release(tmp_path_factory):
    """7 clips at 64 px (no missing frames, no unlabelled clips) + their original videos; returns (root, roles)."""
    from tfds_dfew import synthetic

    root = tmp_path_factory.mktemp("audio_release") / "DFEW"
    summary = synthetic.generate(root, 7, seed=5, frame_size=64, max_frames=17, multi_frac=0.0, missing_frac=0.0,
                                 short_frac=0.0, openpose=False, workers=1)
    ids = sorted(summary["ids"])
    roles = dict(zip(["missing", "silent", "truncated", "stereo44k", "short", "pcm16k", "aac16k"], ids))
    original = root / "Clip" / "original"
    shutil.rmtree(original, ignore_errors=True)  # whatever the generator writes there: these tests write their own
    original.mkdir(parents=True)
    write_video(original / f"{roles['silent']}.mp4", with_audio=False)
    write_video(original / f"{roles['truncated']}.mp4", 1.0)
    _truncate_half(original / f"{roles['truncated']}.mp4")
    write_video(original / f"{roles['stereo44k']}.mp4", 1.0, rate=44100, layout="stereo")
    write_video(original / f"{roles['short']}.mp4", 0.3, rate=48000, layout="stereo")
    pcm_name = str(int(roles["pcm16k"]))  # '6': the id without zero padding
    write_video(original / f"{pcm_name}.mp4", 1.0, rate=SR, layout="mono", codec="pcm_s16le")
    write_video(original / f"{roles['aac16k']}.mov", 1.25, rate=SR, layout="mono")
    return root, roles


@pytest.fixture(scope="module")
def audio_tfds(audio_release, tmp_path_factory):
    root, _ = audio_release
    data_dir = str(tmp_path_factory.mktemp("audio_tfds"))
    builder = build.build(str(root), data_dir, config="frames64_audio", num_workers=2)
    return data_dir, builder


def _records_by_id(builder):
    out = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split)
        for i in range(len(source)):
            record = source[i]
            out[record["clip_id"].decode()] = record
    return out


def test_clips_without_sound_are_reported_and_masked(audio_release, audio_tfds):
    _, roles = audio_release
    _, builder = audio_tfds
    assert builder.is_prepared()
    records = _records_by_id(builder)
    assert sorted(records) == sorted(roles.values())  # no clip dropped
    reasons = builder.info.metadata["clips_without_audio"]
    assert list(reasons) == sorted(reasons)  # json-serialisable {id: reason}, sorted by id
    assert set(reasons) == {roles["missing"], roles["silent"], roles["truncated"]}
    assert reasons[roles["missing"]] == "no original video"
    assert reasons[roles["silent"]] == "no audio stream"
    assert reasons[roles["truncated"]].startswith("undecodable audio: ")
    for clip_id in reasons:  # the mask: an empty (0,) int16 array round-trips through the zlib feature
        record = records[clip_id]
        assert record["audio_length"] == 0 and record["audio"].shape == (0,) and record["audio"].dtype == np.int16
        assert len(record["frames"]) == 16  # frames stored as usual
    for role in ("stereo44k", "short", "pcm16k", "aac16k"):
        record = records[roles[role]]
        assert record["audio"].dtype == np.int16 and record["audio_length"] == record["audio"].shape[0] > 0
    assert builder.info.metadata["audio_sample_rate"] == SR
    reloaded = tfds.builder("dfew/frames64_audio", data_dir=audio_tfds[0]).info.metadata
    assert reloaded["clips_without_audio"] == reasons and list(reloaded["clips_without_audio"]) == sorted(reasons)
    text = build.summary(builder)
    assert f"no sound (audio_length 0): 3 (first: {roles['missing']} (no original video)" in text


def test_stereo_44k_is_downmixed_and_resampled(audio_release, audio_tfds):
    _, roles = audio_release
    record = _records_by_id(audio_tfds[1])[roles["stereo44k"]]
    x = record["audio"].astype(np.float64)
    assert abs(len(x) - SR) <= SR * 0.005  # 1.0 s within 5 ms
    reference = _sine(len(x) / SR, SR)[: len(x)]
    assert np.corrcoef(x, reference)[0, 1] > 0.99
    assert abs(np.abs(x).max() / 32768 - 0.5) < 0.05  # mean of two equal channels keeps the level


def test_short_and_mono_clips(audio_release, audio_tfds):
    _, roles = audio_release
    records = _records_by_id(audio_tfds[1])
    assert abs(records[roles["short"]]["audio_length"] - 4800) <= SR * 0.005  # 0.3 s at 48 kHz
    pcm = records[roles["pcm16k"]]["audio"]
    assert len(pcm) == SR  # lossless 16 kHz mono: every sample kept
    expected = np.round(_sine(1.0, SR) * 32767).astype(np.int16)
    assert np.abs(pcm.astype(np.int32) - expected).max() <= 1
    aac = records[roles["aac16k"]]["audio"]
    assert abs(len(aac) - 1.25 * SR) <= SR * 0.005
    assert np.corrcoef(aac.astype(np.float64), _sine(len(aac) / SR, SR)[: len(aac)])[0, 1] > 0.99


def test_strict_stops_on_a_clip_without_sound_and_leaves_nothing_prepared(audio_release, tmp_path):
    root, roles = audio_release
    # --audio_dir: a copy of the originals where only one clip lacks its video
    good = tmp_path / "originals"
    shutil.copytree(root / "Clip" / "original", good)
    for role in ("silent", "truncated"):
        os.remove(good / f"{roles[role]}.mp4")
        write_video(good / f"{roles[role]}.mp4", 0.5, rate=22050, layout="mono")
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(ReleaseError) as info:
        build.build(str(root), data_dir, config="frames64_audio", strict=True, audio_dir=str(good), num_workers=2)
    message = str(info.value)
    assert roles["missing"] in message and "no original video" in message and "without --strict" in message
    assert not tfds.builder("dfew/frames64_audio", data_dir=data_dir).is_prepared()


def test_missing_audio_folder(audio_release, tmp_path, capsys):
    root, roles = audio_release
    absent = str(tmp_path / "no_such_folder")
    # strict: stops before any clip is read, naming the folder (also through the CLI flag)
    code = build.main(["--manual_dir", str(root), "--data_dir", str(tmp_path / "strict"), "--config",
                       "frames64_audio", "--strict", "--audio_dir", absent, "--num_workers", "2"])
    assert code == 2 and absent in capsys.readouterr().err
    # not strict: every clip stored without sound, every one reported
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64_audio", audio_dir=absent,
                          num_workers=2)
    assert builder.info.metadata["clips_without_audio"] == {c: "no original video" for c in sorted(roles.values())}
    assert all(r["audio_length"] == 0 for r in _records_by_id(builder).values())


def test_audio_configs_come_after_the_unchanged_ones(tmp_path):
    names = [c.name for c in dfew.Dfew.BUILDER_CONFIGS]
    assert names == ["frames112", "frames64", "frames224", "frames112_pose", "frames64_pose", "frames224_pose",
                     "frames112_audio", "frames64_audio", "frames224_audio",
                     "frames112_pose_audio", "frames64_pose_audio", "frames224_pose_audio"]
    assert set(names) == set(build.CONFIG_NAMES)
    assert str(dfew.Dfew.VERSION) == "1.2.0"
    for name in names:
        features = dfew.Dfew(config=name, data_dir=str(tmp_path)).info.features
        assert ("audio" in features) == ("audio_length" in features) == name.endswith("_audio")
        assert ("pose" in features) == ("_pose" in name)
    plain = dfew.Dfew(config="frames64", data_dir=str(tmp_path))
    assert set(plain.info.features) == {"frames", "label", "clip_id", "num_frames", "fold", "votes"}
    assert "Audio configs" not in plain.info.description
    spec = dfew.Dfew(config="frames64_pose_audio", data_dir=str(tmp_path)).info.features["audio"]
    assert spec.shape == (None,) and spec.np_dtype == np.int16


# -- tfds_dfew/audio.py ------------------------------------------------------------------------------


def test_decode_bad_files(tmp_path):
    junk = tmp_path / "00001.mp4"
    junk.write_bytes(b"not a video at all " * 50)
    with pytest.raises(audio.AudioError, match=str(junk)):
        audio.decode(junk)
    samples, reason = audio.clip_audio(str(junk))
    assert samples.shape == (0,) and samples.dtype == np.int16 and reason.startswith("undecodable audio: ")
    missing = tmp_path / "absent.mp4"
    with pytest.raises(audio.AudioError, match="absent.mp4"):
        audio.decode(missing)
    assert audio.clip_audio(str(missing))[1] == "no original video"
    assert audio.clip_audio(None)[1] == "no original video"
    silent = tmp_path / "silent.mp4"
    write_video(silent, 0.5, with_audio=False)
    with pytest.raises(audio.NoAudioStream, match="no audio stream"):
        audio.decode(silent)
    assert issubclass(audio.NoAudioStream, audio.AudioError)


def test_decode_rejects_a_truncated_pcm_file_instead_of_keeping_half(tmp_path):
    """moov at the front (faststart) and PCM: the demuxer just stops early; still undecodable as a whole."""
    import av

    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("pcm_s16le", rate=SR)
        stream.layout = "mono"
        x = np.round(_sine(2.0, SR) * 32767).astype(np.int16)
        for start in range(0, len(x), 1600):
            frame = av.AudioFrame.from_ndarray(x[None, start:start + 1600], format="s16", layout="mono")
            frame.sample_rate, frame.pts = SR, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert len(audio.decode(path)) == 2 * SR
    _truncate_half(path)
    samples, reason = audio.clip_audio(str(path))
    assert samples.shape == (0,) and reason.startswith("undecodable audio: ") and "truncated" in reason


def test_multichannel_downmix_is_the_mean(tmp_path):
    """Left = sine, right = silence: the mono track is half the sine (the mean, not the sum or one channel)."""
    import av

    path = tmp_path / "lr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=48000)
        stream.layout = "stereo"
        left = np.round(_sine(0.5, 48000, amplitude=0.8) * 32767).astype(np.int16)
        data = np.stack([left, np.zeros_like(left)], axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    x = audio.decode(path)
    assert abs(len(x) - 8000) <= 16
    assert abs(np.abs(x).max() / 32768 - 0.4) < 0.02


def test_find_original(tmp_path):
    folder = tmp_path / "original"
    folder.mkdir()
    for name in ("00017.mp4", "23.avi", "00042.MKV", "00050.txt"):
        (folder / name).write_bytes(b"x")
    assert audio.find_original(str(folder), "00017") == str(folder / "00017.mp4")
    assert audio.find_original(str(folder), "17") == str(folder / "00017.mp4")
    assert audio.find_original(str(folder), "00023") == str(folder / "23.avi")
    assert audio.find_original(str(folder), "00042") == str(folder / "00042.MKV")
    assert audio.find_original(str(folder), "00050") is None
    assert audio.find_original(str(folder), "00099") is None
    assert audio.find_original(str(tmp_path / "absent"), "00017") is None


def test_plain_config_from_the_same_release_has_no_sound(audio_release, tmp_path):
    root, roles = audio_release
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64", num_workers=2)
    records = _records_by_id(builder)
    assert sorted(records) == sorted(roles.values())
    assert all(set(r) == {"frames", "label", "clip_id", "num_frames", "fold", "votes"} for r in records.values())
    assert "clips_without_audio" not in builder.info.metadata and "no sound" not in build.summary(builder)
