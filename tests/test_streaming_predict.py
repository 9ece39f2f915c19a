"""Streaming prediction: one pass over the video, bounded memory, and the same JSON as the in-memory version.

The in-memory version (every frame detected, then every face crop of the video held at once)
is kept here, only as the reference the streaming `predict_video` must reproduce.
"""

import json

import cv2
import numpy as np
import pytest

from fer_jax import predict
from fer_jax.video import face_track
from fer_jax.video.windows import WindowStream, face_windows, nearest_face_frames, window_indices

H, W = 180, 240


def _astronaut_frame(i, second=False):
    """A 240 x 180 frame around the astronaut's face, shifted a little per frame; `second` adds a small second face."""
    from skimage import data

    img = data.astronaut()
    dx, dy = int(round(6 * np.sin(i / 3.0))), int(round(4 * np.cos(i / 4.0)))
    x0, y0 = 24 + dx, max(0, -10 + dy)
    region = img[y0 : y0 + 300, x0 : x0 + 400]
    frame = cv2.resize(region, (W, int(round(region.shape[0] * W / 400.0))), interpolation=cv2.INTER_AREA)[:H].copy()
    if second:
        frame[110:170, 10:70] = cv2.resize(img[40:190, 150:300], (60, 60), interpolation=cv2.INTER_AREA)
    return frame


def _blank_frame(i):
    rng = np.random.default_rng(i)
    return np.clip(120 + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """81 frames at 10 fps: face, a 3-frame gap (held), face (a second face on and off), 12 blank frames, face."""
    frames = ([_astronaut_frame(i) for i in range(20)] + [_blank_frame(i) for i in range(3)]
              + [_astronaut_frame(i, second=i % 7 < 4) for i in range(20, 45)] + [_blank_frame(i) for i in range(12)]
              + [_astronaut_frame(i) for i in range(45, 66)])
    path = str(tmp_path_factory.mktemp("stream") / "mixed.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def predictor():
    return predict.load_predictor(model="mini_xception_fer", batch=2)


def _in_memory(path, predictor, *, window, stride, max_gap=face_track.DEFAULT_MAX_GAP,
               margin=face_track.DEFAULT_MARGIN):
    """The version before streaming: (windows' (no_face, probabilities), frames' (status, box)) of a whole video."""
    source = face_track.open_frames(path)
    detector = face_track.FaceDetector()
    detections = [detector(f) for f in source.frames()]
    n = len(detections)
    track = face_track.track_faces(detections, max_gap=max_gap)
    has_face = track.has_face
    starts, ends, sampled = window_indices(n, window, stride)
    usable = face_windows(starts, ends, has_face)
    size = predictor.frame_size
    crops = np.zeros((n, size, size, 3), np.uint8)
    for i, frame in enumerate(source.frames()):
        if has_face[i]:
            crops[i] = face_track.crop_face(frame, track.boxes[i], size, margin=margin)
    probabilities = np.full((len(starts), 7), np.nan)
    chosen = nearest_face_frames(sampled[usable], starts[usable], ends[usable], has_face)
    needed = np.unique(chosen)
    out = predictor.per_frame(crops[needed])
    position = np.full(n, -1, np.int64)
    position[needed] = np.arange(len(needed))
    probabilities[usable] = predictor.per_window({k: v[position[chosen]] for k, v in out.items()})
    windows = [(not bool(u), None if not u else [float(v) for v in p]) for u, p in zip(usable, probabilities)]
    frames = [(face_track.STATUS_NAMES[int(s)], None if not h else [round(float(v), 1) for v in b])
              for s, h, b in zip(track.status, has_face, track.boxes)]
    return windows, frames, int((track.status == face_track.HELD).sum())


@pytest.mark.parametrize("window, stride", [(16, 8), (24, 5), (16, 16)])
def test_streaming_json_equals_the_in_memory_version(video, predictor, window, stride):
    result = json.loads(json.dumps(predict.predict_video(video, predictor=predictor, window=window, stride=stride,
                                                         detect_every=1)))
    windows, frames, held = _in_memory(video, predictor, window=window, stride=stride)
    assert result["num_frames"] == 81 and held == 3
    assert [(w["no_face"], None if w["probabilities"] is None else list(w["probabilities"].values()))
            for w in result["windows"]] == windows  # bit for bit
    assert [(f["status"], f["box"]) for f in result["frames"]] == frames
    assert any(w["no_face"] for w in result["windows"]) == (window == 16)  # 12 blank frames: half of 24 is a face
    assert not all(w["no_face"] for w in result["windows"])
    assert result["notes"] == ["3 frames without a detection lie in gaps of at most 3 frames and hold the previous "
                               "face box (status 'held')."]


def _random_detections(rng, n):
    """Up to three faces that come and go, drift and are missed now and then, plus false detections."""
    faces = [{"on": rng.random() < 0.8, "x": rng.uniform(0, 200), "y": rng.uniform(0, 100), "s": rng.uniform(20, 80)}
             for _ in range(rng.integers(1, 4))]
    out = []
    for _ in range(n):
        dets = []
        for face in faces:
            face["on"] ^= rng.random() < 0.05
            face["x"] += rng.normal(0, 2)
            face["y"] += rng.normal(0, 2)
            if face["on"] and rng.random() < 0.85:
                dets.append([face["x"], face["y"], face["s"], face["s"] * 1.1, float(rng.integers(1, 30))])
        if rng.random() < 0.05:
            dets.append([rng.uniform(0, 300), rng.uniform(0, 200), 30, 30, 2.0])
        out.append(np.array(dets).reshape(-1, 5))
    return out


def _stream(detections, **kwargs):
    tracker = face_track.StreamingTracker(**kwargs)
    got = []
    for d in detections:
        got += tracker.push(d)
    return got + tracker.finish(), tracker


def test_streaming_tracker_gives_track_faces_results_bit_for_bit():
    for seed in range(150):
        rng = np.random.default_rng(seed)
        dets = _random_detections(rng, int(rng.integers(1, 160)))
        kwargs = {"max_gap": int(rng.integers(0, 5)), "smooth_radius": int(rng.integers(0, 4))}
        expected = face_track.track_faces(dets, **kwargs)
        got, tracker = _stream(dets, **kwargs, max_pending=10**9)
        assert [g[0] for g in got] == list(range(len(dets)))
        np.testing.assert_array_equal(np.array([g[2] for g in got], np.int8), expected.status, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(np.stack([g[1] for g in got]), expected.boxes, err_msg=f"seed {seed}")
        assert tracker.forced == 0


def test_one_face_is_decided_a_few_frames_later_and_two_competing_faces_within_max_pending():
    n = 400
    one = [np.array([[100.0 + np.sin(i), 50.0, 60.0, 60.0, 20.0]]) if i % 9 else np.zeros((0, 5)) for i in range(n)]
    tracker = face_track.StreamingTracker(max_gap=3, smooth_radius=2)
    lag = 0
    for i, d in enumerate(one):
        done = tracker.push(d)
        lag = max(lag, i - (done[-1][0] if done else -1))
    assert lag <= 3 + 2 + 2  # max_gap frames to know the cover, the smoothing radius, and a held frame's wait
    two = [np.array([[100.0, 50.0, 60.0, 60.0, 20.0], [10.0, 10.0, 60.0, 60.0, 20.0]]) for _ in range(n)]
    got, tracker = _stream(two, max_pending=50)
    assert tracker.forced > 0 and len(got) == n
    assert max(len(tracker._cover), len(tracker._decided)) <= 60
    assert {g[3] for g in got} == {0}  # the first face, as track_faces picks on a tie
    np.testing.assert_array_equal(np.stack([g[1] for g in got]), face_track.track_faces(two).boxes)


class _CountingPredictor:
    """A stand-in model: per-frame mean colour, window mean; records the most crops a WindowStream held."""

    frame_size, batch, needs_keypoints = 16, 2, False

    def per_frame(self, crops):
        return {"m": crops.reshape(len(crops), -1).mean(axis=1, keepdims=True)}

    def per_window(self, gathered):
        m = gathered["m"].mean(axis=(1, 2))
        return np.stack([m] * 7, axis=1)


def test_window_stream_holds_a_bounded_number_of_crops_whatever_the_length():
    held = {}
    for n in (200, 2000):
        stream = WindowStream(_CountingPredictor(), window=16, stride=8, aligned=True, margin=1.0, max_gap=3)
        peak = 0
        for i in range(n):
            stream.push(np.full((20, 24, 3), i % 251, np.uint8))
            peak = max(peak, len(stream._crops) + len(stream._outputs) + len(stream._raw))
        stream.finish()
        assert stream.probabilities.shape == (len(window_indices(n, 16, 8)[0]), 7)
        held[n] = peak
    assert held[2000] == held[200] < 200
