"""The `hard` scenario of the synthetic DFEW release: face and pose complement each other.

`python -m tfds_dfew.synthetic --scenario hard --out DIR` (or `synthetic.generate(...,
scenario="hard")`) writes the same release layout as the easy scenario (tfds_dfew/synthetic.py),
with clips built so that a fusion of face and pose can be told apart from a model that ignores
a modality. By construction:

Complementary modalities.
  * Face-clear classes: happy, sad and neutral keep the easy scenario's distinct expressions.
    Their body motion is drawn from one class-independent mixture of gestures (`GENERIC_GESTURES`),
    so pose says nothing about them beyond what the noisy face landmarks carry.
  * Face-confusable pairs (`FACE_PAIRS`): surprise / fear share a "startled" face (brows up, eyes
    wide, mouth open) and angry / disgust a "hostile" face (brows down and drawn together, lips
    pressed, furrow, nose wrinkle). Within a pair the expression rows differ by
    `PAIR_DIFFERENCE` (a few hundredths of a face half-width in one or two columns), far below the
    person-to-person variation, so the FER2013 mini-Xception (64x64 gray of the whole face crop)
    sees nearly the same face. What tells them apart is the body and hands, which OpenPose carries
    and the frames do not show (the face crop holds the head only; the body is not drawn and the
    gestures keep the hands below or beside the crop):
        surprise  "startle": both hands thrown up beside the head, fast (onset in 4-10% of the
                  clip), open spread hands, shoulders jerk up.
        fear      "cower": hands drawn slowly to the chest, crossed, half-closed, shoulders raised
                  and pulled in, a fast small tremor.
        angry     "pound": fists at chest height beating up and down (2.5-4 beats per clip, large
                  amplitude), one or both arms.
        disgust   "fend": one open hand pushed slowly out in front of the chest, palm out, while
                  the torso leans away and the shoulder line tilts.
    A pair clip shows its own gesture with probability `OWN_GESTURE_PROB`, else one from the
    generic mixture (which also holds each pair gesture at 5%), so pose alone cannot reach the
    ceiling either: it cannot tell the face-clear classes apart, and the face cannot split a pair.
  * Sound (Clip/original/<id>.mp4, tfds_dfew/synthetic_audio.py) is a third, imperfect cue: its
    prosody separates the pairs (angry loud, fast, accented vs disgust quiet, slow, falling;
    surprise a rising jump vs fear high and trembling; ~0.9 pair accuracy from pitch / energy
    statistics) and tells the face-clear classes apart only weakly (7 classes ~0.45-0.5).
  * Face landmarks in the OpenPose output are those of an in-the-wild detector: per-frame jitter
    (`LANDMARK_JITTER`) and a per-clip, per-point bias (`LANDMARK_BIAS`) in face half-widths,
    dropped under occluders and on strongly turned heads.

DFEW-like difficulty.
  * Class frequencies (`CLASS_PROBS`) follow DFEW's 11,697 single-labelled clips (Happy 2445,
    Sad 1894, Neutral 2669, Angry 2173, Surprise 1469, Disgust 145, Fear 902) except for a floor:
    Disgust (1.2% in DFEW) is raised to `DISGUST_FLOOR` (5.5%), the others scaled down to make
    room, so that with the default 1,000 labelled clips every class keeps at least 10 test clips
    in every fold (Disgust 55 clips, 11 per fold; Fear 74). Clips without a face (no frame folder,
    3%) are taken from the four most frequent classes only, so the floor survives them.
  * Expression intensity is weak (peak 0.15-0.4) in `WEAK_FRAC` of the clips, 0.55-1.0 otherwise.
  * Label noise: `LABEL_NOISE` (4%) of the single-labelled clips are drawn as another class
    (uniform over the other six) than their CSV label; the annotation votes follow the CSV
    label (the annotators' error). `generate` reports them as `noisy_ids`.
  * Off-frontal heads in `OFF_FRONTAL_FRAC` of the clips (yaw 17-34 degrees, drifting); an
    occluder (a hand over the mouth, an object over one eye, dark glasses) in `OCCLUDED_FRAC` of
    the clips, over part of the clip or all of it. Missing keypoints: points outside the source
    frame (hands at rest, hips: a waist-up shot), hands not found in some frames, face points
    under occluders or on turned heads, single dropped points, a few frames with nobody found,
    and now and then a second, smaller person.
  * Unlabelled clips: multi-labelled clips (annotation label 0, in no CSV, a 40-60% blend of two
    classes, gesture drawn from one of them by its weight) number `MULTI_FRAC` (35%) of the
    listed single-labelled clips: DFEW's share of the clips with frames (4,209 of 15,906, 26.5%).

Size: by default 1,000 single-labelled clips + 350 multi-labelled, 112 px, 16-32 frames per clip
(1,320 clips with frames, ~29,000 frames), which `generate --workers 2` wrote in 49 s on 2 cores
(80-90 s while other jobs loaded them).

Measured (fold 1, the last checkpoint of `python -m fer_jax.train --config configs/demo.py:<setup>`,
600 steps, after `tfds_dfew.build --config frames112_pose` and the `mini_xception_fer` extraction;
UAR / WAR in %): seed 0: face 57.7 / 66.2, face+pose 76.3 / 77.1, pose 55.3 / 51.6 (192 test clips:
39 31 43 33 24 11 14 per class); seed 1: face 53.5 / 61.2, face+pose 73.4 / 75.5, pose 50.4 / 46.4.

OpenPose coordinates are pixels of the source video frame (16:9, waist-up, the face crop a
window of it), as OpenPose run on the original clip would give; keypoint normalisation removes
the offset and scale. Random streams per clip: `clip_rng(seed, k, 0)` the frames (`draw_clip`),
1 the OpenPose JSON, 2 the votes (as in the easy scenario), 3 the scenario's per-clip parameters
(`clip_params`: gesture, intensity, yaw, occluder, framing), drawn in an order that does not
depend on the class, so two classes with the same seed differ only in what the class sets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfds_dfew import synthetic_draw as base
from tfds_dfew import synthetic_body

HAPPY, SAD, NEUTRAL, ANGRY, SURPRISE, DISGUST, FEAR = range(7)

# ----------------------------------------------------------------------------- the release
DFEW_CLASS_COUNTS = (2445, 1894, 2669, 2173, 1469, 145, 902)
DISGUST_FLOOR = 0.055


def _class_probs() -> tuple:
    p = np.asarray(DFEW_CLASS_COUNTS, np.float64)
    p /= p.sum()
    rest = np.delete(np.arange(7), DISGUST)
    p[rest] *= (1.0 - DISGUST_FLOOR) / p[rest].sum()
    p[DISGUST] = DISGUST_FLOOR
    return tuple(float(v) for v in p)


CLASS_PROBS = _class_probs()
DEFAULT_CLIPS = 1000
DEFAULT_FRAME_SIZE = 112
MULTI_FRAC = 0.35  # multi-labelled clips per listed single-labelled clip (DFEW: 4209 / (11697 + 362))
MISSING_FRAC = 0.03  # DFEW: 362 of 12,059 listed clips have no face
SHORT_FRAC = 0.05
MAX_FRAMES = 32
LABEL_NOISE = 0.04
MISSING_CLASSES = (HAPPY + 1, SAD + 1, NEUTRAL + 1, ANGRY + 1)  # official labels
DEFAULTS = {"num_clips": DEFAULT_CLIPS, "frame_size": DEFAULT_FRAME_SIZE, "multi_frac": MULTI_FRAC,
            "missing_frac": MISSING_FRAC, "short_frac": SHORT_FRAC, "max_frames": MAX_FRAMES,
            "class_probs": CLASS_PROBS, "label_noise": LABEL_NOISE}

# ----------------------------------------------------------------------------- faces
FACE_PAIRS = ((SURPRISE, FEAR), (ANGRY, DISGUST))
# Columns as synthetic._EXPRESSIONS: corner open width asym press ulr brow inner inward eye cheek
# furrow wrinkle.
_STARTLED = np.array([-0.03, 0.26, -0.06, 0.0, 0.0, 0.0, 0.16, 0.05, 0.02, 0.55, 0.0, 0.12, 0.0])
_HOSTILE = np.array([-0.04, 0.01, -0.12, 0.0, 0.62, 0.0, -0.09, -0.05, 0.06, -0.40, 0.30, 0.70, 0.50])
# The little that differs within a pair (added to the first class, subtracted from the second).
PAIR_DIFFERENCE = {
    (SURPRISE, FEAR): np.array([0.0, 0.0, -0.02, 0.0, 0.0, 0.0, 0.0, -0.01, 0.0, 0.0, 0.0, 0.0, 0.0]),
    (ANGRY, DISGUST): np.array([0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.03]),
}


def _expressions() -> np.ndarray:
    table = base._EXPRESSIONS.copy()
    for (a, b), shared in zip(FACE_PAIRS, (_STARTLED, _HOSTILE)):
        table[a] = shared + PAIR_DIFFERENCE[(a, b)]
        table[b] = shared - PAIR_DIFFERENCE[(a, b)]
    return table


EXPRESSIONS = _expressions()
WEAK_FRAC = 0.35
OFF_FRONTAL_FRAC = 0.3
OCCLUDED_FRAC = 0.25
LANDMARK_JITTER = 0.03  # face half-widths, per point per frame
LANDMARK_BIAS = 0.03  # face half-widths, per point per clip

# ----------------------------------------------------------------------------- gestures
CLASS_GESTURE = {SURPRISE: "startle", FEAR: "cower", ANGRY: "pound", DISGUST: "fend"}
OWN_GESTURE_PROB = 0.8
# Gestures are defined in tfds_dfew/synthetic_body.py.
GENERIC_GESTURES = {"rest": 0.35, "talk": 0.30, "fold": 0.15, "startle": 0.05, "cower": 0.05,
                    "pound": 0.05, "fend": 0.05}
GESTURES = tuple(GENERIC_GESTURES)
assert set(GESTURES) == set(synthetic_body.GESTURES)

@dataclasses.dataclass(frozen=True)
class ClipParams:
    """What the hard scenario decides for one clip besides its frames' own draws."""

    gesture: str
    gesture_class: int  # the class whose gesture rules applied (blend: one of its two classes)
    peak: float  # expression intensity at the apex
    weak: bool
    yaw: np.ndarray  # float[T] radians
    occluders: list  # T entries: None or [(polygon face-local float[n, 2], rgb)]
    motion: dict  # gesture timing and shape numbers (see synthetic_body._arm_targets)
    framing: tuple  # (top, bottom, x fraction) of the source frame around the face


def _gesture_class(label, u: float) -> int:
    if np.ndim(label) == 0:
        return int(label)
    w = base._class_weights(label)
    return int(min(np.searchsorted(np.cumsum(w), u * w.sum(), side="right"), 6))


def clip_params(rng: np.random.Generator, label, num_frames: int) -> ClipParams:
    """The clip's gesture, intensity, head turn, occluder and framing, drawn from `rng`
    (`clip_rng(seed, k, 3)`) in an order that does not depend on `label`."""
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    u_own, u_blend = rng.uniform(), rng.uniform()
    generic = GESTURES[int(rng.choice(len(GESTURES), p=list(GENERIC_GESTURES.values())))]
    weak = bool(rng.uniform() < WEAK_FRAC)
    weak_peak, strong_peak = rng.uniform(0.15, 0.4), rng.uniform(0.55, 1.0)
    off = rng.uniform() < OFF_FRONTAL_FRAC
    yaw0 = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6) if off else rng.uniform(-0.12, 0.12)
    yaw = yaw0 + rng.uniform(-0.25, 0.25) * (t - 0.5) + rng.uniform(0, 0.05) * np.sin(
        2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi))
    occluders = _draw_occluders(rng, t)
    motion = {
        "t_on": rng.uniform(0.05, 0.4), "amp": rng.uniform(0.7, 1.0), "side": rng.choice([-1, 1]),
        "two_hands": bool(rng.uniform() < 0.5), "fast": rng.uniform(0.04, 0.10),
        "slow": rng.uniform(0.25, 0.45), "medium": rng.uniform(0.08, 0.2),
        "release": rng.uniform(0.0, 0.5), "beats": rng.uniform(2.5, 4.0),
        "beat_amp": rng.uniform(0.9, 1.3), "tremor_f": rng.uniform(8.0, 12.0),
        "tremor_amp": rng.uniform(0.12, 0.2), "talk_f": rng.uniform(0.8, 2.0),
        "phase": rng.uniform(0, 2 * np.pi, 4), "curl": rng.uniform(0.2, 0.6),
        "sway": rng.uniform(0.05, 0.2), "sway_f": rng.uniform(0.3, 1.0),
    }
    framing = (rng.uniform(2.0, 3.0), rng.uniform(5.0, 7.0), rng.uniform(0.3, 0.7))

    cls = _gesture_class(label, u_blend)
    gesture = CLASS_GESTURE[cls] if (cls in CLASS_GESTURE and u_own < OWN_GESTURE_PROB) else generic
    return ClipParams(gesture=gesture, gesture_class=cls, peak=float(weak_peak if weak else strong_peak),
                      weak=weak, yaw=yaw, occluders=occluders, motion=motion, framing=framing)


def _draw_occluders(rng: np.random.Generator, t: np.ndarray) -> list:
    occluded = rng.uniform() < OCCLUDED_FRAC
    kind = ("hand", "object", "glasses")[int(rng.integers(3))]
    start, length = rng.uniform(0.0, 0.6), rng.uniform(0.25, 0.7)
    side = rng.choice([-1.0, 1.0])
    skin = base._SKIN_TONES[rng.integers(len(base._SKIN_TONES))] * rng.uniform(0.85, 1.0)
    dark = rng.uniform(10, 80, 3)
    if not occluded:
        return [None] * len(t)
    if kind == "hand":  # over the mouth and chin
        poly = base._UNIT_CIRCLE * [0.62, 0.38] + [side * 0.08, 0.78]
        colour = skin
    elif kind == "object":  # over one eye and brow, in from the side
        poly = np.array([[side * 1.3, -0.75], [side * 0.05, -0.65], [side * 0.0, 0.05],
                         [side * 1.3, 0.1]])
        colour = dark
    else:  # dark glasses over both eyes, the whole clip
        poly = np.array([[-0.68, -0.36], [0.68, -0.36], [0.62, -0.08], [0.1, -0.1],
                         [-0.1, -0.1], [-0.62, -0.08]])
        colour = dark * 0.5
        start, length = 0.0, 1.0
    on = (t >= start) & (t <= start + length)
    return [[(poly, colour)] if o else None for o in on]


def draw(seed: int, clip_id, label, num_frames: int, frame_size: int, openpose: bool = True):
    """One hard-scenario clip: (frames uint8[T, S, S, 3], OpenPose documents or None, params)."""
    number = int(clip_id)
    params = clip_params(base.clip_rng(seed, number, 3), label, num_frames)
    frames, face_kp, meta = base.draw_clip(
        base.clip_rng(seed, number, 0), label, num_frames, frame_size, intensity=params.peak,
        expressions=EXPRESSIONS, yaw=params.yaw, occluders=params.occluders)
    docs = None
    if openpose:
        docs = synthetic_body.openpose_frames(base.clip_rng(seed, number, 1), face_kp, meta, params,
                                              frame_size, LANDMARK_JITTER, LANDMARK_BIAS)
    return frames, docs, params
