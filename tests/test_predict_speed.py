"""Detecting on every few frames and following faces in between: what it changes against a detection on every frame,
how soon it finds a face, when it forces a detection, and a progress bar that stays within its total."""

import types
import warnings

import cv2
import numpy as np
import pytest
from tqdm import TqdmWarning

from fer_jax import predict
from fer_jax.errors import ConfigError
from fer_jax.video import face_follow, face_track
from tests.helpers import astronaut_frame, blank_frame, write_video

N = face_follow.DEFAULT_DETECT_EVERY


pytestmark = pytest.mark.usefixtures("quick_compiles")  # tests/conftest.py


@pytest.fixture(scope="module")
def predictor():
    return predict.load_predictor(model="mini_xception_fer", batch=2)


# ----------------------------------------------------------------------------------------------
# The follower on its own: a stand-in detector that finds a textured square where it is.
# ----------------------------------------------------------------------------------------------

SIZE = 40
PATCH = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _frame(x=None, y=30, seed=0):
    """uint8[120, 160, 3]: noise around 100, with the textured square at (x, y) unless x is None."""
    frame = np.clip(100 + np.random.default_rng(seed).normal(0, 3, (120, 160, 3)), 0, 255).astype(np.uint8)
    if x is not None:
        xi = int(x)
        frame[y : y + SIZE, xi : xi + SIZE] = PATCH
    return frame


class _Detector:
    """Finds the square by its exact pixels; records the frames it ran on (frame ids: their seeds)."""

    def __init__(self):
        self.ran = []

    def __call__(self, frame):
        self.ran.append(len(self.ran))
        hits = cv2.matchTemplate(frame, PATCH, cv2.TM_SQDIFF)
        _, _, (x, y), _ = cv2.minMaxLoc(hits)
        if hits[y, x] > 1.0:
            return np.zeros((0, 5))
        return np.array([[x, y, SIZE, SIZE, 30.0]])


def _run(frames, **kwargs):
    detector = _Detector()
    follower = face_follow.FaceFollower(detector, **kwargs)
    out, ran = [], []
    for frame in frames:
        before = follower.detector_runs
        out.append(follower(frame))
        ran.append(follower.detector_runs > before)
    return out, np.array(ran), follower


def test_the_follower_detects_every_n_frames_and_follows_a_moving_face_in_between():
    xs = 10 + 1.5 * np.arange(60)  # whole pixels each frame, so the truth is exact
    xs = np.floor(xs)
    out, ran, follower = _run([_frame(x, seed=i) for i, x in enumerate(xs)], every=N)
    # frames 0, 1, 2 confirm the new face (min_frames detections in a row), then every N frames
    assert ran[:3].all() and np.flatnonzero(ran[3:]).tolist() == list(range(N - 1, 57, N))
    for i, (boxes, followed) in enumerate(out):
        assert len(boxes) == 1 and bool(followed[0]) == (not ran[i])
        np.testing.assert_allclose(boxes[0, :2], [xs[i], 30], atol=0.6)
    assert follower.detector_runs == ran.sum() and follower.frames == 60


def test_detect_every_1_is_the_detector_on_every_frame():
    out, ran, _ = _run([_frame(10 + i, seed=i) for i in range(12)], every=1)
    assert ran.all() and not any(f.any() for _, f in out)


@pytest.mark.parametrize("appears", range(3 * N, 4 * N))
def test_a_face_appearing_between_scheduled_detections_is_found_within_n_frames(appears):
    frames = [_frame(None, seed=i) for i in range(appears)] + [_frame(50, seed=i) for i in range(appears, 5 * N)]
    out, ran, _ = _run(frames, every=N, cut_threshold=np.inf)  # the schedule alone, no scene-cut check
    first = min(i for i, (boxes, _) in enumerate(out) if len(boxes))
    assert appears <= first < appears + N
    assert ran[first] and ran[:appears].sum() == len(range(0, appears, N))  # no face: the detector every N frames


def test_a_lost_face_and_a_scene_cut_force_a_detection_on_their_own_frame():
    frames = [_frame(20, seed=i) for i in range(8)] + [_frame(None, seed=i) for i in range(8, 10)]
    _, ran, _ = _run(frames, every=50, cut_threshold=np.inf)
    assert ran[:3].all() and not ran[3:8].any() and ran[8]  # the face leaves on frame 8: no template match
    cut = [_frame(20, seed=i) for i in range(6)] + [255 - _frame(None, seed=i) for i in range(6, 8)]
    _, ran, follower = _run(cut, every=50)
    assert ran[6] and follower.cuts == 1


def test_a_weak_detection_beside_a_strong_face_forces_no_detections():
    class Both(_Detector):
        def __call__(self, frame):
            face = super().__call__(frame)
            return np.concatenate([face, [[100.0, 70.0, 30.0, 30.0, 4.0]]]) if len(self.ran) % 2 else face

    detector = Both()
    follower = face_follow.FaceFollower(detector, every=N)
    for i in range(40):
        follower(_frame(20, seed=i))
    assert follower.detector_runs <= 3 + 40 // N  # the false detection (area x score < half the face's) is not chased


def test_followed_boxes_extend_a_tracklet_but_do_not_confirm_it():
    det, fol = np.array([[50.0, 40.0, 30.0, 30.0, 20.0]]), np.array([True])
    tracker = face_track.StreamingTracker(smooth_radius=0)
    got = []
    for i in range(12):  # one detection, then followed boxes only: a one-off, dropped
        got += tracker.push(det, fol) if i else tracker.push(det)
    got += tracker.finish()
    assert [g[2] for g in got] == [face_track.NO_FACE] * 12
    tracker = face_track.StreamingTracker(smooth_radius=0)
    got = []
    for i in range(12):  # detections on 0..2 and 9, followed in between
        got += tracker.push(det) if i in (0, 1, 2, 9) else tracker.push(det, fol)
    got += tracker.finish()
    status = [face_track.STATUS_NAMES[g[2]] for g in got]
    assert status == ["detected"] * 3 + ["followed"] * 6 + ["detected"] + ["followed"] * 2


def test_detect_every_must_be_a_positive_whole_number(predictor):
    with pytest.raises(ConfigError, match="--detect_every=0 must be a whole number of frames, at least 1"):
        predict.predict_video("any.mp4", predictor=predictor, detect_every=0)


# ----------------------------------------------------------------------------------------------
# Whole videos: the default against a detection on every frame.
# ----------------------------------------------------------------------------------------------


def _boxes(result):
    return np.array([f["box"] or [np.nan] * 4 for f in result["frames"]], np.float64)


def _iou(a, b):
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]), np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def test_the_default_stays_close_to_detecting_every_frame_on_a_moving_face(predictor, tmp_path):
    frames = [astronaut_frame(i)[0] for i in range(40)] + [blank_frame(i) for i in range(10)]
    video = write_video(tmp_path / "moving.avi", frames + [astronaut_frame(i)[0] for i in range(40, 60)])
    every = predict.predict_video(video, predictor=predictor, detect_every=1)
    fast = predict.predict_video(video, predictor=predictor)
    assert every["settings"]["detect_every"] == 1 and every["settings"]["face_follower"] is None
    assert fast["settings"]["detect_every"] == N and fast["settings"]["face_follower"] == face_follow.FOLLOWER_NAME
    assert fast["summary"]["detector_frames"] <= 0.4 * fast["num_frames"] and fast["summary"]["frames_followed"] > 30
    a, b = _boxes(every), _boxes(fast)
    assert (np.isnan(a[:, 0]) == np.isnan(b[:, 0])).all()  # the same frames have a face
    face = ~np.isnan(a[:, 0])
    assert _iou(a, b)[face].min() > 0.85
    assert np.abs((a[:, :2] + a[:, 2:] / 2) - (b[:, :2] + b[:, 2:] / 2))[face].max() < 3.0  # centres, pixels
    assert [w["no_face"] for w in fast["windows"]] == [w["no_face"] for w in every["windows"]]
    diff = max(abs(w["probabilities"][c] - v["probabilities"][c]) for w, v in zip(fast["windows"], every["windows"])
               if w["probabilities"] for c in w["probabilities"])
    assert diff < 0.02
    assert any("the face detector ran on" in note for note in fast["notes"])


def test_a_face_appearing_after_a_no_face_stretch_is_found_within_n_frames(predictor, tmp_path):
    appears = 2 * N + 3
    frames = [blank_frame(i) for i in range(appears)] + [astronaut_frame(i)[0] for i in range(24)]
    result = predict.predict_video(write_video(tmp_path / "appears.avi", frames), predictor=predictor)
    status = [f["status"] for f in result["frames"]]
    first = status.index("detected")
    assert appears <= first < appears + N and all(s != "none" for s in status[first:])
    assert not result["windows"][-1]["no_face"]


def test_the_progress_bar_stays_within_its_total(predictor, tmp_path, capsys):
    video = write_video(tmp_path / "face.avi", [astronaut_frame(i)[0] for i in range(23)])  # 2.3 s: 0.1 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", TqdmWarning)  # "clamping frac to range [0, 1]"
        predict.predict_video(video, predictor=predictor, progress=True)
        bar = predict._VideoProgress(types.SimpleNamespace(fps=10.0, frame_count_hint=20), "short hint")
        for frames in range(1, 31):  # the container said 20 frames; there are 30
            bar.show(frames)
            assert bar.bar.n <= bar.bar.total
        assert bar.bar.n == bar.bar.total == 3.0
        bar.close()
    assert "video-s" in capsys.readouterr().err
