"""Body and hands for the hard synthetic scenario: gestures -> BODY_25 + hand keypoints -> OpenPose JSON.

Used by tfds_dfew/synthetic_hard.py (which decides, per clip, the gesture and its numbers: see
`synthetic_hard.clip_params`). Everything is in face-local units (face half-width 1, y down, the
origin at the neutral face centre) until `openpose_frames` maps it through the face's per-frame
position, scale and roll into the pixels of a 16:9 waist-up source frame around the face crop.

Gestures (`GESTURES`), each a wrist trajectory (two-link arms, elbows bent outward), a hand
shape (curl 0 open .. 1 fist, finger spread) and shoulder / torso offsets over the clip:
    rest     arms hanging, wrists below the shot (not found), a slow sway
    talk     one or both hands at waist height circling slowly, half-open
    fold     arms folded, hands tucked away (found half as often), from the first frame
    startle  both hands thrown up beside the head, fast, open and spread; shoulders jerk up
    cower    hands drawn slowly to the chest, crossed, half-closed, trembling; shoulders up, in
    pound    fists at chest height beating up and down, one or both arms
    fend     one open hand pushed slowly out in front of the chest, palm out; torso leans away
"""

from __future__ import annotations

import numpy as np

from tfds_dfew import synthetic_draw as base
from tfds_dfew import synthetic_openpose

GESTURES = ("rest", "talk", "fold", "startle", "cower", "pound", "fend")

# Body anchors in face-local units.
# Sides: -1 = the person's right (image left), +1 = the person's left.
_NECK = np.array([0.0, 1.9])
_SHOULDER_X, _SHOULDER_Y = 2.3, 2.5
_HIP_X, _HIP_Y = 1.5, 8.5
_UPPER_ARM, _FOREARM = 3.2, 2.9
_EARS = {17: (-1.0, -0.05), 18: (1.0, -0.05)}


def _envelope(t: np.ndarray, t_on: float, rise: float, release: float) -> np.ndarray:
    up = base._smoothstep((t - t_on) / max(rise, 1e-3))
    down = 1.0 - release * base._smoothstep((t - t_on - rise - 0.35) / 0.3)
    return up * down


def _hand_angle(side: int, phi: np.ndarray) -> np.ndarray:
    """Image angle of the fingers (radians, y down) for a hand turned `phi` from hanging down:
    outward through the side (phi = pi/2: pointing away from the body, pi: up); negative phi
    turns inward, across the body. Mirror-symmetric between the sides."""
    return np.pi / 2 - side * phi


def _arm_targets(gesture: str, m: dict, t: np.ndarray) -> dict:
    """Per side (-1, +1): wrist float[T, 2], hand angle float[T], curl, spread; shoulder offset
    float[T, 2] per side; torso shift float[T, 2]; hand visibility factor per side."""
    T = len(t)
    sides = (-1, 1)
    rest = {s: np.array([s * 2.9, 8.3]) for s in sides}
    sway = m["sway"] * np.sin(2 * np.pi * m["sway_f"] * t + m["phase"][0])
    wrist = {s: np.tile(rest[s], (T, 1)) + np.stack([sway * s, 0.5 * sway], 1) for s in sides}
    angle = {s: _hand_angle(s, np.zeros(T)) for s in sides}  # fingers down
    curl = {s: 0.4 for s in sides}
    spread = {s: 0.3 for s in sides}
    shoulder = {s: np.zeros((T, 2)) for s in sides}
    torso = np.zeros((T, 2))
    hand_vis = {s: 1.0 for s in sides}
    amp = m["amp"]

    def move(s, target, g, osc=None):
        w = rest[s] + amp * g[:, None] * (np.asarray(target) - rest[s])
        if osc is not None:
            w = w + g[:, None] * osc
        wrist[s] = w

    if gesture == "startle":
        g = _envelope(t, m["t_on"], m["fast"], m["release"])
        for s in sides:
            move(s, [s * 3.5, -0.4], g)
            angle[s] = _hand_angle(s, g * (np.pi - 0.35))  # up, splayed outward
            curl[s], spread[s] = 0.05, 1.0
            shoulder[s] = np.stack([np.zeros(T), -0.35 * g], 1)
    elif gesture == "cower":
        g = _envelope(t, m["t_on"], m["slow"], 0.3 * m["release"])
        tremor = m["tremor_amp"] * np.stack([np.sin(2 * np.pi * m["tremor_f"] * t + m["phase"][1]),
                                             np.cos(2 * np.pi * m["tremor_f"] * 1.1 * t + m["phase"][2])], 1)
        for s in sides:
            move(s, [-s * 0.6, 3.5 + 0.3 * (s > 0)], g, tremor)
            angle[s] = _hand_angle(s, -g * (np.pi / 2 + 0.46))  # across the chest, a little up
            curl[s], spread[s] = 0.5, 0.2
            shoulder[s] = np.stack([-s * 0.35 * g, -0.45 * g], 1)
    elif gesture == "pound":
        g = _envelope(t, m["t_on"], m["medium"], 0.5 * m["release"])
        beat = m["beat_amp"] * np.abs(np.sin(np.pi * m["beats"] * t + m["phase"][1]))
        for s in (sides if m["two_hands"] else (m["side"],)):
            move(s, [s * 1.7, 4.2], g, np.stack([np.zeros(T), -beat], 1))
            angle[s] = _hand_angle(s, g * (np.pi + 0.6))  # forearms up, fists angled in
            curl[s], spread[s] = 0.95, 0.0
            shoulder[s] = np.stack([np.zeros(T), -0.1 * g], 1)
    elif gesture == "fend":
        g = _envelope(t, m["t_on"], m["slow"], 0.3 * m["release"])
        s = m["side"]
        move(s, [s * 0.5, 3.6], g)
        angle[s] = _hand_angle(s, g * (np.pi + 0.2))  # fingers up, palm out
        curl[s], spread[s] = 0.1, 0.6
        torso = np.stack([-s * 0.8 * g, np.zeros(T)], 1)
        shoulder[s] = np.stack([np.zeros(T), -0.3 * g], 1)
        shoulder[-s] = np.stack([np.zeros(T), 0.2 * g], 1)
    elif gesture == "talk":
        g = _envelope(t, m["t_on"], m["medium"] + 0.1, m["release"])
        for s in (sides if m["two_hands"] else (m["side"],)):
            loop = np.stack([0.7 * np.sin(2 * np.pi * m["talk_f"] * t + m["phase"][2 + (s > 0)]),
                             0.45 * np.sin(2 * np.pi * 1.3 * m["talk_f"] * t + m["phase"][1])], 1)
            move(s, [s * 2.3, 4.8], g, loop)
            angle[s] = _hand_angle(s, g * (np.pi / 2 + 0.9))  # out and up
            curl[s], spread[s] = m["curl"], 0.4
    elif gesture == "fold":
        g = np.ones(T)
        for s in sides:
            move(s, [-s * 1.1, 5.1 - 0.2 * (s > 0)], g)
            angle[s] = _hand_angle(s, -np.full(T, np.pi / 2 + 0.2))  # tucked under the other arm
            curl[s], spread[s], hand_vis[s] = 0.5, 0.1, 0.5
    elif gesture != "rest":
        raise ValueError(f"unknown gesture {gesture!r}")
    return {"wrist": wrist, "angle": angle, "curl": curl, "spread": spread, "shoulder": shoulder,
            "torso": torso, "hand_vis": hand_vis}


def _elbow(shoulder: np.ndarray, wrist: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-link arm: (elbow, reachable wrist) float[T, 2], the elbow bent outward and down."""
    d_vec = wrist - shoulder
    d = np.linalg.norm(d_vec, axis=-1, keepdims=True)
    unit = d_vec / np.maximum(d, 1e-6)
    d = np.clip(d, abs(_UPPER_ARM - _FOREARM) + 0.05, _UPPER_ARM + _FOREARM - 0.05)
    wrist = shoulder + unit * d
    cos_a = (_UPPER_ARM ** 2 + d ** 2 - _FOREARM ** 2) / (2 * _UPPER_ARM * d)
    a = np.arccos(np.clip(cos_a, -1.0, 1.0))[:, 0]
    elbows = []
    for sign in (-1.0, 1.0):
        ca, sa = np.cos(sign * a), np.sin(sign * a)
        rotated = np.stack([unit[:, 0] * ca - unit[:, 1] * sa, unit[:, 0] * sa + unit[:, 1] * ca], 1)
        elbows.append(shoulder + _UPPER_ARM * rotated)
    outward = [side * e[:, 0] + 0.3 * e[:, 1] for e in elbows]  # away from the body, and down
    return np.where((outward[0] >= outward[1])[:, None], elbows[0], elbows[1]), wrist


_FINGER_OFFSETS = np.array([0.28, 0.09, -0.10, -0.27])  # index .. pinky, across the palm
_FINGER_LENGTHS = np.array([0.95, 1.0, 0.93, 0.75])
_SEGMENTS = np.array([0.45, 0.28, 0.22])
_THUMB_SEGMENTS = np.array([0.35, 0.30, 0.25])
_CURL_BEND = np.array([0.9, 1.0, 0.9])  # radians per segment at curl 1 (a fist folds ~2.8 rad)


def _unit(a: float) -> np.ndarray:
    return np.array([np.cos(a), np.sin(a)])


def hand_points(wrist, angle: float, curl: float, spread: float, side: int) -> np.ndarray:
    """OpenPose hand layout float[21, 2] in face-local units: wrist, thumb 1-4, index 5-8,
    middle 9-12, ring 13-16, pinky 17-20 (each chain: base joint then three segment ends).

    Fingers point along `angle` (radians, image axes, y down), fan out with `spread` (0..1) and
    fold back with `curl` (0 open hand .. 1 fist, seen as a projection); the thumb lies on the
    palm's inner side, mirrored between the person's right (side -1) and left (+1) hand.
    """
    wrist = np.asarray(wrist, np.float64)
    u = _unit(angle)
    v = np.array([-u[1], u[0]]) * -side  # across the palm, towards the thumb
    bend = float(side)  # fingers fold away from the thumb side

    def chain(start, direction, lengths):
        pts, p, a = [start], start, direction
        for length, b in zip(lengths, _CURL_BEND):
            a = a + bend * curl * b
            p = p + length * (1.0 - 0.3 * curl) * _unit(a)
            pts.append(p)
        return pts

    points = [wrist]
    thumb = u + 1.2 * (1.0 - 0.5 * curl) * v
    points += chain(wrist + 0.25 * u + 0.3 * v, np.arctan2(thumb[1], thumb[0]), _THUMB_SEGMENTS)
    for offset, length in zip(_FINGER_OFFSETS, _FINGER_LENGTHS):
        direction = u + spread * 0.35 * (offset / 0.28) * v
        base_joint = wrist + 0.95 * u + offset * (1.0 + 0.4 * spread) * v
        points += chain(base_joint, np.arctan2(direction[1], direction[0]), _SEGMENTS * length)
    return np.asarray(points)


def pose_track(params, num_frames: int) -> dict:
    """The clip's body and hands in face-local units (before the head's own motion).

    params: a `synthetic_hard.ClipParams` (its gesture, motion numbers and head yaw).

    Returns 'body' float[T, 25, 2] (BODY_25 slots; NaN for the slots not modelled: knees, ankles,
    feet, and the nose and eyes, which come from the face), 'hands' float[T, 2, 21, 2] (the
    person's right hand, then left), 'hand_vis' float[2] (1, or 0.5 for hands tucked away).
    """
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    arm = _arm_targets(params.gesture, params.motion, t)
    torso = arm["torso"]
    body = np.full((num_frames, 25, 2), np.nan)
    body[:, 1] = _NECK + torso
    hands = np.empty((num_frames, 2, 21, 2))
    for k, (s, (sh, el, wr)) in enumerate(((-1, (2, 3, 4)), (1, (5, 6, 7)))):
        shoulder = np.array([s * _SHOULDER_X, _SHOULDER_Y]) + torso + arm["shoulder"][s]
        elbow, wrist = _elbow(shoulder, arm["wrist"][s], s)
        body[:, sh], body[:, el], body[:, wr] = shoulder, elbow, wrist
        for f in range(num_frames):
            hands[f, k] = hand_points(wrist[f], arm["angle"][s][f], arm["curl"][s],
                                      arm["spread"][s], s)
    hip_shift = 0.3 * torso
    body[:, 8] = np.array([0.0, _HIP_Y]) + hip_shift
    body[:, 9] = np.array([-_HIP_X, _HIP_Y]) + hip_shift
    body[:, 12] = np.array([_HIP_X, _HIP_Y]) + hip_shift
    for index, (x, y) in _EARS.items():
        body[:, index] = np.stack([x * np.cos(params.yaw), np.full(num_frames, y)], 1)
    return {"body": body, "hands": hands,
            "hand_vis": np.array([arm["hand_vis"][-1], arm["hand_vis"][1]])}


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """bool[n]: which of points float[n, 2] lie inside the closed polygon float[m, 2]."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (x < at)).sum(1) % 2) == 1


def openpose_frames(rng: np.random.Generator, face_keypoints: np.ndarray, meta: dict,
                    params, frame_size: int, landmark_jitter: float = 0.03,
                    landmark_bias: float = 0.03) -> list[dict]:
    """OpenPose 1.3 JSON documents, one per frame: body (BODY_25), face and both hands.

    Pixels of the source frame: a 16:9 waist-up shot `params.framing` around the face crop.
    Points outside it are not found (hands at rest, hips); face points carry in-the-wild
    detector noise and are lost under occluders and on turned heads; hands are sometimes not
    found; a few frames have nobody and a run may show a second, smaller person.
    """
    num_frames = len(face_keypoints)
    track = pose_track(params, num_frames)
    scale, centre, angle = meta["face_scale"], meta["face_center"], meta["face_angle"]
    top, bottom, x_frac = params.framing
    height = (top + bottom) * float(scale.mean())
    width = height * 16.0 / 9.0
    offset = np.array([x_frac * width - centre[:, 0].mean(), top * scale.mean() - centre[:, 1].mean()])

    # Every draw, in a fixed order.
    empty = np.zeros(num_frames, bool)
    if rng.uniform() < 0.35:
        empty[rng.choice(num_frames, min(num_frames, int(rng.integers(1, 4))), replace=False)] = True
    second = np.zeros(num_frames, bool)
    if rng.uniform() < 0.15:
        start = int(rng.integers(0, num_frames))
        second[start:start + int(rng.integers(2, 7))] = True
    second_corner = rng.uniform([0.05, 0.05], [0.25, 0.4]) * [width, height]
    face_drop = rng.uniform(size=(num_frames, 70)) < 0.03
    jitter = rng.normal(0.0, 1.0, (num_frames, 70, 2)) * (landmark_jitter * scale[:, None, None])
    bias = rng.normal(0.0, 1.0, (70, 2)) * (landmark_bias * scale.mean())
    face_lost = (np.abs(params.yaw) > 0.45) & (rng.uniform(size=num_frames) < 0.4)
    under = rng.uniform(size=(num_frames, 70)) < 0.8
    body_conf = rng.uniform(0.45, 0.9, (num_frames, 25))
    body_conf[:, [3, 4, 6, 7]] *= rng.uniform(0.6, 1.0, (num_frames, 4))
    hand_conf = rng.uniform(0.2, 0.7, (num_frames, 2, 21))
    hand_lost = rng.uniform(size=(num_frames, 2)) < 0.15 + 0.35 * (track["hand_vis"] < 1)
    second_conf = rng.uniform(0.2, 0.45, (num_frames, 95))

    far_jaw = np.zeros((num_frames, 70), bool)
    jaw_side = np.sign(np.arange(17) - 8)
    far_jaw[:, :17] = (np.abs(params.yaw)[:, None] > 0.3) & (jaw_side[None] == -np.sign(params.yaw)[:, None])

    docs = []
    for f in range(num_frames):
        if empty[f]:
            docs.append({"version": 1.3, "people": []})
            continue
        rot = np.array([[np.cos(angle[f]), -np.sin(angle[f])],
                        [np.sin(angle[f]), np.cos(angle[f])]]) * scale[f]

        def to_source(local):
            return local @ rot.T + centre[f] + offset

        face = face_keypoints[f].astype(np.float64).copy()
        found = ~face_drop[f] & ~np.full(70, face_lost[f])
        for polygon, _ in params.occluders[f] or ():
            outline = base._turn_head(np.asarray(polygon, np.float64), float(params.yaw[f]),
                                      meta["face_axes"][1]) @ rot.T + centre[f]
            found &= ~(_inside(face[:, :2], outline) & under[f])
        face[:, 2] *= np.where(far_jaw[f], 0.5, 1.0)
        face[:, :2] += jitter[f] + bias + offset
        face[~found] = 0.0

        body = np.zeros((25, 3))
        local = track["body"][f]
        modelled = ~np.isnan(local[:, 0])
        body[modelled, :2] = to_source(local[modelled])
        body[0, :2] = face_keypoints[f, 30, :2] + offset
        body[15, :2] = face_keypoints[f, 68, :2] + offset
        body[16, :2] = face_keypoints[f, 69, :2] + offset
        body[:, 2] = body_conf[f]
        detected = modelled.copy()
        detected[[0, 15, 16]] = True
        if abs(params.yaw[f]) > 0.35:  # the far ear is hidden
            detected[17 if params.yaw[f] > 0 else 18] = False
        hands = np.zeros((2, 21, 3))
        for k in range(2):
            hands[k, :, :2] = to_source(track["hands"][f, k])
            hands[k, :, 2] = hand_conf[f, k]
        people = [_person(body, detected, face, hands, hand_lost[f], width, height)]
        if second[f]:
            small = 0.4
            other = face_keypoints[f].astype(np.float64).copy()
            other[:, :2] = second_corner + (other[:, :2] - centre[f]) * small
            other[:, 2] = second_conf[f, 25:]
            other_body = np.zeros((25, 3))
            other_body[modelled, :2] = second_corner + (to_source(local[modelled]) - centre[f] - offset) * small
            other_body[:, 2] = second_conf[f, :25]
            people.append(_person(other_body, modelled, other, np.zeros((2, 21, 3)), (True, True),
                                  width, height))
        docs.append({"version": 1.3, "people": people})
    return docs


def _person(body, detected, face, hands, hand_lost, width, height) -> dict:
    """One OpenPose person; points outside the source frame or not detected become (0, 0, 0)."""
    def clean(points, keep):
        points = np.asarray(points, np.float64).copy()
        inside = ((points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0)
                  & (points[:, 1] < height))
        points[~(keep & inside & (points[:, 2] > 0))] = 0.0
        return points

    body = clean(body, np.asarray(detected))
    doc = synthetic_openpose._person_json(body, clean(face, np.ones(70, bool)))
    for k, key in enumerate(("hand_right_keypoints_2d", "hand_left_keypoints_2d")):
        wrist_found = body[4 if k == 0 else 7, 2] > 0
        hand = clean(hands[k], np.full(21, wrist_found and not hand_lost[k]))
        doc[key] = np.concatenate([np.round(hand[:, :2], 3), np.round(hand[:, 2:], 4)], 1).ravel().tolist()
    return doc
