"""Face detection, tracking and cropping for videos a user brings: one main face per frame, as square crops.

    source = open_frames("talk.mp4")               # or a folder of frame images
    detector = FaceDetector()
    track = track_faces([detector(f) for f in source.frames()])
    crop = crop_face(frame, track.boxes[i], size=112)

Detection: OpenCV's Haar frontal-face cascade (shipped in `cv2.data.haarcascades`) on a grayscale
copy of each frame, downscaled so its longer side is at most `FaceDetector.max_side` pixels.
Tracking (`track_faces`, pure numpy): detections are linked frame to frame into tracklets, each
frame's detection going to the tracklet whose last box is nearest (within `jump` box sizes and
`max_gap` frames). The main face is the tracklet with the largest summed area x detector score,
i.e. the largest face that stays; frames it does not cover go to the next tracklet. Gaps of at
most `max_gap` frames between two detections of a tracklet hold its last box (status "held");
frames outside every tracklet have no face (status "none", box NaN) and are never guessed.
Tracklets seen in fewer than `min_frames` frames are dropped as false detections. Boxes are
smoothed over time (a centred moving average of centre and size within each run of a tracklet).
Crops are squares of `margin` times the box size around its centre (DFEW's face-aligned
`clip_224x224` frames have the face filling most of the frame), padded by repeating the border
where they leave the frame, and resized to the size the model was trained on.
Boxes are float[N, 4] (x, y, w, h) in pixels of the original frame. `predict` runs the detector
on every few frames only and follows the faces in between (`fer_jax.video.face_follow`); the
streaming tracker takes those followed boxes too (status "followed").
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from fer_jax.errors import BadInputError, MissingError

NO_FACE, DETECTED, HELD, FOLLOWED = 0, 1, 2, 3
STATUS_NAMES = ("none", "detected", "held", "followed")
DEFAULT_MARGIN = 1.25
DEFAULT_MAX_GAP = 3
DEFAULT_SMOOTH_RADIUS = 2
DEFAULT_FPS = 25.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(BadInputError):
    """A video (or frame folder) that cannot be used; the message names the file and what to do."""


# ----------------------------------------------------------------------------------------------
# Reading frames: a video file through OpenCV, or a folder of images.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FrameSource:
    """Frames of one video or image folder, readable more than once.

    `frames()` yields uint8[H, W, 3] RGB frames in order. `fps` is the video's rate (or the one
    given, or DEFAULT_FPS for an image folder); `fps_source` says which.
    """

    path: str
    kind: str  # "video" | "images"
    fps: float
    fps_source: str  # "video" | "given" | "default"
    image_paths: tuple[str, ...] = ()
    frame_count_hint: int | None = None  # the container's frame count (may be wrong); None if unknown

    def frames(self) -> Iterator[np.ndarray]:

        if self.kind == "images":
            for p in self.image_paths:
                bgr = cv2.imread(p, cv2.IMREAD_COLOR)
                if bgr is None:
                    raise VideoError(f"{p}: image cannot be decoded; remove it from {self.path} or replace it.")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return
        capture = cv2.VideoCapture(self.path)
        try:
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                if bgr.ndim == 2:
                    bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def _natural_key(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def open_frames(path: str, *, fps: float | None = None) -> FrameSource:
    """A FrameSource for a video file or a folder of frame images (sorted by the numbers in their names).

    Raises VideoError naming `path` when it does not exist, cannot be opened as a video, or is a
    folder without images.
    """

    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file or folder; pass a video file (mp4, avi, ...) or a folder of frames.")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise VideoError(f"{path}: frame rate {fps!r} is not a positive number; pass --fps like 25.")
    if os.path.isdir(path):
        names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
        if not names:
            raise VideoError(f"{path}: folder holds no frame images ({', '.join(IMAGE_SUFFIXES)}); pass a video "
                             "file or a folder of frames.")
        return FrameSource(path, "images", float(fps or DEFAULT_FPS), "given" if fps else "default",
                           tuple(os.path.join(path, n) for n in names), len(names))
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: cannot be opened as a video (OpenCV {cv2.__version__} with FFmpeg reads "
                             "mp4/avi/mkv/mov/webm); check the file is a complete video, or convert it, e.g. "
                             "ffmpeg -i in -c:v mpeg4 out.mp4.")
        rate = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    hint = count if count > 0 else None
    if fps:
        return FrameSource(path, "video", float(fps), "given", frame_count_hint=hint)
    if rate > 0 and math.isfinite(rate) and rate < 1000:
        return FrameSource(path, "video", rate, "video", frame_count_hint=hint)
    return FrameSource(path, "video", DEFAULT_FPS, "default", frame_count_hint=hint)


# ----------------------------------------------------------------------------------------------
# Detection.
# ----------------------------------------------------------------------------------------------


class FaceDetector:
    """Haar frontal-face detection: uint8[H, W, 3] RGB -> float64[K, 5] (x, y, w, h, score) in frame pixels.

    The score is the number of raw detections merged into the box (OpenCV's `numDetections`):
    real faces gather tens, false detections a handful. Detection runs on a copy whose longer side
    is at most `max_side` pixels (Haar costs grow with pixels; a main face stays large enough) and
    finds faces from `min_size_fraction` of that copy's shorter side (at least 20 px) upwards.
    """

    def __init__(self, *, max_side: int = 480, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size_fraction: float = 0.08, cascade: str = "haarcascade_frontalface_default.xml"):

        path = os.path.join(cv2.data.haarcascades, cascade)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise MissingError(f"{path}: Haar cascade missing or unreadable; reinstall opencv-python-headless<5 "
                                    "(OpenCV 5 no longer ships the cascades).")
        self.max_side = max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_fraction = min_size_fraction

    def __call__(self, frame: np.ndarray) -> np.ndarray:

        h, w = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        smallest = max(20, int(round(self.min_size_fraction * min(gray.shape))))
        found, counts = self._cascade.detectMultiScale2(gray, scaleFactor=self.scale_factor,
                                                        minNeighbors=self.min_neighbors, minSize=(smallest, smallest))
        boxes = np.rint(np.asarray(found, np.float64).reshape(-1, 4) / scale)
        return np.concatenate([boxes, np.asarray(counts, np.float64).reshape(-1, 1)], axis=1)


# ----------------------------------------------------------------------------------------------
# Tracking (pure numpy).
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FaceTrack:
    """The main face of every frame.

    boxes:  float64[N, 4] (x, y, w, h), smoothed; NaN where status is NO_FACE.
    status: int8[N]: NO_FACE, DETECTED, HELD (a short gap filled with the last box) or FOLLOWED
            (a box followed from a detection by template matching, `face_follow`; streaming only).
    track:  int32[N]: the tracklet a frame's face belongs to (-1 for no face).
    """

    boxes: np.ndarray
    status: np.ndarray
    track: np.ndarray

    @property
    def has_face(self) -> np.ndarray:
        return self.status != NO_FACE


def _as_detections(dets) -> np.ndarray:
    """float64[K, 5] (x, y, w, h, score) from [K, 4] (score 1) or [K, 5]."""
    d = np.asarray(dets, np.float64)
    if d.size == 0:
        return np.zeros((0, 5))
    d = d.reshape(len(d), -1)
    return d if d.shape[1] == 5 else np.concatenate([d[:, :4], np.ones((len(d), 1))], axis=1)


def link_tracklets(detections: Sequence[np.ndarray], *, max_gap: int = DEFAULT_MAX_GAP,
                   jump: float = 1.0) -> list[list[tuple[int, np.ndarray]]]:
    """Links detections frame to frame into tracklets: [[(frame, float64[5] detection), ...], ...].

    A tracklet seen within the last `max_gap` + 1 frames continues with the detection whose centre
    is nearest its last box, if that distance is at most `jump` times the box's size (sqrt(w h));
    pairs are taken nearest first, each tracklet and detection at most once. Other detections
    start new tracklets.
    """
    tracklets: list[list[tuple[int, np.ndarray]]] = []
    for i, dets in enumerate(detections):
        dets = _as_detections(dets)
        active = [t for t, tr in enumerate(tracklets) if i - tr[-1][0] <= max_gap + 1]
        pairs = []
        for t in active:
            x, y, w, h = tracklets[t][-1][1][:4]
            size = math.sqrt(w * h)
            centres = dets[:, :2] + dets[:, 2:4] / 2.0
            dist = np.hypot(centres[:, 0] - (x + w / 2.0), centres[:, 1] - (y + h / 2.0))
            pairs += [(float(dist[k]), t, k) for k in range(len(dets)) if dist[k] <= jump * size]
        taken_t, taken_k = set(), set()
        for _, t, k in sorted(pairs):
            if t not in taken_t and k not in taken_k:
                tracklets[t].append((i, dets[k]))
                taken_t.add(t)
                taken_k.add(k)
        for k in range(len(dets)):
            if k not in taken_k:
                tracklets.append([(i, dets[k])])
    return tracklets


def track_faces(detections: Sequence[np.ndarray], *, max_gap: int = DEFAULT_MAX_GAP, min_frames: int = 3,
                smooth_radius: int = DEFAULT_SMOOTH_RADIUS, jump: float = 1.0) -> FaceTrack:
    """Per-frame detections -> the main face's box and status in every frame.

    detections: per frame, [K, 4] boxes (x, y, w, h) or [K, 5] boxes with a detector score.
    Detections are linked into tracklets (`link_tracklets`). A tracklet covers its detections
    and the gaps of at most `max_gap` frames between them (held: the last box repeats). The main
    face is the tracklet with the largest sum of area x score over its detections (the largest,
    steadiest face); frames it does not cover go to the next tracklet by that score, and so on.
    Tracklets with fewer than `min_frames` detections are ignored (one-off false detections).
    Boxes are then smoothed within each run of frames of one tracklet (`smooth_boxes`).
    """
    n = len(detections)
    boxes = np.full((n, 4), np.nan)
    status = np.full(n, NO_FACE, np.int8)
    track = np.full(n, -1, np.int32)
    tracklets = [tr for tr in link_tracklets(detections, max_gap=max_gap, jump=jump) if len(tr) >= min_frames]
    scores = [sum(d[2] * d[3] * d[4] for _, d in tr) for tr in tracklets]
    for t in sorted(range(len(tracklets)), key=lambda t: -scores[t]):
        tr = tracklets[t]
        for j, (i, d) in enumerate(tr):
            if track[i] < 0:
                boxes[i], status[i], track[i] = d[:4], DETECTED, t
            if j + 1 < len(tr):
                gap = slice(i + 1, tr[j + 1][0])
                free = np.flatnonzero(track[gap] < 0) + i + 1
                boxes[free], status[free], track[free] = d[:4], HELD, t
    return FaceTrack(smooth_boxes(boxes, track, radius=smooth_radius), status, track)


def smooth_boxes(boxes: np.ndarray, track: np.ndarray, *, radius: int = DEFAULT_SMOOTH_RADIUS) -> np.ndarray:
    """Centred moving average (2 * radius + 1 frames, shorter at run ends) of box centre, width and height.

    Averages only within a run of consecutive frames of one track; NaN rows stay NaN.
    boxes: float64[N, 4] (x, y, w, h); track: int32[N]. Returns float64[N, 4].
    """
    out = boxes.copy()
    if radius <= 0 or not len(boxes):
        return out
    centre = np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2.0, boxes[:, 2:]], axis=1)  # cx, cy, w, h
    n = len(boxes)
    start = 0
    while start < n:
        if track[start] < 0:
            start += 1
            continue
        end = start
        while end + 1 < n and track[end + 1] == track[start]:
            end += 1
        run = centre[start : end + 1]
        sums = np.concatenate([np.zeros((1, 4)), np.cumsum(run, axis=0)])
        idx = np.arange(len(run))
        lo, hi = np.maximum(idx - radius, 0), np.minimum(idx + radius, len(run) - 1)
        mean = (sums[hi + 1] - sums[lo]) / (hi - lo + 1)[:, None]
        out[start : end + 1] = np.concatenate([mean[:, :2] - mean[:, 2:] / 2.0, mean[:, 2:]], axis=1)
        start = end + 1
    return out


# ----------------------------------------------------------------------------------------------
# Cropping.
# ----------------------------------------------------------------------------------------------


def crop_square(box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """(x0, y0, side) in integer pixels: the square of side margin * max(w, h) centred on `box`."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(margin * max(w, h))))
    return int(round(x + w / 2.0 - side / 2.0)), int(round(y + h / 2.0 - side / 2.0)), side


def crop_face(frame: np.ndarray, box, size: int, *, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """uint8[H, W, 3] frame + box (x, y, w, h) -> uint8[size, size, 3] square face crop.

    Parts of the square outside the frame repeat the frame's border pixels. Downscaling
    averages pixels (INTER_AREA, like the Pillow box filter DFEW's frames are stored with).
    """

    x0, y0, side = crop_square(box, margin)
    h, w = frame.shape[:2]
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))
    if any(pad):
        frame = cv2.copyMakeBorder(frame, *pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad[2], y0 + pad[0]
    patch = frame[y0 : y0 + side, x0 : x0 + side]
    if side == size:
        return np.ascontiguousarray(patch)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """A whole frame (already a face crop) -> uint8[size, size, 3]; non-square frames are centre-cropped first."""
    h, w = frame.shape[:2]
    s = min(h, w)
    box = ((w - s) / 2.0, (h - s) / 2.0, s, s)
    return crop_face(frame, box, size, margin=1.0)


# ----------------------------------------------------------------------------------------------
# Tracking while the video is read (the same results as track_faces, with a bounded look-ahead).
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tracklet:
    index: int  # creation order: ties of score go to the older tracklet, as in track_faces
    score: float
    count: int  # detections (followed boxes not counted)
    last: int  # frame of its newest detection or followed box
    box: np.ndarray  # float64[4], that newest box


class StreamingTracker:
    """`track_faces`, frame by frame: `push(detections)` per frame, then `finish()`; both return finished frames.

    Each returns [(frame, box float64[4] (NaN for no face), status, track)] in frame order, with
    the values `track_faces` gives for the whole video (track ids are numbered differently; only
    their equality matters). A frame is finished once every tracklet that covers it is known
    (`max_gap` frames later), has `min_frames` detections or has ended, and the largest of them
    can no longer be overtaken (the others ended below it), plus `smooth_radius` frames for the
    smoothing. With one face that is a few frames; while two faces keep competing it is until one
    of them ends. Not to hold frames without bound, a frame waiting for more than `max_pending`
    frames is decided with the scores so far (counted in `forced`; `track_faces` could differ there).

    `push(detections, followed)` also takes boxes followed between detections (bool[K] flags,
    `face_follow.FaceFollower`): they continue a tracklet like detections (status FOLLOWED) but
    add nothing to its score or to its count towards `min_frames`, which stay the detector's.
    """

    def __init__(self, *, max_gap: int = DEFAULT_MAX_GAP, min_frames: int = 3,
                 smooth_radius: int = DEFAULT_SMOOTH_RADIUS, jump: float = 1.0, max_pending: int = 250):
        self.max_gap, self.min_frames, self.radius, self.jump = max_gap, min_frames, smooth_radius, jump
        self.max_pending = max(max_pending, max_gap + 1)
        self.forced = 0
        self._frame = -1  # the newest frame pushed
        self._next_index = 0
        self._active: list[_Tracklet] = []  # may still grow
        self._cover: dict[int, dict[int, tuple[_Tracklet, np.ndarray, int]]] = {}  # frame -> candidates
        self._decided: dict[int, tuple] = {}  # frame -> (raw box, status, track, prefix sum along its run)
        self._next_decide = 0
        self._emitted = 0

    def _closed(self, t: _Tracklet, finished: bool) -> bool:
        return finished or self._frame - t.last > self.max_gap

    def push(self, detections, followed=None) -> list[tuple[int, np.ndarray, int, int]]:
        i = self._frame = self._frame + 1
        self._cover.setdefault(i, {})
        dets = _as_detections(detections)
        followed = np.zeros(len(dets), bool) if followed is None else np.asarray(followed, bool)
        self._active = [t for t in self._active if i - t.last <= self.max_gap + 1]
        pairs = []
        for t in self._active:
            x, y, w, h = t.box
            size = math.sqrt(w * h)
            centres = dets[:, :2] + dets[:, 2:4] / 2.0
            dist = np.hypot(centres[:, 0] - (x + w / 2.0), centres[:, 1] - (y + h / 2.0))
            pairs += [(float(dist[k]), t.index, k, t) for k in range(len(dets)) if dist[k] <= self.jump * size]
        taken_t, taken_k = set(), set()
        for _, ti, k, t in sorted(pairs, key=lambda p: p[:3]):
            if ti not in taken_t and k not in taken_k:
                for gap in range(t.last + 1, i):  # held frames between its last detection and this one
                    self._cover[gap][ti] = (t, t.box, HELD)
                self._add(t, i, dets[k], followed[k])
                taken_t.add(ti)
                taken_k.add(k)
        for k in range(len(dets)):
            if k not in taken_k:
                t = _Tracklet(self._next_index, 0.0, 0, i, dets[k][:4])
                self._next_index += 1
                self._active.append(t)
                self._add(t, i, dets[k], followed[k])
        return self._advance(finished=False)

    def _add(self, t: _Tracklet, i: int, det: np.ndarray, followed: bool = False) -> None:
        if not followed:
            t.score += det[2] * det[3] * det[4]
            t.count += 1
        t.last, t.box = i, det[:4]
        self._cover[i][t.index] = (t, det[:4], FOLLOWED if followed else DETECTED)

    def finish(self) -> list[tuple[int, np.ndarray, int, int]]:
        return self._advance(finished=True)

    def _decide(self, f: int, finished: bool) -> bool:
        """Decides frame f's tracklet if it is known; False if it must wait."""
        forced = self._frame - f >= self.max_pending
        if not finished and not forced and self._frame < f + self.max_gap:
            return False
        known, unknown = [], []
        for t, box, status in self._cover[f].values():
            if t.count >= self.min_frames:
                known.append((t, box, status))
            elif not self._closed(t, finished):
                unknown.append(t)
        if not forced and unknown:
            return False
        best = max(known, key=lambda c: (c[0].score, -c[0].index), default=None)
        if best is not None and not forced:
            for t, _, _ in known:
                if t is not best[0] and not self._closed(t, finished):
                    return False
        if forced and (unknown or any(not self._closed(t, finished) for t, _, _ in known)):
            self.forced += 1
        del self._cover[f]
        box, status, track = (np.full(4, np.nan), NO_FACE, -1) if best is None else (
            np.asarray(best[1], np.float64), best[2], best[0].index)
        run_sum = None
        if track >= 0:  # prefix sums of (cx, cy, w, h) along the run, added in smooth_boxes' cumsum order
            previous = self._decided.get(f - 1)
            before = previous[3] if previous is not None and previous[2] == track else np.zeros(4)
            run_sum = before + np.concatenate([box[:2] + box[2:] / 2.0, box[2:]])
        self._decided[f] = (box, status, track, run_sum)
        return True

    def _advance(self, finished: bool) -> list[tuple[int, np.ndarray, int, int]]:
        while self._next_decide <= self._frame and self._decide(self._next_decide, finished):
            self._next_decide += 1
        out = []
        last = self._next_decide - 1
        while self._emitted <= last and (finished or self._emitted + self.radius <= last):
            out.append(self._smoothed(self._emitted, last))
            self._emitted += 1
        for f in [f for f in self._decided if f < self._emitted - self.radius - 1]:
            del self._decided[f]
        return out

    def _smoothed(self, f: int, last: int) -> tuple[int, np.ndarray, int, int]:
        """Frame f's box averaged over its run within `radius` frames, computed as smooth_boxes does."""
        box, status, track, _ = self._decided[f]
        if track < 0 or self.radius <= 0:
            return f, box, status, track
        lo, hi = f, f
        while lo > max(0, f - self.radius) and self._decided[lo - 1][2] == track:
            lo -= 1
        while hi < min(last, f + self.radius) and self._decided[hi + 1][2] == track:
            hi += 1
        before = self._decided.get(lo - 1)
        start = before[3] if before is not None and before[2] == track else np.zeros(4)
        mean = (self._decided[hi][3] - start) / (hi - lo + 1)
        return f, np.concatenate([mean[:2] - mean[2:] / 2.0, mean[2:]]), status, track
