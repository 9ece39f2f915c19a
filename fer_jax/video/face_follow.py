"""Face detection on every few frames only, with the faces followed between detections by template matching.

    follower = FaceFollower(FaceDetector(), every=10)
    for frame in source.frames():
        boxes, followed = follower(frame)   # float64[K, 5] (x, y, w, h, score), bool[K]
        tracker.push(boxes, followed)       # face_track.StreamingTracker

The Haar detector is most of the time of `predict` (about 80 ms a 640x360 frame on a shared
2-core CPU, against about 1 ms to decode it and 3 ms for the network), so it runs only on some
frames; a face it found is followed on the frames in between. The full detector runs on a frame when:

  - `every` frames have passed since it last ran (the schedule; `every=1` is a detection on
    every frame, and then nothing is followed: the detector's own output, as before);
  - the frame looks like a scene cut (its 32 x 18 grey thumbnail differs from the previous
    frame's by more than `cut_threshold` grey levels on average);
  - a followed face is lost (its template no longer matches, see below);
  - a face that could be the main one is pending: found fewer than `min_frames` times (so a
    new face, or a false detection, is confirmed or dropped by detections on consecutive frames,
    as the tracker's `min_frames` does with a detection on every frame), or lost within the last
    `max_gap` frames (so a face that comes back after a short gap is found at once and the
    tracker holds the gap).

Only faces that could be the main one are followed and force detections: those whose box area
x detector score (the tracker's measure of a face) is at least `rival` times the strongest face's
in view. A weak one beside a strong face (typically a false detection: a handful of merged
detections where a face gathers tens) is seen on the scheduled detections only, too rarely for
the tracker to keep it; it costs no extra detections.

Following: when a face is detected its box is cut from the grey frame, scaled so its longer
side is `template_size` pixels, and kept as a template. On a later frame the template is
searched (OpenCV `matchTemplate`, normalised correlation, with a sub-pixel parabola through the
peak) in the box grown by `search` box sizes on each side; the face keeps its detected size and
moves to the best match if the correlation is at least `threshold`, else it is lost. Templates
come from detections only, so following does not drift: every detection re-anchors it. A
confirmed face that a scheduled detection misses is followed on (a single miss of the detector)
but a second miss in a row loses it.

Following instead of interpolating between two detections: a followed face is measured on its own
frame (it goes where the face goes, and it is lost on the frame where the face leaves, turns or is
cut away from, which forces a detection), and it needs no frames of look-ahead.
Boxes are in pixels of the original frame. Memory is a few templates, whatever the video's length.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from fer_jax.errors import ConfigError

# 10 frames (0.4 s at 25 fps): on a 60 s 640x360 video on a shared 2-core CPU at load ~5 the whole
# command ran at 1.4-1.7 video-s per s with 10 and only 1.0-1.1 with 5 (0.3 with 1), with boxes and
# probabilities as close to a detection on every frame (benchmarks/predict_speed.py).
DEFAULT_DETECT_EVERY = 10
FOLLOWER_NAME = "OpenCV matchTemplate (TM_CCOEFF_NORMED) of the last detection's face, between detections"
THUMBNAIL = (32, 18)  # (width, height) of the scene-cut thumbnail


def check_detect_every(every) -> int:
    """`every` as an int; ConfigError unless it is at least 1."""
    if int(every) != every or every < 1:
        raise ConfigError(f"--detect_every={every} must be a whole number of frames, at least 1 (1: the face "
                          f"detector on every frame; default {DEFAULT_DETECT_EVERY}).")
    return int(every)


@dataclasses.dataclass
class _Face:
    """A face the follower knows: its newest box (float64[4]) and the template of its newest detection."""

    box: np.ndarray
    score: float
    strength: float  # area x score of its newest detection
    detections: int  # times the detector found it
    last_seen: int  # newest frame it was detected or followed in
    template: np.ndarray | None = None  # uint8[h, w] grey, at `scale` times frame pixels
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)  # box corner minus the template's corner, in frame pixels
    misses: int = 0  # detector runs in a row that missed it while it was followed on (0 or 1)
    lost: bool = False


class FaceFollower:
    """Frames in order -> per frame the face boxes float64[K, 5] (x, y, w, h, score) and bool[K] followed.

    `followed[k]` is True for a box followed from an earlier detection (its score is that
    detection's), False for a box the detector found in this frame. `detector_runs` counts the
    frames the detector ran on and `frames` the frames seen.
    """

    def __init__(self, detector, *, every: int = DEFAULT_DETECT_EVERY, min_frames: int = 3, max_gap: int = 3,
                 jump: float = 1.0, threshold: float = 0.6, search: float = 0.5, template_size: int = 32,
                 cut_threshold: float = 30.0, rival: float = 0.5):

        self.detector, self.every = detector, check_detect_every(every)
        self.min_frames, self.max_gap, self.jump = min_frames, max_gap, jump
        self.threshold, self.search, self.template_size = threshold, search, template_size
        self.cut_threshold, self.rival = cut_threshold, rival
        self.frames = 0
        self.detector_runs = 0
        self.cuts = 0
        self._faces: list[_Face] = []
        self._last_run = -10**9
        self._thumbnail: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:

        i = self.frames
        self.frames += 1
        if self.every == 1:
            self.detector_runs += 1
            boxes = np.asarray(self.detector(frame), np.float64).reshape(-1, 5)
            return boxes, np.zeros(len(boxes), bool)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        cut = self._scene_cut(grey)
        self._faces = [f for f in self._faces if i - f.last_seen <= self.max_gap + 1]
        major = self._major()
        run = cut or i - self._last_run >= self.every or any(self._pending(self._faces[k]) for k in major)
        followed: dict[int, np.ndarray | None] = {}
        if not run:
            for k in major:
                followed[k] = self._follow(self._faces[k], grey)
            run = any(box is None for box in followed.values())
        if not run:
            out = []
            for k, box in followed.items():
                face = self._faces[k]
                face.box, face.last_seen = box, i
                out.append([*box, face.score])
            return np.asarray(out, np.float64).reshape(-1, 5), np.ones(len(out), bool)
        return self._detect(i, frame, grey, cut, followed, major)

    # -- A frame the detector runs on ----------------------------------------------------------------

    def _detect(self, i: int, frame: np.ndarray, grey: np.ndarray, cut: bool, followed: dict[int, np.ndarray | None],
                major: set[int]) -> tuple[np.ndarray, np.ndarray]:
        self.detector_runs += 1
        self._last_run = i
        found = np.asarray(self.detector(frame), np.float64).reshape(-1, 5)
        if cut:
            self._faces, followed = [], {}
        pairs = _nearest_pairs([f.box for f in self._faces], found, self.jump)
        matched = {k: d for k, d in pairs}
        kept, out, flags = [], [], []
        for k, face in enumerate(self._faces):
            if k in matched:
                det = found[matched[k]]
                face.box, face.score, face.last_seen = det[:4].copy(), float(det[4]), i
                face.strength = _strength(det)
                face.detections, face.misses, face.lost = face.detections + 1, 0, False
                self._anchor(face, grey)
                kept.append(face)
                continue
            if k in major and face.detections >= self.min_frames and not face.lost and face.misses == 0:
                box = followed[k] if k in followed else self._follow(face, grey)
                if box is not None:  # one miss of the detector: follow on
                    face.box, face.last_seen, face.misses = box, i, 1
                    out.append([*box, face.score])
                    flags.append(True)
                    kept.append(face)
                    continue
            face.lost = True  # kept for `max_gap` frames, with a detection on each, in case it comes back
            kept.append(face)
        taken = set(matched.values())
        for d, det in enumerate(found):
            if d not in taken:
                face = _Face(det[:4].copy(), float(det[4]), _strength(det), 1, i)
                self._anchor(face, grey)
                kept.append(face)
        self._faces = kept
        boxes = np.concatenate([found, np.asarray(out, np.float64).reshape(-1, 5)])
        return boxes, np.array([False] * len(found) + flags, bool)

    def _major(self) -> set[int]:
        """Indices of the faces that could be the main one: strength >= rival x the strongest face in view."""
        best = max((f.strength for f in self._faces if not f.lost), default=0.0)
        return {k for k, f in enumerate(self._faces) if f.strength >= self.rival * best}

    def _pending(self, face: _Face) -> bool:
        return face.lost or face.detections < self.min_frames

    def _scene_cut(self, grey: np.ndarray) -> bool:
        small = cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._thumbnail = self._thumbnail, small
        if previous is None or previous.shape != small.shape:
            return False
        cut = float(np.abs(small - previous).mean()) > self.cut_threshold
        self.cuts += cut
        return cut

    # -- Templates ---------------------------------------------------------------------------------

    def _anchor(self, face: _Face, grey: np.ndarray) -> None:
        """Cuts `face`'s template from the frame it was just detected in (None if too little of it is inside)."""
        x, y, w, h = face.box
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(grey.shape[1], int(round(x + w))), min(grey.shape[0], int(round(y + h)))
        scale = min(1.0, self.template_size / max(w, h, 1.0))
        tw, th = int(round((x1 - x0) * scale)), int(round((y1 - y0) * scale))
        if tw < 4 or th < 4:
            face.template = None
            return
        face.template = cv2.resize(grey[y0:y1, x0:x1], (tw, th), interpolation=cv2.INTER_AREA)
        face.scale, face.offset = scale, (x - x0, y - y0)

    def _follow(self, face: _Face, grey: np.ndarray) -> np.ndarray | None:
        """`face`'s box moved to where its template matches best near its last box; None if it matches badly."""
        if face.template is None:
            return None
        x, y, w, h = face.box
        margin = self.search * max(w, h)
        x0, y0 = max(0, int(math.floor(x - margin))), max(0, int(math.floor(y - margin)))
        x1, y1 = min(grey.shape[1], int(math.ceil(x + w + margin))), min(grey.shape[0], int(math.ceil(y + h + margin)))
        rw, rh = int(round((x1 - x0) * face.scale)), int(round((y1 - y0) * face.scale))
        th, tw = face.template.shape
        if rw < tw or rh < th:
            return None
        region = grey[y0:y1, x0:x1]
        if face.scale < 1.0:
            region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        scores = cv2.matchTemplate(region, face.template, cv2.TM_CCOEFF_NORMED)
        _, peak, _, (px, py) = cv2.minMaxLoc(scores)
        if not (math.isfinite(peak) and peak >= self.threshold):
            return None
        fx = px + _vertex(scores[py, px - 1 : px + 2]) if 0 < px < scores.shape[1] - 1 else float(px)
        fy = py + _vertex(scores[py - 1 : py + 2, px]) if 0 < py < scores.shape[0] - 1 else float(py)
        sx, sy = (x1 - x0) / region.shape[1], (y1 - y0) / region.shape[0]
        return np.array([x0 + fx * sx + face.offset[0], y0 + fy * sy + face.offset[1], w, h], np.float64)


def _strength(detection: np.ndarray) -> float:
    """Box area x detector score of one detection float[5] (x, y, w, h, score)."""
    return float(detection[2] * detection[3] * detection[4])


def _vertex(three: np.ndarray) -> float:
    """Offset (-0.5..0.5) of the top of the parabola through three equally spaced values around a peak."""
    a, b, c = (float(v) for v in three)
    curve = a - 2.0 * b + c
    return 0.0 if curve >= 0 else max(-0.5, min(0.5, 0.5 * (a - c) / curve))


def _nearest_pairs(boxes, detections: np.ndarray, jump: float) -> list[tuple[int, int]]:
    """(box, detection) index pairs, nearest centres first, each at most once, within `jump` box sizes.

    boxes: K float[4] (x, y, w, h); detections: float[D, 5]. The tracker's rule (face_track.link_tracklets).
    """
    pairs = []
    centres = detections[:, :2] + detections[:, 2:4] / 2.0
    for k, (x, y, w, h) in enumerate(boxes):
        dist = np.hypot(centres[:, 0] - (x + w / 2.0), centres[:, 1] - (y + h / 2.0))
        pairs += [(float(dist[d]), k, d) for d in range(len(detections)) if dist[d] <= jump * math.sqrt(w * h)]
    taken_k, taken_d, out = set(), set(), []
    for _, k, d in sorted(pairs):
        if k not in taken_k and d not in taken_d:
            out.append((k, d))
            taken_k.add(k)
            taken_d.add(d)
    return out
