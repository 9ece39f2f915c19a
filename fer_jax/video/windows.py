"""Sliding windows over a video's frames, and which frames of a window stand in for frames without a face."""

from __future__ import annotations

import numpy as np

from fer_jax.errors import ConfigError
from fer_jax.video import face_follow, face_track
from tfds_dfew import frames as frames_lib

SAMPLES_PER_WINDOW = 16  # the default T: frames sampled per window (a run's own frames per clip otherwise)


def window_indices(num_frames: int, window: int = 16, stride: int = 8, samples: int = SAMPLES_PER_WINDOW):
    """Sliding windows over `num_frames` frames.

    Windows start at 0, stride, 2*stride, ... while they fit; if the last one ends before the
    video does, one more window ends at the last frame. A video shorter than `window` gets one
    window over all its frames. Returns (start int[W], end int[W] (exclusive), frames int[W, samples]):
    `samples` frame indices spread uniformly over each window (repeated when the window is shorter).
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window={window} and stride={stride} must be at least 1 frame.")
    if num_frames <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, samples), np.int64)
    span = min(window, num_frames)
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    starts = np.asarray(starts, np.int64)
    frames = starts[:, None] + frames_lib.sample_indices(span, samples)[None, :]
    return starts, starts + span, frames


def face_windows(starts, ends, has_face) -> np.ndarray:
    """bool[W]: True where at most half of a window's frames lack a face."""
    cum = np.concatenate([[0], np.cumsum(~np.asarray(has_face, bool))])
    missing = cum[ends] - cum[starts]
    return missing * 2 <= (ends - starts)


def nearest_face_frames(frames, starts, ends, has_face) -> np.ndarray:
    """Replaces sampled frames without a face by the nearest face frame of the same window (earlier on ties).

    frames: int[W, T]; starts/ends: int[W]; has_face: bool[N]. Windows with no face frame at all
    keep their indices. Returns int[W, T].
    """
    out = np.array(frames, copy=True)
    has_face = np.asarray(has_face, bool)
    for w in range(len(out)):
        candidates = np.flatnonzero(has_face[starts[w] : ends[w]]) + starts[w]
        if not len(candidates):
            continue
        for t, f in enumerate(out[w]):
            if not has_face[f]:
                out[w, t] = candidates[np.argmin(np.abs(candidates - f) * 2 + (candidates > f))]
    return out


class WindowStream:
    """Frames in, window probabilities out, holding only the frames that some window still needs.

    `push(frame)` for every frame in order, then `finish()`; `probabilities` is then float64[W, C]
    (NaN rows for no-face windows) for the windows of `window_indices(num_frames, window, stride)`,
    and `boxes`, `status`, `track` describe every frame as `face_track.track_faces` would. Faces
    are looked for when a frame is read: the detector runs on every `detect_every`-th frame (and
    where a face is new, lost or the scene cuts) and the faces are followed in between
    (`face_follow.FaceFollower`; `detect_every=1`: the detector on every frame); the tracker decides
    the frame's box a few frames later (see `face_track.StreamingTracker`), then the frame is
    cropped and dropped. A window is taken up
    once all its frames are decided; the per-frame stage runs on full chunks of
    `predictor.batch * T` crops (the model's compiled shape), and windows are scored as soon as
    their frames have been through it. Crops and per-frame outputs are dropped once no window
    that is still to come can use them, so memory does not grow with the video's length (only
    the per-frame boxes and statuses that the result lists).
    """

    def __init__(self, predictor, *, window: int, stride: int, aligned: bool, margin: float, max_gap: int,
                 keypoints=None, sound=None, max_pending: int = 250,
                 detect_every: int = face_follow.DEFAULT_DETECT_EVERY):
        self.predictor, self.window, self.stride = predictor, int(window), int(stride)
        self.aligned, self.margin = aligned, 1.0 if aligned else margin
        self.detector = None if aligned else face_follow.FaceFollower(face_track.FaceDetector(), every=detect_every,
                                                                       max_gap=max_gap)
        self.tracker = None if aligned else face_track.StreamingTracker(max_gap=max_gap, max_pending=max_pending)
        self.max_pending = max_pending
        self.keypoints = keypoints
        self.sound = sound  # .window(start, end) -> int16 samples under frames [start, end), for runs with audio
        self.samples = int(getattr(predictor, "num_frames", SAMPLES_PER_WINDOW))
        self.num_classes = len(getattr(predictor, "class_names", ())) or 7
        self.rows = predictor.batch * self.samples
        self.num_frames = 0
        self.boxes: list[np.ndarray] = []
        self.status: list[int] = []
        self.track: list[int] = []
        self._has_face = bytearray()
        self._raw: dict[int, np.ndarray] = {}  # frames read whose box is not decided yet
        self._crops: dict[int, np.ndarray] = {}
        self._outputs: dict[int, dict] = {}  # frame -> its per-frame outputs
        self._queue: list[tuple] = []  # (start, end, sampled, chosen or None), in window order
        self._todo: list[int] = []  # chosen frames of queued windows without outputs yet, in order
        self._scored: list[np.ndarray] = []
        self._next_regular = 0

    @property
    def forced(self) -> int:
        return self.tracker.forced if self.tracker is not None else 0

    @property
    def probabilities(self) -> np.ndarray:
        return np.asarray(self._scored, np.float64).reshape(len(self._scored), self.num_classes)

    def push(self, frame: np.ndarray) -> None:
        i = self.num_frames
        self.num_frames += 1
        if self.aligned:
            h, w = frame.shape[:2]
            s = min(h, w)
            box = np.array([(w - s) // 2, (h - s) // 2, s, s], np.float64)
            self._decided([(i, box, face_track.DETECTED, 0)], {i: frame})
        else:
            self._raw[i] = frame
            self._decided(self.tracker.push(*self.detector(frame)), self._raw)
        self._take_windows(final=False)

    def finish(self) -> None:
        if self.tracker is not None:
            self._decided(self.tracker.finish(), self._raw)
        self._take_windows(final=True)
        self._score(final=True)

    def _decided(self, items, frames: dict) -> None:
        for f, box, status, track in items:
            self.boxes.append(box)
            self.status.append(int(status))
            self.track.append(int(track))
            self._has_face.append(status != face_track.NO_FACE)
            frame = frames.pop(f)
            if status != face_track.NO_FACE:
                self._crops[f] = face_track.crop_face(frame, box, self.predictor.frame_size, margin=self.margin)

    def _take_windows(self, final: bool) -> None:
        decided = len(self.status)
        if final:
            starts, ends, sampled = window_indices(decided, self.window, self.stride, self.samples)
            done = len(self._scored) + len(self._queue)
            new = [(int(starts[w]), int(ends[w]), sampled[w]) for w in range(done, len(starts))]
        else:
            new = []
            offsets = frames_lib.sample_indices(self.window, self.samples)
            while self._next_regular * self.stride + self.window <= decided:
                start = self._next_regular * self.stride
                new.append((start, start + self.window, start + offsets))
                self._next_regular += 1
        has_face = np.frombuffer(bytes(self._has_face), dtype=bool)
        for start, end, sampled in new:
            chosen = None
            if face_windows(np.array([start]), np.array([end]), has_face)[0]:
                chosen = nearest_face_frames(sampled[None], np.array([start]), np.array([end]), has_face)[0]
                for f in dict.fromkeys(int(f) for f in chosen):
                    if f not in self._outputs and f not in self._todo:
                        self._todo.append(f)
            self._queue.append((start, end, sampled, chosen))
        if new and not final:
            self._score(final=False)

    def _score(self, final: bool) -> None:
        """Runs the per-frame stage on full chunks (all that is left if final), then scores the windows it completes."""
        take = len(self._todo) if final else len(self._todo) // self.rows * self.rows
        if take:
            frames, self._todo = self._todo[:take], self._todo[take:]
            out = self.predictor.per_frame(np.stack([self._crops[f] for f in frames]))
            for j, f in enumerate(frames):
                self._outputs[f] = {k: v[j] for k, v in out.items()}
        ready = []  # leading windows that can be scored now (without new outputs: only no-face ones)
        while self._queue and (self._queue[0][3] is None or (
                (take or final) and all(int(f) in self._outputs for f in self._queue[0][3]))):
            ready.append(self._queue.pop(0))
        usable = [w for w in ready if w[3] is not None]
        if usable:
            gathered = {k: np.stack([np.stack([self._outputs[int(f)][k] for f in w[3]]) for w in usable])
                        for k in self._outputs[int(usable[0][3][0])]}
            if self.keypoints is not None:  # the sampled frames' own keypoints
                gathered["pose"] = np.stack([self.keypoints.read(w[2]) for w in usable])
            if self.sound is not None:  # the sound under each window's frames
                gathered["audio"] = [self.sound.window(w[0], w[1]) for w in usable]
                gathered["audio_length"] = np.asarray([len(a) for a in gathered["audio"]], np.int32)
            probabilities = iter(np.asarray(self.predictor.per_window(gathered), np.float64))
        for w in ready:
            self._scored.append(next(probabilities) if w[3] is not None else np.full(self.num_classes, np.nan))
        self._forget()

    def _forget(self) -> None:
        """Drops crops and outputs that no window still to come can use."""
        keep = len(self.status) - self.window  # the window aligned to the video's end starts at or after this
        keep = min(keep, self._next_regular * self.stride)
        if self._queue:
            keep = min(keep, self._queue[0][0])
        for store in (self._crops, self._outputs):
            for f in [f for f in store if f < keep]:
                del store[f]
