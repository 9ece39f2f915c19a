"""Tests for tfds_dfew.openpose: OpenPose JSON variants, person choice, clip folders, errors."""

import itertools
import json
import os

import numpy as np
import pytest

from tfds_dfew import openpose

# Output rows of each group, written out here independently of the module.
BODY, FACE, LHAND, RHAND = slice(0, 25), slice(25, 95), slice(95, 116), slice(116, 137)
# BODY_25 slot of each COCO-18 point (OpenPose's documented part order).
COCO_SLOTS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


def _triples(rng, n, conf=(0.3, 1.0), size=224.0):
    """float64[n, 3] pixel points with confidences in `conf`, exactly representable in float32."""
    xy = rng.uniform(0, size, (n, 2))
    c = rng.uniform(*conf, (n, 1))
    return np.concatenate([xy, c], axis=1).astype(np.float32).astype(np.float64)


def _flat(a):
    return [float(v) for v in np.asarray(a).ravel()]


def _person(body=None, face=None, left=None, right=None, *, legacy=False):
    suffix = '' if legacy else '_2d'
    person = {'person_id': [-1]}
    for key, arr in (('pose', body), ('face', face), ('hand_left', left), ('hand_right', right)):
        person[f'{key}_keypoints{suffix}'] = [] if arr is None else _flat(arr)
    if not legacy:
        person.update({'pose_keypoints_3d': [], 'face_keypoints_3d': [],
                       'hand_left_keypoints_3d': [], 'hand_right_keypoints_3d': []})
    return person


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _full_person(rng):
    return dict(body=_triples(rng, 25), face=_triples(rng, 70), left=_triples(rng, 21),
                right=_triples(rng, 21))


def _expected(body=None, face=None, left=None, right=None):
    out = np.zeros((137, 3), np.float64)
    if body is not None:
        out[BODY] = body
    if face is not None:
        out[FACE] = face
    if left is not None:
        out[LHAND] = left
    if right is not None:
        out[RHAND] = right
    return out


def test_layout_constants():
    assert openpose.KEYPOINT_GROUPS == {'body': 25, 'face': 70, 'hand_left': 21, 'hand_right': 21}
    assert openpose.NUM_KEYPOINTS == 137
    assert [openpose.GROUP_SLICES[g] for g in openpose.KEYPOINT_GROUPS] == [BODY, FACE, LHAND, RHAND]
    assert list(openpose.COCO_TO_BODY25) == COCO_SLOTS


def test_v13_body25_face_hands(tmp_path):
    rng = np.random.default_rng(0)
    parts = _full_person(rng)
    path = _write(tmp_path / 'clip_000000000000_keypoints.json',
                  {'version': 1.3, 'people': [_person(**parts)]})
    frame = openpose.read_frame(path)
    assert frame.points.dtype == np.float32 and frame.points.shape == (137, 3)
    np.testing.assert_array_equal(frame.points, _expected(**parts))
    assert (frame.num_people, frame.person_index, frame.body_layout, frame.version) == (
        1, 0, 'BODY_25', 1.3)


@pytest.mark.parametrize('version', [1.0, 1.1, 1.2])
def test_legacy_keys(tmp_path, version):
    rng = np.random.default_rng(1)
    parts = _full_person(rng)
    path = _write(tmp_path / 'a_000000000003_keypoints.json',
                  {'version': version, 'people': [_person(**parts, legacy=True)]})
    frame = openpose.read_frame(path)
    np.testing.assert_array_equal(frame.points, _expected(**parts))
    assert frame.version == version and frame.body_layout == 'BODY_25'


def test_legacy_body_only(tmp_path):
    rng = np.random.default_rng(2)
    body = _triples(rng, 25)
    path = _write(tmp_path / 'b_keypoints.json',
                  {'version': 1.0, 'people': [{'pose_keypoints': _flat(body)}]})
    np.testing.assert_array_equal(openpose.read_frame(path).points, _expected(body=body))


def test_coco18_body_mapped_to_body25_slots(tmp_path):
    rng = np.random.default_rng(3)
    body = _triples(rng, 18)
    face = _triples(rng, 70)
    path = _write(tmp_path / 'c_000000000000_keypoints.json',
                  {'version': 1.3, 'people': [_person(body=body, face=face)]})
    frame = openpose.read_frame(path)
    assert frame.body_layout == 'COCO'
    expected = np.zeros((137, 3))
    for coco_index, slot in enumerate(COCO_SLOTS):
        expected[slot] = body[coco_index]
    expected[FACE] = face
    np.testing.assert_array_equal(frame.points, expected)
    # MidHip and the six foot points stay missing.
    assert not frame.points[[8, 19, 20, 21, 22, 23, 24]].any()


def test_empty_people(tmp_path):
    path = _write(tmp_path / 'e_000000000000_keypoints.json', {'version': 1.3, 'people': []})
    frame = openpose.read_frame(path)
    assert frame.points.shape == (137, 3) and not frame.points.any()
    assert (frame.num_people, frame.person_index, frame.body_layout) == (0, -1, None)


def test_missing_and_empty_groups_are_zero(tmp_path):
    rng = np.random.default_rng(4)
    body = _triples(rng, 25)
    person = {'pose_keypoints_2d': _flat(body), 'face_keypoints_2d': []}  # hands absent
    path = _write(tmp_path / 'g_000000000000_keypoints.json', {'version': 1.3, 'people': [person]})
    np.testing.assert_array_equal(openpose.read_frame(path).points, _expected(body=body))


def test_zero_points_are_missing(tmp_path):
    rng = np.random.default_rng(5)
    parts = _full_person(rng)
    parts['face'][10:40] = 0.0  # OpenPose writes (0, 0, 0) for points it did not find
    parts['body'][8:] = 0.0
    path = _write(tmp_path / 'z_000000000000_keypoints.json',
                  {'version': 1.3, 'people': [_person(**parts)]})
    points = openpose.read_frame(path).points
    assert not points[FACE][10:40].any() and not points[BODY][8:].any()
    summary = openpose.summarize(points)
    assert summary['face'] == pytest.approx(40 / 70)
    assert summary['body'] == pytest.approx(8 / 25)
    assert summary['hand_left'] == 1.0 and summary['hand_right'] == 1.0
    assert summary['frames_with_face'] == 1.0


def test_picks_most_confident_person_under_any_order(tmp_path):
    rng = np.random.default_rng(6)
    # Main subject: full face at confidence ~0.6, a few body points.
    main = dict(body=np.zeros((25, 3)), face=_triples(rng, 70, conf=(0.55, 0.65)))
    main['body'][:2] = _triples(rng, 2, conf=(0.5, 0.6))
    # Stray detection: three very confident body points, no face.
    stray = dict(body=np.zeros((25, 3)))
    stray['body'][2:5] = _triples(rng, 3, conf=(0.95, 0.99))
    # A weaker full person.
    weak = dict(body=_triples(rng, 25, conf=(0.1, 0.2)), face=_triples(rng, 70, conf=(0.1, 0.2)))
    people = [_person(**main), _person(**stray), _person(**weak)]
    want = _expected(**main)
    for i, order in enumerate(itertools.permutations(range(3))):
        path = _write(tmp_path / f'p{i}_000000000000_keypoints.json',
                      {'version': 1.3, 'people': [people[j] for j in order]})
        frame = openpose.read_frame(path)
        np.testing.assert_array_equal(frame.points, want)
        assert frame.num_people == 3 and order[frame.person_index] == 0


def test_confidence_tie_broken_by_larger_box(tmp_path):
    rng = np.random.default_rng(7)
    small = _triples(rng, 70, conf=(0.5, 0.5), size=50.0)
    big = small.copy()
    big[:, :2] *= 4.0  # same confidences, four times the extent (exact in float32)
    for i, order in enumerate([(small, big), (big, small)]):
        path = _write(tmp_path / f't{i}_000000000000_keypoints.json',
                      {'version': 1.3, 'people': [_person(face=f) for f in order]})
        np.testing.assert_array_equal(openpose.read_frame(path).points, _expected(face=big))


def test_full_tie_is_order_independent(tmp_path):
    rng = np.random.default_rng(8)
    a = _triples(rng, 70, conf=(0.5, 0.5))
    b = a.copy()
    b[[0, 1]] = b[[1, 0]]  # same confidences and box, different contents
    results = []
    for i, order in enumerate([(a, b), (b, a)]):
        path = _write(tmp_path / f'u{i}_000000000000_keypoints.json',
                      {'version': 1.3, 'people': [_person(face=f) for f in order]})
        results.append(openpose.read_frame(path).points)
    np.testing.assert_array_equal(results[0], results[1])


def test_to_openpose_json_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    points = _expected(**_full_person(rng)).astype(np.float32)
    path = _write(tmp_path / 'r_000000000000_keypoints.json', openpose.to_openpose_json([points]))
    np.testing.assert_array_equal(openpose.read_frame(path).points, points)


def _one_face_frame(value):
    """A person whose only detected point is face point 0 at x = value (to identify the frame)."""
    face = np.zeros((70, 3))
    face[0] = (value, 1.0, 0.9)
    return {'version': 1.3, 'people': [_person(face=face)]}


def test_read_clip_numeric_order_and_missing_frames(tmp_path):
    numbers = [10, 2, 0, 1, 11]
    for n in numbers:  # written out of order
        _write(tmp_path / f'x_{n:012d}_keypoints.json', _one_face_frame(100 + n))
    _write(tmp_path / 'notes.txt', 'not a keypoint file')
    clip = openpose.read_clip(tmp_path)
    assert clip.points.shape == (12, 137, 3) and clip.points.dtype == np.float32
    assert clip.num_missing == 12 - len(numbers)
    for t in range(12):
        want = 100 + t if t in numbers else 0.0
        assert clip.points[t, 25, 0] == want
        assert clip.points[t].any() == (t in numbers)

    sampled = openpose.read_clip(tmp_path, frame_indices=[0, 2, 2, 5, 10, 11])
    np.testing.assert_array_equal(sampled.points[:, 25, 0], [100, 102, 102, 0, 110, 111])
    assert sampled.num_missing == 1

    padded = openpose.read_clip(tmp_path, num_frames=16)
    assert padded.points.shape == (16, 137, 3) and padded.num_missing == 16 - len(numbers)
    np.testing.assert_array_equal(padded.points[:12], clip.points)


def test_read_clip_unpadded_names_sort_numerically(tmp_path):
    # '10_keypoints.json' < '2_keypoints.json' lexically; frames must follow numbers.
    for n in (1, 2, 10, 3):
        _write(tmp_path / f'{n}_keypoints.json', _one_face_frame(n))
    assert [n for n, _ in openpose.list_frames(tmp_path)] == [1, 2, 3, 10]
    clip = openpose.read_clip(tmp_path, first_frame=1)
    assert clip.points.shape[0] == 10 and clip.num_missing == 6
    np.testing.assert_array_equal(clip.points[:, 25, 0], [1, 2, 3, 0, 0, 0, 0, 0, 0, 10])


def test_read_clip_dfew_style_one_based_names(tmp_path):
    for n in range(1, 17):
        _write(tmp_path / f'00042_{n:05d}_keypoints.json', _one_face_frame(n))
    clip = openpose.read_clip(tmp_path, frame_indices=[0, 15], first_frame=1)
    np.testing.assert_array_equal(clip.points[:, 25, 0], [1, 16])
    with pytest.raises(openpose.OpenPoseError, match='first_frame'):
        openpose.read_clip(tmp_path, first_frame=2)


def test_read_clip_empty_folder_and_bad_arguments(tmp_path):
    empty = openpose.read_clip(tmp_path)
    assert empty.points.shape == (0, 137, 3) and empty.num_missing == 0
    all_missing = openpose.read_clip(tmp_path, num_frames=4)
    assert all_missing.num_missing == 4 and not all_missing.points.any()
    with pytest.raises(ValueError, match='out of range'):
        openpose.read_clip(tmp_path, num_frames=4, frame_indices=[0, 4])
    with pytest.raises(ValueError, match='out of range'):
        openpose.read_clip(tmp_path, frame_indices=[-1])
    with pytest.raises(openpose.OpenPoseError, match='not found'):
        openpose.read_clip(tmp_path / 'nope')


def test_read_clip_duplicate_frame_numbers(tmp_path):
    _write(tmp_path / 'a_000000000001_keypoints.json', _one_face_frame(1))
    _write(tmp_path / 'b_000000000001_keypoints.json', _one_face_frame(2))
    with pytest.raises(openpose.OpenPoseError, match='two files for frame 1'):
        openpose.read_clip(tmp_path)


def test_read_clip_error_names_the_file(tmp_path):
    _write(tmp_path / 'x_000000000000_keypoints.json', _one_face_frame(1))
    bad = _write(tmp_path / 'x_000000000001_keypoints.json', '{"version": 1.3, "people": [{"po')
    with pytest.raises(openpose.OpenPoseError) as info:
        openpose.read_clip(tmp_path)
    assert str(bad) in str(info.value)
    # Frames that are not requested are not read.
    assert openpose.read_clip(tmp_path, frame_indices=[0]).num_missing == 0


def _valid_text(rng):
    return json.dumps({'version': 1.3, 'people': [_person(**_full_person(rng))]})


def _bad_documents():
    rng = np.random.default_rng(10)
    text = _valid_text(rng)
    body = _flat(_triples(rng, 25))
    return {
        'empty': ('', 'empty'),
        'whitespace': ('  \n', 'empty'),
        'truncated': (text[: len(text) // 2], 'malformed or truncated'),
        'not_json': ('people: []', 'malformed or truncated'),
        'not_utf8': (b'\xff\xfe{}', 'UTF-8'),
        'top_level_list': ('[]', 'no "people"'),
        'no_people': ('{"version": 1.3}', 'no "people"'),
        'people_not_list': ('{"version": 1.3, "people": {}}', '"people" is a dict'),
        'person_not_dict': ('{"version": 1.3, "people": [[1, 2, 3]]}', r'people\[0\] is a list'),
        'not_multiple_of_3': (json.dumps({'people': [{'pose_keypoints_2d': body[:-1]}]}),
                              'not a multiple of 3'),
        'mpi_15_points': (json.dumps({'people': [{'pose_keypoints_2d': body[:45]}]}),
                          'has 15 points, expected 25 or 18'),
        'face_68_points': (json.dumps({'people': [{'face_keypoints_2d': [0.5] * 204}]}),
                           'has 68 points, expected 70'),
        'hand_wrong': (json.dumps({'people': [{'hand_left_keypoints': [0.5] * 60}]}),
                       'has 20 points, expected 21'),
        'string_value': (json.dumps({'people': [{'pose_keypoints_2d': body[:3] + ['0.5'] + body[4:]}]}),
                         r'pose_keypoints_2d\[3\] is \'0.5\''),
        'null_value': (json.dumps({'people': [{'pose_keypoints_2d': [None] + body[1:]}]}),
                       'expected a number'),
        'bool_value': (json.dumps({'people': [{'pose_keypoints_2d': [True] + body[1:]}]}),
                       'expected a number'),
        'nested_value': (json.dumps({'people': [{'pose_keypoints_2d': [[1.0]] + body[1:]}]}),
                         'expected a number'),
        'nan_value': ('{"people": [{"pose_keypoints_2d": [NaN' + ', 1.0' * 74 + ']}]}',
                      'finite'),
        'list_not_list': (json.dumps({'people': [{'face_keypoints_2d': 'abc'}]}), 'is a str'),
        'second_person_bad': (json.dumps({'people': [{'pose_keypoints_2d': body},
                                                     {'pose_keypoints_2d': body[:30]}]}),
                              r'people\[1\]\.pose_keypoints_2d has 10 points'),
    }


@pytest.mark.parametrize('case', sorted(_bad_documents()))
def test_bad_files_raise_clear_errors(tmp_path, case):
    content, pattern = _bad_documents()[case]
    path = tmp_path / f'{case}_000000000007_keypoints.json'
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(openpose.OpenPoseError, match=pattern) as info:
        openpose.read_frame(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message
    assert 're-run OpenPose' in message


def test_unreadable_path_and_bad_name(tmp_path):
    with pytest.raises(openpose.OpenPoseError, match='cannot be read'):
        openpose.read_frame(tmp_path / 'missing_000000000000_keypoints.json')
    assert openpose.frame_number('v_000000000042_keypoints.json') == 42
    assert openpose.frame_number(os.path.join('a', '00001_00016_keypoints.json')) == 16
    with pytest.raises(openpose.OpenPoseError, match='no frame number'):
        openpose.frame_number('clip_keypoints.json')


def test_summarize_over_clip(tmp_path):
    points = np.zeros((4, 137, 3), np.float32)
    points[:2, FACE, 2] = 0.8
    points[0, BODY.start, 2] = 0.5
    s = openpose.summarize(points)
    assert s['face'] == pytest.approx(0.5) and s['body'] == pytest.approx(1 / 100)
    assert s['hand_left'] == 0.0 and s['frames_with_face'] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        openpose.summarize(np.zeros((4, 136, 3)))
