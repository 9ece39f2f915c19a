"""Tests for fer_jax.data.keypoints against a float64 numpy reference of the documented definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.data import keypoints
from tfds_dfew import openpose

BODY, FACE, LHAND, RHAND = range(0, 25), range(25, 95), range(95, 116), range(116, 137)
MIN_CONF = 0.05


def reference(points, min_confidence=MIN_CONF):
    """Loop-by-loop float64 version of the module docstring's definition, for one clip [T, 137, 3]."""
    p = np.asarray(points, np.float64)
    num_frames = p.shape[0]
    c = p[..., 2]
    with np.errstate(invalid='ignore'):
        mask = np.isfinite(p).all(-1) & (c > 0) & (c >= min_confidence)

    def detected(t, group):
        return [k for k in group if mask[t, k]]

    centres = []
    for t in range(num_frames):
        face = detected(t, FACE)
        if face:
            centres.append(p[t, face, :2].mean(0))
        elif mask[t, 0]:
            centres.append(p[t, 0, :2])
        elif mask[t, 1]:
            centres.append(p[t, 1, :2])
        else:
            centres.append(None)
    known = [x for x in centres if x is not None]
    everything = p[mask][:, :2]
    if known:
        fallback = np.mean(known, axis=0)
    elif len(everything):
        fallback = everything.mean(0)
    else:
        fallback = np.zeros(2)
    centres = np.array([fallback if x is None else x for x in centres]).reshape(num_frames, 2)

    def spreads(group):
        out = []
        for t in range(num_frames):
            pts = p[t, detected(t, group), :2]
            if len(pts) >= 2:
                r = np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean())
                if r > 0:
                    out.append(r)
        return out

    scale = None
    for group in (FACE, BODY):
        values = spreads(group)
        if values:
            scale = float(np.median(values))
            break
    if scale is None:
        pooled = np.sqrt(((everything - everything.mean(0)) ** 2).sum(1).mean()) if len(
            everything) else 0.0
        scale = pooled if pooled > 0 else 1.0

    coords = np.zeros((num_frames, 137, 2))
    conf = np.zeros((num_frames, 137))
    for t in range(num_frames):
        for k in range(137):
            if mask[t, k]:
                coords[t, k] = (p[t, k, :2] - centres[t]) / scale
                conf[t, k] = c[t, k]
    return coords, conf, mask


def random_clip(rng, num_frames=8, *, face=0.8, body=0.6, hands=0.5, face_frames=1.0):
    """A clip with a moving, scaled face, partly detected groups, and junk in the missing points."""
    points = np.zeros((num_frames, 137, 3), np.float32)
    for t in range(num_frames):
        centre = rng.uniform(60, 160, 2)
        size = rng.uniform(30, 60)
        xy = centre + size * rng.normal(size=(137, 2))
        conf = rng.uniform(0.06, 1.0, 137)
        keep = np.zeros(137, bool)
        if rng.uniform() < face_frames:
            keep[list(FACE)] = rng.uniform(size=70) < face
        keep[list(BODY)] = rng.uniform(size=25) < body
        keep[list(LHAND) + list(RHAND)] = rng.uniform(size=42) < hands
        points[t, :, :2] = xy
        points[t, :, 2] = np.where(keep, conf, 0.0)
        # Missing points: either OpenPose's (0, 0, 0), or junk coordinates with a low confidence.
        junk = ~keep & (rng.uniform(size=137) < 0.5)
        points[t, junk, 2] = rng.uniform(0, MIN_CONF * 0.9, junk.sum())
        points[t, ~keep & ~junk] = 0.0
    return points


def scenarios():
    rng = np.random.default_rng(0)
    clips = {
        'full': random_clip(rng),
        'face_gaps': random_clip(rng, face_frames=0.5),
        'no_face': random_clip(rng, face=0.0),
        'hands_only': random_clip(rng, face=0.0, body=0.0),
        'sparse': random_clip(rng, face=0.05, body=0.05, hands=0.05),
    }
    nose_only = np.zeros((5, 137, 3), np.float32)
    nose_only[:, 0] = [[50, 60, 0.9], [55, 61, 0.8], [0, 0, 0], [58, 59, 0.7], [0, 0, 0]]
    nose_only[:, 1] = [[0, 0, 0], [0, 0, 0], [52, 90, 0.6], [0, 0, 0], [0, 0, 0]]
    nose_only[4, 100] = [70, 80, 0.5]  # a hand point in a frame with no centre
    clips['nose_neck'] = nose_only
    single = np.zeros((3, 137, 3), np.float32)
    single[1, 30] = [100, 100, 0.9]
    clips['single_point'] = single
    moving = np.zeros((3, 137, 3), np.float32)
    moving[:, 100] = [[10, 10, 0.9], [20, 30, 0.9], [0, 0, 0]]
    clips['one_hand_point_per_frame'] = moving
    clips['all_missing'] = np.zeros((4, 137, 3), np.float32)
    return clips


SCENARIOS = scenarios()


@pytest.mark.parametrize('name', sorted(SCENARIOS))
def test_matches_float64_reference(name):
    points = SCENARIOS[name]
    coords, conf, mask = keypoints.normalize_keypoints(points)
    ref_coords, ref_conf, ref_mask = reference(points)
    assert coords.dtype == np.float32 and conf.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(coords, ref_coords, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conf, ref_conf, rtol=1e-6)
    assert np.isfinite(coords).all()


def test_reference_exercises_each_fallback():
    """The scenarios reach every branch of the definition (otherwise the comparison proves little)."""
    points = SCENARIOS['nose_neck']
    coords, _, _ = reference(points)
    assert coords[4, 100].any()  # frame without a centre uses the clip mean of centres
    c, _, m = reference(SCENARIOS['single_point'])
    assert m.sum() == 1 and not c.any()
    c, _, _ = reference(SCENARIOS['one_hand_point_per_frame'])
    np.testing.assert_allclose(np.linalg.norm(c[:2, 100], axis=-1), [1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize('name', ['full', 'face_gaps', 'no_face', 'hands_only', 'nose_neck',
                                  'one_hand_point_per_frame'])
@pytest.mark.parametrize('shift', [(1000.0, -500.0), (-37.5, 12.25)])
def test_translation_invariance(name, shift):
    points = SCENARIOS[name].astype(np.float64)
    moved = points.copy()
    detected = points[..., 2] > 0
    moved[..., :2] = np.where(detected[..., None], points[..., :2] + shift, 0.0)
    ref_coords = reference(points)[0]
    np.testing.assert_allclose(reference(moved)[0], ref_coords, atol=1e-9)
    coords, _, _ = keypoints.normalize_keypoints(moved.astype(np.float32))
    np.testing.assert_allclose(coords, ref_coords, atol=1e-4)
    assert np.abs(ref_coords).max() > 0.1


@pytest.mark.parametrize('name', ['full', 'face_gaps', 'no_face', 'hands_only', 'nose_neck',
                                  'one_hand_point_per_frame'])
@pytest.mark.parametrize('factor', [0.25, 3.7])
def test_scale_invariance(name, factor):
    points = SCENARIOS[name].astype(np.float64)
    scaled = points.copy()
    scaled[..., :2] *= factor
    ref_coords = reference(points)[0]
    np.testing.assert_allclose(reference(scaled)[0], ref_coords, atol=1e-9)
    coords, _, _ = keypoints.normalize_keypoints(scaled.astype(np.float32))
    np.testing.assert_allclose(coords, ref_coords, atol=1e-5)
    assert np.abs(ref_coords).max() > 0.1


def test_masked_points_do_not_matter():
    points = SCENARIOS['full']
    coords, conf, mask = keypoints.normalize_keypoints(points)
    rng = np.random.default_rng(1)
    junk = points.copy()
    missing = ~mask
    junk[..., :2] = np.where(missing[..., None], rng.uniform(-1e4, 1e4, points[..., :2].shape),
                             points[..., :2])
    junk[..., 2] = np.where(missing, rng.uniform(0, MIN_CONF * 0.99, mask.shape), points[..., 2])
    junk[0, 30, 0] = np.nan  # a non-finite coordinate is masked too
    junk[1, 40, 2] = np.inf
    coords2, conf2, mask2 = keypoints.normalize_keypoints(junk)
    expected_mask = mask.copy()
    expected_mask[0, 30] = expected_mask[1, 40] = False
    np.testing.assert_array_equal(mask2, expected_mask)
    assert not coords2[~mask2].any() and not conf2[~mask2].any()
    # Dropping two detected points changes the centre and scale slightly; compare with the reference.
    np.testing.assert_allclose(coords2, reference(junk)[0], atol=1e-5)
    # With only the junk (no extra drops), the output equals the clean one exactly in definition.
    junk[0, 30, 0], junk[1, 40, 2] = points[0, 30, 0], points[1, 40, 2]
    coords3, conf3, mask3 = keypoints.normalize_keypoints(junk)
    np.testing.assert_array_equal(mask3, mask)
    np.testing.assert_allclose(coords3, coords, atol=1e-6)
    np.testing.assert_array_equal(conf3, conf)


def test_min_confidence_threshold():
    points = SCENARIOS['full']
    for threshold in (0.0, 0.3, 0.9):
        coords, _, mask = keypoints.normalize_keypoints(points, min_confidence=threshold)
        ref_coords, _, ref_mask = reference(points, threshold)
        np.testing.assert_array_equal(mask, ref_mask)
        np.testing.assert_allclose(coords, ref_coords, atol=1e-5)
    # A (0, 0, 0) point is missing even with min_confidence=0.
    _, _, mask = keypoints.normalize_keypoints(SCENARIOS['all_missing'], min_confidence=0.0)
    assert not mask.any()


def test_all_missing_frames_stay_finite_and_zero():
    points = SCENARIOS['full'].copy()
    points[[2, 5]] = 0.0
    coords, conf, mask = keypoints.normalize_keypoints(points)
    assert np.isfinite(coords).all() and np.isfinite(conf).all()
    assert not mask[[2, 5]].any() and not coords[[2, 5]].any() and not conf[[2, 5]].any()
    coords, conf, mask = keypoints.normalize_keypoints(SCENARIOS['all_missing'])
    assert not coords.any() and not conf.any() and not mask.any()


def test_leading_dims_are_independent_clips():
    names = ['full', 'face_gaps', 'no_face', 'hands_only', 'all_missing']
    batch = np.stack([SCENARIOS[n][:3] for n in names]).reshape(5, 1, 3, 137, 3)
    coords, conf, mask = keypoints.normalize_keypoints(batch)
    assert coords.shape == (5, 1, 3, 137, 2) and conf.shape == (5, 1, 3, 137)
    assert mask.shape == (5, 1, 3, 137)
    for i, n in enumerate(names):
        ref_coords, ref_conf, _ = reference(SCENARIOS[n][:3])
        np.testing.assert_allclose(coords[i, 0], ref_coords, atol=1e-5)
        np.testing.assert_allclose(conf[i, 0], ref_conf, rtol=1e-6)


def test_jax_jit_matches_numpy():
    batch = np.stack([SCENARIOS[n][:4] for n in ['full', 'face_gaps', 'nose_neck', 'all_missing']])
    np_out = keypoints.normalize_keypoints(batch)
    jax_out = jax.jit(keypoints.normalize_keypoints)(jnp.asarray(batch))
    assert all(isinstance(x, jax.Array) for x in jax_out)
    for a, b in zip(np_out, jax_out):
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-5)
    feats = jax.jit(keypoints.keypoint_features)(jnp.asarray(batch))
    np.testing.assert_allclose(np.asarray(feats), keypoints.keypoint_features(batch), atol=1e-5)


def test_keypoint_features_layout():
    points = np.stack([SCENARIOS['full'], SCENARIOS['face_gaps']])
    features = keypoints.keypoint_features(points)
    assert features.shape == (2, 8, 411) and features.dtype == np.float32
    assert keypoints.NUM_FEATURES == 411
    coords, conf, mask = keypoints.normalize_keypoints(points)
    triples = features.reshape(2, 8, 137, 3)
    np.testing.assert_array_equal(triples[..., :2], coords)
    np.testing.assert_array_equal(triples[..., 2], conf)
    assert not triples[~mask].any()
    groups = keypoints.keypoint_group_features(points)
    assert {k: v.shape[-1] for k, v in groups.items()} == {
        'body': 75, 'face': 210, 'hand_left': 63, 'hand_right': 63}
    np.testing.assert_array_equal(np.concatenate(list(groups.values()), -1), features)
    np.testing.assert_array_equal(groups['face'].reshape(2, 8, 70, 3), triples[:, :, 25:95])


def test_layout_is_the_readers():
    assert keypoints.KEYPOINT_GROUPS is openpose.KEYPOINT_GROUPS
    assert keypoints.NUM_KEYPOINTS == 137


@pytest.mark.parametrize('shape', [(137, 3), (4, 136, 3), (4, 137, 2)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match='137, 3'):
        keypoints.normalize_keypoints(np.zeros(shape, np.float32))


def test_mirror_permutation_swaps_left_and_right():
    m = keypoints.MIRROR
    np.testing.assert_array_equal(m[m], np.arange(137))  # mirroring twice is the identity
    names = openpose.BODY_25_NAMES
    assert names[m[names.index('RShoulder')]] == 'LShoulder' and names[m[names.index('LHeel')]] == 'RHeel'
    assert m[0] == 0 and m[1] == 1 and m[8] == 8  # nose, neck, mid-hip stay
    face = lambda i: 25 + i
    assert m[face(0)] == face(16) and m[face(8)] == face(8)  # jaw ends swap, chin stays
    assert m[face(36)] == face(45) and m[face(39)] == face(42)  # outer and inner eye corners
    assert m[face(48)] == face(54) and m[face(68)] == face(69)  # mouth corners, pupils
    np.testing.assert_array_equal(m[list(LHAND)], list(RHAND))


def test_mirroring_the_image_mirrors_the_features():
    """Points of an image mirrored at width W (x -> W - x, left/right swapped) give the flipped features."""
    rng = np.random.default_rng(7)
    points = random_clip(rng)
    width = 640.0
    in_mirror_image = points.copy()
    in_mirror_image[..., 0] = np.where(points[..., 2] > 0, width - points[..., 0], 0.0)
    in_mirror_image = in_mirror_image[:, keypoints.MIRROR]  # a left point of the original is a right one now
    expected = keypoints.keypoint_features(in_mirror_image)
    got = keypoints.keypoint_features(keypoints.flip_keypoints(points))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # and flipping is the mirror image of the normalised features themselves
    f = keypoints.keypoint_features(points).reshape(-1, 137, 3)
    mirrored = (f * np.array([-1.0, 1.0, 1.0], np.float32))[:, keypoints.MIRROR]
    np.testing.assert_allclose(got.reshape(-1, 137, 3), mirrored, atol=1e-5)
    np.testing.assert_allclose(keypoints.flip_keypoints(jnp.asarray(points)), keypoints.flip_keypoints(points))
