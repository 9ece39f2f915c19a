"""Keypoint normalisation: OpenPose pixel keypoints -> centred, scale-free coordinates and tokens.

Input `points: float[..., T, 137, 3]` (x, y, confidence in pixels; the layout of
`tfds_dfew.openpose.KEYPOINT_GROUPS`: body 0-24 (BODY_25), face 25-94, left hand 95-115, right
hand 116-136). Every function here is pure and works on numpy arrays (the input pipeline) and on
jax arrays, also under `jax.jit` (the array module follows the input).

Definition (`normalize_keypoints`), per clip (the T axis) and for each leading index:

  mask[t, k]   = confidence finite and > 0 and >= min_confidence, and x, y finite.
  centre c_t   = mean of the detected face points of frame t; if none, the body Nose (slot 0)
                 if detected, else the Neck (slot 1); if none of these, the mean of c_t over the
                 frames that have one; if no frame has one, the mean of all detected points of
                 the clip; if nothing is detected, 0.
  scale s      = one value per clip, the first that exists of
                   1. median over frames with >= 2 detected face points of the RMS distance of
                      those points to their mean (r_t = sqrt(mean_k |p_tk - mean_t|^2)), frames
                      with r_t = 0 left out;
                   2. the same over the body points;
                   3. the RMS distance of all detected points of the clip (all frames pooled) to
                      their pooled mean, if > 0;
                   4. 1 (nothing, or a single location, is detected: all coordinates are 0 anyway).
  coords       = (p - c_t) / s where mask, else 0.
  conf         = confidence where mask, else 0.

Centres move with a translation and c_t, s scale with the pixel coordinates, so coords are
invariant to translating and to scaling the detected points; points outside the mask affect
nothing. A clip-level median scale keeps the unit steady from frame to frame.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tfds_dfew.openpose import BODY_25_NAMES

from tfds_dfew.openpose import GROUP_SLICES, KEYPOINT_GROUPS, NUM_KEYPOINTS

NOSE, NECK = 0, 1
FEATURES_PER_POINT = 3
NUM_FEATURES = NUM_KEYPOINTS * FEATURES_PER_POINT  # 411

__all__ = ['GROUP_SLICES', 'KEYPOINT_GROUPS', 'MIRROR', 'NUM_FEATURES', 'NUM_KEYPOINTS',
           'flip_keypoints', 'keypoint_features', 'keypoint_group_features', 'normalize_keypoints']


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def _masked_mean(xp, x, mask):
    """Mean of `x: [..., N, 2]` over N where `mask: [..., N]` -> (mean [..., 2], count [...])."""
    m = mask.astype(x.dtype)
    count = m.sum(axis=-1)
    total = (x * m[..., None]).sum(axis=-2)
    return total / xp.maximum(count, 1)[..., None], count


def _rms_spread(xp, x, mask):
    """Per-frame RMS distance of the masked points to their mean: x [..., T, K, 2] -> [..., T]."""
    mean, count = _masked_mean(xp, x, mask)
    sq = ((x - mean[..., None, :]) ** 2).sum(-1) * mask.astype(x.dtype)
    return xp.sqrt(sq.sum(-1) / xp.maximum(count, 1)), count


def _masked_median(xp, values, valid):
    """Median over the last axis of `values` where `valid`; returns (median, any valid)."""
    n = valid.sum(-1)
    filled = xp.sort(xp.where(valid, values, xp.inf), axis=-1)
    lo = xp.maximum((n - 1) // 2, 0)[..., None]
    hi = xp.maximum(n // 2, 0)[..., None]
    take = lambda i: xp.take_along_axis(filled, i, axis=-1)[..., 0]
    median = 0.5 * (take(lo) + take(hi))
    return xp.where(n > 0, median, 0.0), n > 0


def normalize_keypoints(points, *, min_confidence: float = 0.05):
    """Centres and scales OpenPose keypoints per clip (definition in the module docstring).

    Args:
      points: float[..., T, 137, 3] (x, y, confidence) in pixels, confidence 0 = missing.
      min_confidence: points with a lower confidence are masked.

    Returns:
      coords: float32[..., T, 137, 2], 0 where masked.
      conf: float32[..., T, 137], 0 where masked.
      mask: bool[..., T, 137].
    """
    xp = _xp(points)
    points = xp.asarray(points, dtype=xp.float32)
    if points.ndim < 3 or tuple(points.shape[-2:]) != (NUM_KEYPOINTS, 3):
        raise ValueError(f'points must be float[..., T, {NUM_KEYPOINTS}, 3] (x, y, confidence), '
                         f'got shape {tuple(points.shape)}.')
    xy, c = points[..., :2], points[..., 2]
    mask = (xp.isfinite(xy).all(-1) & xp.isfinite(c) & (c > 0) & (c >= min_confidence))
    xy = xp.where(mask[..., None], xy, 0.0)

    face_s, body_s = GROUP_SLICES['face'], GROUP_SLICES['body']
    face_xy, face_mask = xy[..., face_s, :], mask[..., face_s]
    body_xy, body_mask = xy[..., body_s, :], mask[..., body_s]

    # Frame centre: face mean, else nose, else neck.
    face_mean, face_count = _masked_mean(xp, face_xy, face_mask)
    has_nose, has_neck = body_mask[..., NOSE], body_mask[..., NECK]
    head = xp.where(has_nose[..., None], body_xy[..., NOSE, :], body_xy[..., NECK, :])
    has_frame_centre = (face_count > 0) | has_nose | has_neck
    frame_centre = xp.where((face_count > 0)[..., None], face_mean, head)

    # Clip fallbacks: mean of frame centres, else mean of all detected points, else 0.
    clip_centre, n_centres = _masked_mean(xp, frame_centre, has_frame_centre)
    flat_xy = xy.reshape(*xy.shape[:-3], -1, 2)
    flat_mask = mask.reshape(*mask.shape[:-2], -1)
    pooled_mean, n_pooled = _masked_mean(xp, flat_xy, flat_mask)
    clip_centre = xp.where((n_centres > 0)[..., None], clip_centre, pooled_mean)
    centre = xp.where(has_frame_centre[..., None], frame_centre, clip_centre[..., None, :])

    # Clip scale: face spread, else body spread, else pooled spread, else 1.
    face_r, face_n = _rms_spread(xp, face_xy, face_mask)
    face_scale, has_face_scale = _masked_median(xp, face_r, (face_n >= 2) & (face_r > 0))
    body_r, body_n = _rms_spread(xp, body_xy, body_mask)
    body_scale, has_body_scale = _masked_median(xp, body_r, (body_n >= 2) & (body_r > 0))
    pooled_sq = ((flat_xy - pooled_mean[..., None, :]) ** 2).sum(-1) * flat_mask
    pooled_scale = xp.sqrt(pooled_sq.sum(-1) / xp.maximum(n_pooled, 1))
    scale = xp.where(has_face_scale, face_scale,
                     xp.where(has_body_scale, body_scale,
                              xp.where(pooled_scale > 0, pooled_scale, 1.0)))

    coords = (xy - centre[..., None, :]) / scale[..., None, None, None]
    coords = xp.where(mask[..., None], coords, 0.0).astype(xp.float32)
    conf = xp.where(mask, c, 0.0).astype(xp.float32)
    return coords, conf, mask


def _mirror_permutation() -> np.ndarray:
    """int[137]: the slot each keypoint moves to when the image is mirrored left-right."""
    swap = {'L': 'R', 'R': 'L'}
    body = [BODY_25_NAMES.index(swap[n[0]] + n[1:]) if n[0] in swap and n[1].isupper() else i
            for i, n in enumerate(BODY_25_NAMES)]
    face = list(range(70))  # OpenPose face: the 68 iBUG points, then the right and left pupils
    pairs = [(i, 16 - i) for i in range(17)]  # jaw line
    pairs += [(i, 43 - i) for i in range(17, 27)]  # eyebrows
    pairs += [(i, 66 - i) for i in range(31, 36)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(i, 102 - i) for i in range(48, 55)] + [(i, 114 - i) for i in range(55, 60)]  # outer lips
    pairs += [(i, 124 - i) for i in range(60, 65)] + [(i, 132 - i) for i in range(65, 68)]  # inner lips
    pairs += [(68, 69)]
    for a, b in pairs:
        face[a], face[b] = b, a
    s = GROUP_SLICES
    perm = np.empty(NUM_KEYPOINTS, np.int64)
    perm[s['body']] = np.asarray(body) + s['body'].start
    perm[s['face']] = np.asarray(face) + s['face'].start
    perm[s['hand_left']] = np.arange(s['hand_right'].start, s['hand_right'].stop)
    perm[s['hand_right']] = np.arange(s['hand_left'].start, s['hand_left'].stop)
    return perm


MIRROR = _mirror_permutation()  # MIRROR[k]: where point k of the original lands in the mirror image


def flip_keypoints(points):
    """Keypoints of the left-right mirrored image: float[..., 137, 3] -> the same shape.

    x becomes -x (normalisation removes the image width, so no width is needed) and left and
    right points trade places (shoulders, eyes, jaw line, hands, ...); confidences move along.
    """
    xp = _xp(points)
    mirrored = points * xp.asarray([-1.0, 1.0, 1.0], dtype=points.dtype)
    return mirrored[..., MIRROR, :]  # MIRROR is its own inverse: slot k takes the point that moves to k


def keypoint_features(points, *, min_confidence: float = 0.05):
    """Per-frame token input: `points: float[..., T, 137, 3]` -> float32[..., T, 411].

    Point-major (x, y, confidence) triples in the 137-point layout, from `normalize_keypoints`:
    a masked point is exactly (0, 0, 0).
    """
    xp = _xp(points)
    coords, conf, _ = normalize_keypoints(points, min_confidence=min_confidence)
    triples = xp.concatenate([coords, conf[..., None]], axis=-1)
    return triples.reshape(*triples.shape[:-2], NUM_FEATURES)


def keypoint_group_features(points, *, min_confidence: float = 0.05):
    """Per-group token inputs: {'body': float32[..., T, 75], 'face': [..., 210], 'hand_left':
    [..., 63], 'hand_right': [..., 63]}, slices of `keypoint_features` (same normalisation)."""
    features = keypoint_features(points, min_confidence=min_confidence)
    return {name: features[..., s.start * FEATURES_PER_POINT:s.stop * FEATURES_PER_POINT]
            for name, s in GROUP_SLICES.items()}
