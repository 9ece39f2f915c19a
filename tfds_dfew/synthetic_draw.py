"""Drawing the synthetic DFEW clips: procedural faces whose expression follows the class.

The shared primitives of every synthetic scenario (tfds_dfew.synthetic writes the release tree;
synthetic_hard and synthetic_body add the hard scenario's heads, occluders and gestures).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
NUM_CLASSES = 7
# Mild imbalance, every class >= 8% (the demo computes a UAR on a few hundred clips).
DEFAULT_CLASS_PROBS = (0.18, 0.15, 0.18, 0.15, 0.12, 0.10, 0.12)


# ----------------------------------------------------------------------------- expressions
# Columns of the expression table: each class's displacement at intensity 1, in face-local
# units (face half-width = 1, y pointing down). Intensity 0 is the same face for every class.
_CORNER, _OPEN, _WIDTH, _ASYM, _PRESS, _ULR, _BROW, _INNER, _INWARD, _EYE, _CHEEK, _FURROW, \
    _WRINKLE = range(13)
_EXPRESSIONS = np.array(
    [
        # corner  open  width  asym  press  ulr   brow  inner inward  eye   cheek furrow wrinkle
        [0.17, 0.07, 0.20, 0.00, 0.00, 0.00, 0.02, 0.00, 0.00, -0.30, 0.90, 0.00, 0.00],  # happy
        [-0.16, 0.00, -0.06, 0.00, 0.20, 0.00, -0.02, 0.16, 0.03, -0.20, 0.00, 0.45, 0.00],  # sad
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # neutral
        [-0.04, 0.00, -0.15, 0.00, 0.85, 0.00, -0.10, -0.07, 0.07, -0.35, 0.10, 0.90, 0.15],  # angry
        [0.00, 0.36, -0.24, 0.00, 0.00, 0.00, 0.18, 0.02, 0.00, 0.60, 0.00, 0.00, 0.00],  # surprise
        [-0.03, 0.03, -0.08, 0.13, 0.40, 0.07, -0.07, -0.03, 0.04, -0.45, 0.55, 0.45, 0.95],  # disgust
        [-0.06, 0.17, 0.15, 0.00, 0.00, 0.00, 0.14, 0.08, 0.05, 0.50, 0.00, 0.30, 0.00],  # fear
    ],
    dtype=np.float64,
)

_UNIT_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 48, endpoint=False)),
                         np.sin(np.linspace(0, 2 * np.pi, 48, endpoint=False))], axis=1)

_SKIN_TONES = np.array([(255, 224, 196), (241, 194, 167), (236, 188, 150), (224, 172, 138),
                        (210, 160, 120), (198, 134, 102), (161, 102, 72), (114, 72, 50)], float)
_HAIR_COLOURS = np.array([(28, 24, 20), (60, 42, 28), (95, 62, 36), (160, 120, 70),
                          (205, 175, 115), (140, 64, 32), (150, 150, 150)], float)
_IRIS_COLOURS = np.array([(45, 30, 22), (95, 62, 32), (70, 110, 160), (80, 120, 80)], float)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _class_weights(label) -> np.ndarray:
    """label: class index 0..6, or 7 non-negative weights (a blend, for multi-labelled clips)."""
    if np.ndim(label) == 0:
        index = int(label)
        if not 0 <= index < NUM_CLASSES:
            raise ValueError(f"label must be a class index 0..6, got {label}")
        weights = np.zeros(NUM_CLASSES)
        weights[index] = 1.0
        return weights
    weights = np.asarray(label, dtype=np.float64)
    if weights.shape != (NUM_CLASSES,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"label weights must be 7 non-negative numbers, got {label}")
    return weights / weights.sum()


@dataclass(frozen=True)
class _Person:
    """Class-independent look of one clip's face (local units) and its colours (RGB 0..255)."""

    face_ry: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h_up: float
    eye_h_low: float
    brow_gap: float
    brow_thick: float
    brow_arch: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_low: float
    gaze: tuple
    hair_style: int  # 0 bald, 1 short, 2 long
    hairline: float
    asym_sign: float
    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    clothes: np.ndarray


def _draw_person(rng: np.random.Generator) -> _Person:
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-8, 8, 3)
    skin = np.clip(skin, 40, 255)
    lip = np.clip(skin * np.array([0.80, 0.52, 0.56]) + rng.uniform(-8, 8, 3), 0, 255)
    hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.uniform(-10, 10, 3),
                   0, 255)
    brow = np.minimum(hair, skin * 0.45) * rng.uniform(0.7, 1.0)
    iris = np.clip(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.uniform(-10, 10, 3),
                   0, 255)
    clothes = rng.uniform(20, 235, 3)
    return _Person(
        face_ry=rng.uniform(1.22, 1.38),
        eye_y=rng.uniform(-0.26, -0.18),
        eye_dx=rng.uniform(0.37, 0.43),
        eye_w=rng.uniform(0.15, 0.19),
        eye_h_up=rng.uniform(0.065, 0.085),
        eye_h_low=rng.uniform(0.04, 0.055),
        brow_gap=rng.uniform(0.17, 0.23),
        brow_thick=rng.uniform(0.045, 0.07),
        brow_arch=rng.uniform(0.03, 0.07),
        nose_y=rng.uniform(0.24, 0.32),
        nose_w=rng.uniform(0.9, 1.15),
        mouth_y=rng.uniform(0.64, 0.72),
        mouth_w=rng.uniform(0.27, 0.33),
        lip_up=rng.uniform(0.045, 0.065),
        lip_low=rng.uniform(0.06, 0.085),
        gaze=(rng.uniform(-0.035, 0.035), rng.uniform(-0.015, 0.015)),
        hair_style=int(rng.choice(3, p=[0.1, 0.55, 0.35])),
        hairline=rng.uniform(-0.95, -0.78),
        asym_sign=float(rng.choice([-1.0, 1.0])),
        skin=skin, lip=lip, hair=hair, brow=brow, iris=iris, clothes=clothes,
    )


def _face_geometry(p: _Person, e: np.ndarray, talk: float, blink: float) -> dict:
    """Face-local curves and the 70 OpenPose face points for expression displacement `e`.

    e: float[13] (class displacement already scaled by intensity). Returns a dict of
    float[n, 2] polylines plus 'landmarks': float[70, 2] (68 iBUG points + 2 pupils).
    """
    g = {}
    # Jaw: 17 points on the face ellipse from image-left at eye level round the chin.
    ry = p.face_ry
    ang = np.deg2rad(190.0 - np.arange(17) * (200.0 / 16.0))
    jaw = np.stack([np.cos(ang), ry * np.sin(ang)], axis=1)

    # Brows: 5 points each, image-left brow listed outer -> inner, image-right inner -> outer.
    brows = []
    for side in (-1.0, 1.0):
        inner_x = 0.12 - e[_INWARD]
        outer_x = 0.64 - 0.4 * e[_INWARD]
        u = np.linspace(0.0, 1.0, 16)  # 0 = inner, 1 = outer
        x = inner_x + (outer_x - inner_x) * u
        base = p.eye_y - p.brow_gap - e[_BROW]
        y = base - e[_INNER] * (1.0 - u) - p.brow_arch * np.sin(np.pi * (0.35 + 0.65 * u))
        y = y + 0.04 * u * u
        centre = np.stack([side * x, y], axis=1)
        # Thickness tapers to the outer end.
        half = 0.5 * p.brow_thick * (1.0 - 0.45 * u)[:, None]
        poly = np.concatenate([centre + [0, -1] * half, (centre + [0, 1] * half)[::-1]])
        g[f"brow{int(side)}"] = poly
        brows.append(centre[np.linspace(0, 15, 5).round().astype(int)])
    brow_r = brows[0][::-1]  # image-left: outer -> inner
    brow_l = brows[1]  # image-right: inner -> outer

    # Eyes: lids between the corners; openness from the class, cheek raise and blinks.
    open_up = max(0.06, 1.0 + e[_EYE]) * blink
    open_low = max(0.05, 1.0 + 0.6 * e[_EYE] - 0.55 * e[_CHEEK]) * blink
    eye_pts = []
    for side in (-1.0, 1.0):
        cx, cy = side * p.eye_dx, p.eye_y
        u = np.linspace(-1.0, 1.0, 15)
        prof = (1.0 - u * u) ** 0.8
        x = cx + p.eye_w * u
        upper = np.stack([x, cy - p.eye_h_up * open_up * prof - 0.01 * (1 - u * u)], axis=1)
        lower = np.stack([x, cy + p.eye_h_low * open_low * prof], axis=1)
        g[f"eye{int(side)}_upper"] = upper
        g[f"eye{int(side)}_lower"] = lower
        g[f"eye{int(side)}_centre"] = np.array([cx + p.gaze[0], cy + p.gaze[1]])
        # Both eyes clockwise from the image-left corner: 36 (outer) / 42 (inner) corner,
        # two upper-lid points, the image-right corner, two lower-lid points.
        eye_pts.append(np.array([upper[0], upper[5], upper[9], upper[-1], lower[9], lower[5]]))

    # Nose: bridge 27..30, base 31..35.
    bridge = np.stack([np.zeros(4), np.linspace(p.eye_y + 0.01, p.nose_y, 4)], axis=1)
    base_x = np.array([-0.13, -0.065, 0.0, 0.065, 0.13]) * p.nose_w
    base = np.stack([base_x, p.nose_y + 0.07 - 0.025 * (1 - np.abs(base_x) / 0.14)], axis=1)
    g["nose_base"] = base
    g["nostrils"] = np.array([[-0.065 * p.nose_w, p.nose_y + 0.055],
                              [0.065 * p.nose_w, p.nose_y + 0.055]])

    # Mouth: centre line lifted at the corners (smile/frown), one side lifted (sneer), opened
    # (class + talking), lips thinned (press), upper lip raised (disgust).
    w = p.mouth_w * (1.0 + e[_WIDTH])
    xs = np.linspace(-1.0, 1.0, 25)
    x = w * xs
    side_lift = np.clip(xs * p.asym_sign, 0, None) ** 2
    centre_y = p.mouth_y - e[_CORNER] * xs ** 2 - e[_ASYM] * side_lift
    open_total = max(0.0, e[_OPEN] + talk)
    env = np.sqrt(np.clip(1.0 - xs ** 2, 0.0, None))
    gap = 0.5 * open_total * env ** 0.7
    raise_up = e[_ULR] * env * (0.5 + 0.5 * np.clip(xs * p.asym_sign, 0, None))
    thin = 1.0 - 0.7 * min(1.0, e[_PRESS])
    inner_up_y = centre_y - gap - raise_up
    inner_low_y = centre_y + gap
    bow = 0.012 * np.exp(-((np.abs(xs) - 0.22) / 0.12) ** 2)  # cupid's bow peaks
    outer_up_y = inner_up_y - p.lip_up * thin * (0.35 + 0.65 * env) - bow
    outer_low_y = inner_low_y + p.lip_low * thin * (0.3 + 0.7 * env)
    g["lip_outer"] = np.concatenate([np.stack([x, outer_up_y], 1),
                                     np.stack([x, outer_low_y], 1)[::-1]])
    g["lip_inner_upper"] = np.stack([x, inner_up_y], 1)
    g["lip_inner_lower"] = np.stack([x, inner_low_y], 1)
    g["mouth_open"] = float(np.max(inner_low_y - inner_up_y))

    def at(ys, frac):
        return np.array([np.interp(frac, xs, x), np.interp(frac, xs, ys)])

    outer = [at(centre_y, -1.0)] + [at(outer_up_y, f) for f in (-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3)]
    outer += [at(centre_y, 1.0)] + [at(outer_low_y, f) for f in (2 / 3, 1 / 3, 0, -1 / 3, -2 / 3)]
    inner = [at(centre_y, -0.85)] + [at(inner_up_y, f) for f in (-0.4, 0.0, 0.4)]
    inner += [at(centre_y, 0.85)] + [at(inner_low_y, f) for f in (0.4, 0.0, -0.4)]

    # Cheek folds, brow furrow and nose wrinkle: strokes whose darkness follows the class.
    g["folds"] = [np.array([[s * 0.17 * p.nose_w, p.nose_y + 0.02],
                            [s * (w + 0.07), 0.5 * (p.nose_y + p.mouth_y) + 0.08],
                            [s * (w + 0.06), p.mouth_y + 0.06]]) for s in (-1.0, 1.0)]
    fy = p.eye_y - p.brow_gap - e[_BROW]
    g["furrow"] = [np.array([[s * 0.05, fy - 0.09], [s * 0.04, fy + 0.07]]) for s in (-1.0, 1.0)]
    g["wrinkle"] = [np.array([[-0.07, y], [0.07, y]]) for y in (p.eye_y + 0.10, p.eye_y + 0.16)]

    pupils = [g["eye-1_centre"], g["eye1_centre"]]
    landmarks = np.concatenate([jaw, brow_r, brow_l, bridge, base, eye_pts[0], eye_pts[1],
                                np.array(outer), np.array(inner), np.array(pupils)])
    g["landmarks"] = landmarks
    return g


def _time_course(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, float]:
    """Expression envelope float[T] in [0, 1] (onset -> apex -> partial offset) and its peak."""
    t0 = rng.uniform(0.0, 0.35)
    rise = rng.uniform(0.15, 0.35)
    hold = rng.uniform(0.10, 0.30)
    decay = rng.uniform(0.15, 0.40)
    residual = rng.uniform(0.30, 0.70)
    peak = rng.uniform(0.6, 1.0)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    up = _smoothstep((t - t0) / rise)
    down = 1.0 - (1.0 - residual) * _smoothstep((t - t0 - rise - hold) / decay)
    return up * down, peak


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A varied static background: float32[S, S, 3], gradient + soft blobs + a few panels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(10, 245, 3), rng.uniform(10, 245, 3)
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a), 0, 1)[..., None]
    bg = c0 * (1 - t) + c1 * t
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.35)
        colour = rng.uniform(0, 255, 3)
        m = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        bg = bg * (1 - 0.7 * m) + colour * 0.7 * m
    for _ in range(int(rng.integers(0, 3))):
        x0, y0 = rng.uniform(0, 0.9, 2)
        x1, y1 = x0 + rng.uniform(0.05, 0.4), y0 + rng.uniform(0.05, 0.5)
        m = ((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1))[..., None]
        bg = np.where(m, bg * 0.4 + rng.uniform(0, 255, 3) * 0.6, bg)
    return bg.astype(np.float32)


def _motion(rng: np.random.Generator, t: np.ndarray, amp: float) -> np.ndarray:
    freq, phase, drift = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * np.pi), rng.uniform(-1, 1)
    return amp * (np.sin(2 * np.pi * freq * t + phase) + 0.5 * drift * t)


def _turn_head(pts: np.ndarray, yaw: float, ry: float) -> np.ndarray:
    """Face-local points float[n, 2] of a head turned by `yaw` radians (a cheap projection).

    A point's depth is its height on the head ellipsoid (0 on the outline, 0.75 at the centre):
    x -> x cos(yaw) + depth sin(yaw); y is kept. Points outside the face ellipse (hair, neck,
    clothes) have depth 0 and only narrow.
    """
    x, y = pts[..., 0], pts[..., 1]
    depth = 1.0 - x * x - (y * (1.0 / ry)) ** 2
    np.maximum(depth, 0.0, out=depth)
    out = pts.copy()
    out[..., 0] = x * math.cos(yaw) + 0.75 * math.sin(yaw) * np.sqrt(depth)
    return out


def _poly(draw: ImageDraw.ImageDraw, pts: np.ndarray, colour) -> None:
    draw.polygon(pts.ravel().tolist(), fill=colour)


def _line(draw: ImageDraw.ImageDraw, pts: np.ndarray, colour, width: int) -> None:
    draw.line(pts.ravel().tolist(), fill=colour, width=width, joint="curve")


def _rgb(c) -> tuple:
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def draw_clip(rng: np.random.Generator, label, num_frames: int, frame_size: int = 224, *,
              intensity: float | None = None, expressions: np.ndarray | None = None,
              yaw: np.ndarray | None = None, occluders: Sequence | None = None):
    """Draws one clip of a face showing class `label`.

    Args:
      rng: the clip's own generator (everything random is drawn from it, in an order that does
        not depend on the label: same rng state + intensity 0 gives identical frames for every
        class).
      label: class index 0..6 (happy, sad, neutral, angry, surprise, disgust, fear; official
        label - 1), or float[7] weights for a blend of classes.
      num_frames: T >= 1.
      frame_size: S, frames are S x S.
      intensity: overrides the clip's random peak expression intensity (0 = no expression).
      expressions: float[7, 13] expression table (each class's displacement at intensity 1);
        default the easy scenario's `_EXPRESSIONS`.
      yaw: float[T] head turn per frame in radians (0 = frontal): face-local points move
        sideways with their depth on the head ellipsoid, the outline narrows. None = frontal.
      occluders: T entries, each None or a list of (polygon float[n, 2] in face-local units,
        RGB) drawn over the face in that frame (a hand, an object, glasses).

    Returns:
      frames: uint8[T, S, S, 3] RGB.
      face_keypoints: float32[T, 70, 3]: (x, y, confidence) in pixels of the S x S frame, the
        OpenPose face layout (68 iBUG points + 2 pupils), confidences in (0.3, 1].
      meta: dict with 'intensity' float32[T] (expression strength per frame), 'peak_intensity',
        'apex_frame', 'face_center' float32[T, 2], 'face_scale' float32[T] (face half-width in
        px), 'face_angle' float32[T] (radians), 'face_axes' (1, ry) in face half-widths,
        'blink' float32[T] (1 = eyes fully open), 'mouth_y' and 'mouth_w' (the neutral mouth's
        height and half-width in face half-widths), 'skin_rgb' float32[3], 'yaw' float32[T].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frame_size < 32:
        raise ValueError(f"frame_size must be >= 32 px, got {frame_size}")
    weights = _class_weights(label)
    size = int(frame_size)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)

    # --- everything class-independent, drawn in a fixed order ---
    person = _draw_person(rng)
    envelope, peak = _time_course(rng, num_frames)
    if intensity is not None:
        peak = float(intensity)
    strength = (envelope * peak).astype(np.float64)
    talk_amp, talk_f, talk_ph = rng.uniform(0.0, 0.035), rng.uniform(1.5, 4.0), rng.uniform(0, 6.3)
    talk = talk_amp * (0.5 + 0.5 * np.sin(2 * np.pi * talk_f * t + talk_ph))
    blink = np.ones(num_frames)
    frame_idx = np.arange(num_frames)
    for centre in rng.uniform(0, max(num_frames - 1, 1), int(rng.integers(0, 3))):
        blink *= 1.0 - 0.93 * np.exp(-(((frame_idx - centre) / 0.8) ** 2))
    # Face-aligned crops (as DFEW's): the face fills most of the frame and moves a little.
    cx = size * (0.5 + rng.uniform(-0.025, 0.025)) + _motion(rng, t, size * rng.uniform(0, 0.015))
    cy = size * (0.47 + rng.uniform(-0.02, 0.02)) + _motion(rng, t, size * rng.uniform(0, 0.015))
    scale = size * rng.uniform(0.39, 0.42) * (1.0 + _motion(rng, t, rng.uniform(0, 0.025)))
    angle = rng.uniform(-0.06, 0.06) + _motion(rng, t, rng.uniform(0, 0.04))
    background = _background(rng, size)
    light_dir = rng.uniform(0, 2 * np.pi)
    light_k = rng.uniform(0.0, 0.35)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gain = (1.0 + light_k * (xx * np.cos(light_dir) + yy * np.sin(light_dir)))[..., None]
    gain = (gain * rng.uniform(0.65, 1.2) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    flicker = 1.0 + _motion(rng, t, rng.uniform(0, 0.03))
    noise_sigma = rng.uniform(1.5, 7.0)
    conf_base = rng.uniform(0.6, 0.95)
    conf = np.clip(conf_base + rng.normal(0, 0.06, (num_frames, 70))
                   - 0.08 * (np.arange(70) < 17), 0.31, 1.0)

    # --- the class ---
    table = _EXPRESSIONS if expressions is None else np.asarray(expressions, np.float64)
    if table.shape != _EXPRESSIONS.shape:
        raise ValueError(f"expressions must be float{list(_EXPRESSIONS.shape)}, got {table.shape}")
    delta = weights @ table
    turn = np.zeros(num_frames) if yaw is None else np.asarray(yaw, np.float64).reshape(num_frames)

    bg_img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    keypoints = np.empty((num_frames, 70, 3), np.float32)
    skin, lip, p = person.skin, person.lip, person
    ry = p.face_ry
    for f in range(num_frames):
        e = delta * strength[f]
        geo = _face_geometry(p, e, float(talk[f]), float(blink[f]))
        c, s, a = np.array([cx[f], cy[f]]), float(scale[f]), float(angle[f])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s

        def tf(pts, turn_f=float(turn[f])):
            pts = np.asarray(pts, dtype=np.float64)
            if turn_f:
                pts = _turn_head(pts, turn_f, ry)
            return pts @ rot.T + c

        def px(v):
            return max(1, int(round(v * s)))

        img = bg_img.copy()
        d = ImageDraw.Draw(img)
        # Long hair behind the head, body, neck.
        if p.hair_style == 2:
            _poly(d, tf(np.concatenate([_UNIT_CIRCLE[24:] * [1.2, ry * 1.1] + [0, -0.05],
                                        [[1.25, 1.9], [-1.25, 1.9]]])), _rgb(p.hair))
        _poly(d, tf([[-0.55, 1.55], [0.55, 1.55], [2.4, 2.0], [2.8, 4.5], [-2.8, 4.5],
                     [-2.4, 2.0]]), _rgb(p.clothes))
        _poly(d, tf([[-0.42, 0.7], [0.42, 0.7], [0.46, 1.75], [0, 1.9], [-0.46, 1.75]]),
              _rgb(skin * 0.85))
        # Short hair behind the head, ears, face.
        if p.hair_style == 1:
            _poly(d, tf(_UNIT_CIRCLE * [1.07, ry * 1.04] + [0, -0.08]), _rgb(p.hair))
        for side in (-1.0, 1.0):
            _poly(d, tf(_UNIT_CIRCLE * [0.12, 0.22] + [side * 0.98, -0.05]), _rgb(skin * 0.9))
        _poly(d, tf(_UNIT_CIRCLE * [1.0, ry]), _rgb(skin))
        if p.hair_style > 0:
            hrx, hry, hcy = (1.07, ry * 1.04, -0.08)
            arc = np.linspace(np.pi + 0.45, 2 * np.pi - 0.45, 24)
            cap = np.stack([hrx * np.cos(arc), hcy + hry * np.sin(arc)], 1)
            hx = np.linspace(cap[-1, 0], cap[0, 0], 16)
            line = np.stack([hx, p.hairline + 0.32 * hx ** 2], 1)
            _poly(d, tf(np.concatenate([cap, line])), _rgb(p.hair))
        # Nose.
        for side in (-1.0, 1.0):
            _line(d, tf([[side * 0.07, p.eye_y + 0.08], [side * 0.10, p.nose_y - 0.03]]),
                  _rgb(skin * 0.88), px(0.025))
        _line(d, tf(geo["nose_base"]), _rgb(skin * 0.75), px(0.025))
        for n in geo["nostrils"]:
            _poly(d, tf(_UNIT_CIRCLE * [0.035, 0.018] + n), _rgb(skin * 0.45))
        # Class-driven strokes: darkness scales with the expression, invisible at intensity 0.
        for key, amount, depth in (("folds", e[_CHEEK], 0.30), ("furrow", e[_FURROW], 0.35),
                                   ("wrinkle", e[_WRINKLE], 0.30)):
            colour = _rgb(skin * (1.0 - depth * min(1.0, max(0.0, amount))))
            for stroke in geo[key]:
                _line(d, tf(stroke), colour, px(0.03))
        # Eyes: sclera, iris, pupil, then skin over whatever lies outside the lids.
        for side in (-1, 1):
            up, low = geo[f"eye{side}_upper"], geo[f"eye{side}_lower"]
            _poly(d, tf(np.concatenate([up, low[::-1]])), (238, 236, 230))
            ctr = geo[f"eye{side}_centre"]
            _poly(d, tf(_UNIT_CIRCLE * 0.085 + ctr), _rgb(p.iris))
            _poly(d, tf(_UNIT_CIRCLE * 0.035 + ctr), (12, 10, 10))
            lid_up = np.concatenate([up, (up + [0, -0.13])[::-1]])
            lid_low = np.concatenate([low, (low + [0, 0.12])[::-1]])
            _poly(d, tf(lid_up), _rgb(skin))
            _poly(d, tf(lid_low), _rgb(skin))
            _line(d, tf(up), _rgb(p.brow * 0.6), px(0.03))
        # Brows.
        for side in (-1, 1):
            _poly(d, tf(geo[f"brow{side}"]), _rgb(p.brow))
        # Mouth: lips, opening, teeth, seam.
        _poly(d, tf(geo["lip_outer"]), _rgb(lip))
        iu, il = geo["lip_inner_upper"], geo["lip_inner_lower"]
        if geo["mouth_open"] > 0.004:
            _poly(d, tf(np.concatenate([iu, il[::-1]])), (70, 22, 28))
            teeth_low = iu[:, 1] + np.minimum(0.05, il[:, 1] - iu[:, 1])
            teeth = np.concatenate([iu, np.stack([iu[:, 0], teeth_low], 1)[::-1]])
            _poly(d, tf(teeth[:, :]), (232, 228, 218))
        _line(d, tf(iu), _rgb(lip * 0.55), px(0.02))
        for polygon, colour in (occluders[f] or ()) if occluders is not None else ():
            _poly(d, tf(polygon), _rgb(colour))

        # Lighting, then sensor noise (luminance, Gaussian); +0.5 rounds in the cast.
        arr = np.asarray(img, dtype=np.float32)
        arr *= gain * np.float32(flicker[f])
        noise = rng.standard_normal((size, size, 1), dtype=np.float32)
        noise *= np.float32(noise_sigma)
        noise += np.float32(0.5)
        arr += noise
        np.clip(arr, 0, 255, out=arr)
        frames[f] = arr.astype(np.uint8)
        keypoints[f, :, :2] = tf(geo["landmarks"])
        keypoints[f, :, 2] = conf[f]

    meta = {
        "intensity": strength.astype(np.float32),
        "peak_intensity": float(peak),
        "apex_frame": int(np.argmax(strength)),
        "face_center": np.stack([cx, cy], 1).astype(np.float32),
        "face_scale": scale.astype(np.float32),
        "face_angle": angle.astype(np.float32),
        "face_axes": (1.0, float(ry)),
        "blink": blink.astype(np.float32),
        "mouth_y": float(p.mouth_y),
        "mouth_w": float(p.mouth_w),
        "skin_rgb": p.skin.astype(np.float32),
        "yaw": turn.astype(np.float32),
    }
    return frames, keypoints, meta


def clip_rng(seed: int, clip_id: str | int, stream: int = 0) -> np.random.Generator:
    """The generator of one clip: stream 0 draws its frames (`draw_clip`), 1 its OpenPose JSON,
    2 its annotation votes, 3 the hard scenario's per-clip parameters."""
    return np.random.default_rng([int(seed), int(clip_id), int(stream)])


def prepare_out_dir(out_dir: str, overwrite: bool, owned) -> None:
    """Makes `out_dir` ready for a synthetic release: new or empty, or (overwrite) with its `owned` folders removed.

    Raises NotADirectoryError for a file in the way and FileExistsError for a non-empty folder without overwrite.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"output directory {out_dir} is not empty; choose an empty or new directory, "
                f"or pass --overwrite (overwrite=True) to replace its {', '.join(owned)} folders")
        for name in owned:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
    os.makedirs(out_dir, exist_ok=True)
