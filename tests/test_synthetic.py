"""Tests for the synthetic DFEW-layout generator: layout, splits, annotation, frames, OpenPose JSON, classes."""

import csv
import hashlib
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from tfds_dfew import synthetic

SEED = 3
NUM_CLIPS = 40
SIZE = 64


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfew")
    summary = synthetic.generate(root, NUM_CLIPS, seed=SEED, frame_size=SIZE, workers=1)
    return str(root), summary


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _split(root, sub, k):
    header, rows = _read_csv(
        os.path.join(root, "EmoLabel_DataSplit", f"{sub}(single-labeled)", f"set_{k}.csv"))
    assert header == ["video_name", "label"]
    return {f"{int(name):05d}": int(label) for name, label in rows}, [r[0] for r in rows]


def _folder(root, which, clip_id):
    return os.path.join(root, "Clip", which, clip_id)


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# ----------------------------------------------------------------------------- layout
def test_layout_and_file_names(tree):
    root, summary = tree
    assert sorted(os.listdir(root)) == ["Annotation", "Clip", "EmoLabel_DataSplit", "OpenPose"]
    assert os.listdir(os.path.join(root, "Annotation")) == ["annotation.xlsx"]
    assert sorted(os.listdir(os.path.join(root, "Clip"))) == ["clip_224x224", "clip_224x224_16f", "original"]
    ids = summary["ids"]
    assert ids[0] == "00001" and all(len(i) == 5 and i.isdigit() for i in ids)
    numbers = [int(i) for i in ids]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[-1] > len(numbers), "ids should skip some numbers, as DFEW's do"
    assert len(ids) == NUM_CLIPS + len(summary["multi_ids"])

    var = sorted(os.listdir(os.path.join(root, "Clip", "clip_224x224")))
    fixed = sorted(os.listdir(os.path.join(root, "Clip", "clip_224x224_16f")))
    pose = sorted(os.listdir(os.path.join(root, "OpenPose")))
    expected = sorted(set(ids) - set(summary["missing_ids"]))
    assert var == fixed == pose == expected
    for cid in expected:
        n = summary["num_frames"][cid]
        assert sorted(os.listdir(_folder(root, "clip_224x224", cid))) == [
            f"{cid}_{k:05d}.jpg" for k in range(1, n + 1)]
        assert sorted(os.listdir(_folder(root, "clip_224x224_16f", cid))) == [
            f"{cid}_{k:05d}.jpg" for k in range(1, 17)]
        assert sorted(os.listdir(os.path.join(root, "OpenPose", cid))) == [
            f"{cid}_{k:012d}_keypoints.json" for k in range(n)]
    with Image.open(os.path.join(_folder(root, "clip_224x224", expected[0]),
                                 f"{expected[0]}_00001.jpg")) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE, SIZE)


def test_csvs_folds_are_disjoint_stratified_and_complement(tree):
    root, summary = tree
    tests = [_split(root, "test", k) for k in range(1, 6)]
    trains = [_split(root, "train", k) for k in range(1, 6)]
    everything = {}
    for labels, raw_names in tests + trains:
        assert all(not name.startswith("0") for name in raw_names), "ids are written unpadded"
        assert set(labels.values()) <= set(range(1, 8))
        for cid, lab in labels.items():
            assert everything.setdefault(cid, lab) == lab, f"clip {cid} has two labels"
    test_sets = [set(t[0]) for t in tests]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not test_sets[i] & test_sets[j]
    all_labelled = set().union(*test_sets)
    assert len(all_labelled) == NUM_CLIPS == summary["num_labelled"]
    assert all_labelled == set(summary["labels"])
    for k in range(5):
        assert set(trains[k][0]) == all_labelled - test_sets[k]
    sizes = [len(s) for s in test_sets]
    assert max(sizes) - min(sizes) <= 1
    # Stratified: each class is spread over the folds within one clip.
    labels = tests[0][0] | tests[1][0] | tests[2][0] | tests[3][0] | tests[4][0]
    for c in range(1, 8):
        per_fold = [sum(1 for cid in s if labels[cid] == c) for s in test_sets]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    counts = np.bincount(list(labels.values()), minlength=8)[1:]
    assert (counts >= 0.08 * NUM_CLIPS - 1).all(), counts
    assert summary["class_counts"] == dict(zip(synthetic.CLASS_NAMES, counts.tolist()))


def test_missing_multi_and_short_clips(tree):
    root, summary = tree
    labelled = set(summary["labels"])
    missing = summary["missing_ids"]
    assert len(missing) >= 1
    for cid in missing:
        assert cid in labelled, "a missing clip must still be listed in a CSV"
        assert not os.path.exists(_folder(root, "clip_224x224", cid))
        assert not os.path.exists(_folder(root, "clip_224x224_16f", cid))
    multi = summary["multi_ids"]
    assert len(multi) == round(0.05 * NUM_CLIPS) and not set(multi) & labelled
    for cid in multi:
        assert os.path.isdir(_folder(root, "clip_224x224", cid))
    lengths = {cid: len(os.listdir(_folder(root, "clip_224x224", cid)))
               for cid in os.listdir(os.path.join(root, "Clip", "clip_224x224"))}
    short = [cid for cid, n in lengths.items() if n < 16]
    assert short and sorted(short) == summary["short_ids"]
    assert all(11 <= lengths[cid] <= 15 for cid in short)
    assert all(16 <= n <= 60 for cid, n in lengths.items() if cid not in short)


def test_16f_frames_are_the_variable_length_clip_resampled(tree):
    root, summary = tree
    checked_short = False
    for cid, n in summary["num_frames"].items():
        # Reference: 16 evenly spaced positions over [0, n-1], rounded (float64, no ties occur).
        expected = [int(round(i * (n - 1) / 15.0)) for i in range(16)]
        for k, index in enumerate(expected):
            a = open(os.path.join(_folder(root, "clip_224x224_16f", cid),
                                  f"{cid}_{k + 1:05d}.jpg"), "rb").read()
            b = open(os.path.join(_folder(root, "clip_224x224", cid),
                                  f"{cid}_{index + 1:05d}.jpg"), "rb").read()
            assert a == b, (cid, k, index)
        checked_short |= n < 16
    assert checked_short
    np.testing.assert_array_equal(synthetic.resample_indices(13),
                                  [0, 1, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9, 10, 10, 11, 12])


def test_same_arguments_same_bytes_any_worker_count(tmp_path):
    a = synthetic.generate(tmp_path / "a", 10, seed=7, frame_size=48, workers=1, multi_frac=0.2)
    b = synthetic.generate(tmp_path / "b", 10, seed=7, frame_size=48, workers=2, multi_frac=0.2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert a["labels"] == b["labels"] and a["num_frames"] == b["num_frames"]
    c = synthetic.generate(tmp_path / "c", 10, seed=8, frame_size=48, workers=1, multi_frac=0.2)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert c["labels"] != a["labels"] or c["num_frames"] != a["num_frames"]


def test_refuses_non_empty_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        synthetic.generate(tmp_path, 6, frame_size=40)
    assert synthetic.main(["--out", str(tmp_path), "--clips", "6", "--frame_size", "40"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path), "--clips", "6", "--frame_size", "40",
                           "--overwrite", "--no_openpose", "--no_annotation", "--missing_frac", "0"]) == 0
    out = capsys.readouterr().out
    assert "6 single-labelled" in out and "fold" in out
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "OpenPose").exists() and not (tmp_path / "Annotation").exists()
    assert len(os.listdir(tmp_path / "Clip" / "clip_224x224")) == 6
    with pytest.raises(ValueError, match="class_probs"):
        synthetic.generate(tmp_path / "x", 6, class_probs=[1, 2, 3])


# ----------------------------------------------------------------------------- annotation
def _sheet_rows(path):
    """All rows of the workbook's only sheet, read with openpyxl directly."""
    import openpyxl

    book = openpyxl.load_workbook(path)
    assert len(book.worksheets) == 1
    return [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]


def test_annotation_has_a_row_per_clip_with_votes_and_label(tree):
    root, summary = tree
    rows = _sheet_rows(os.path.join(root, "Annotation", "annotation.xlsx"))
    assert rows[0] == ["1happy", "2sad", "3neutral", "4angry", "5surprise", "6disgust", "7fear",
                       "order", "label"]
    body = rows[1:]
    assert [r[7] for r in body] == [int(c) for c in summary["ids"]], "one row per id, sorted, unpadded ints"
    multi = set(summary["multi_ids"])
    for r in body:
        cid = f"{r[7]:05d}"
        votes, label = np.array(r[:7]), r[8]
        assert all(isinstance(v, int) for v in r[:7] + [label])
        assert votes.sum() == 10 and (votes >= 0).all()
        assert votes.tolist() == summary["votes"][cid] and label == summary["annotation_labels"][cid]
        if cid in multi:  # two blended classes, no clear majority, no single label
            assert label == 0 and votes.max() <= 6 and (votes > 0).sum() == 2
        else:  # the CSV label has a clear majority (>6 of 10 votes); listed-but-missing clips too
            assert label == summary["labels"][cid] and votes.argmax() == label - 1 and votes.max() >= 7
    assert set(summary["missing_ids"]) <= {f"{r[7]:05d}" for r in body}
    singles = [np.array(r[:7]) for r in body if r[8]]
    assert any(v.max() < 10 for v in singles), "some single-labelled clips have scattered votes"


def test_annotation_votes_rules():
    rng = np.random.default_rng(0)
    for label in range(7):
        for _ in range(20):
            v = synthetic.annotation_votes(rng, label)
            assert v.shape == (7,) and v.sum() == 10 and v.argmax() == label and 7 <= v[label] <= 10
    # blends: largest-remainder rounding of 10 * weights (float64 reference by hand)
    w = np.zeros(7)
    w[1], w[5] = 0.55, 0.45  # 5.5 / 4.5: the tie goes to the lower class index
    np.testing.assert_array_equal(synthetic.annotation_votes(rng, w), [0, 6, 0, 0, 0, 4, 0])
    w = np.zeros(7)
    w[0], w[6] = 0.43, 0.57  # 4.3 / 5.7 -> 4 / 6
    np.testing.assert_array_equal(synthetic.annotation_votes(rng, w), [4, 0, 0, 0, 0, 0, 6])
    np.testing.assert_array_equal(synthetic.annotation_votes(rng, np.ones(7), num_annotators=9), [2, 2, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="0..6"):
        synthetic.annotation_votes(rng, 7)


def test_write_annotation_bytes_do_not_depend_on_the_clock(tmp_path):
    rows = {"00017": ([1, 2, 3, 4, 0, 0, 0], 4), "3": ([5, 5, 0, 0, 0, 0, 0], 0)}
    a = synthetic.write_annotation(tmp_path / "a", rows)
    b = synthetic.write_annotation(tmp_path / "b", rows, pad_ids=True)
    with zipfile.ZipFile(a) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = z.read("docProps/core.xml").decode()
    assert core.count("2020-01-01T00:00:00Z") == 2  # created and modified
    assert _sheet_rows(a)[1:] == [[5, 5, 0, 0, 0, 0, 0, 3, 0], [1, 2, 3, 4, 0, 0, 0, 17, 4]]
    assert [r[7] for r in _sheet_rows(b)[1:]] == ["00003", "00017"]
    again = synthetic.write_annotation(tmp_path / "c", rows)
    assert open(a, "rb").read() == open(again, "rb").read()
    with pytest.raises(ValueError, match="0..7"):
        synthetic.write_annotation(tmp_path / "d", {"1": ([0] * 7, 8)})


# ----------------------------------------------------------------------------- OpenPose JSON
def test_openpose_json_format_and_degenerate_frames(tree):
    root, summary = tree
    empty = two = dropped = 0
    for cid in sorted(os.listdir(os.path.join(root, "OpenPose"))):
        for name in sorted(os.listdir(os.path.join(root, "OpenPose", cid))):
            with open(os.path.join(root, "OpenPose", cid, name)) as fh:
                doc = json.load(fh)
            assert doc["version"] == 1.3
            people = doc["people"]
            empty += not people
            two += len(people) == 2
            assert len(people) <= 2
            for person in people:
                assert person["person_id"] == [-1]
                assert len(person["pose_keypoints_2d"]) == 75
                assert len(person["face_keypoints_2d"]) == 210
                assert len(person["hand_left_keypoints_2d"]) == 63
                assert len(person["hand_right_keypoints_2d"]) == 63
                assert person["pose_keypoints_3d"] == [] and person["face_keypoints_3d"] == []
                face = np.asarray(person["face_keypoints_2d"]).reshape(70, 3)
                found = face[:, 2] > 0
                assert (face[~found] == 0).all()
                assert ((face[found, 2] > 0.3) & (face[found, 2] <= 1.0)).all()
                assert ((face[found, :2] >= 0) & (face[found, :2] < SIZE)).all()
                body = np.asarray(person["pose_keypoints_2d"]).reshape(25, 3)
                assert (body[[3, 4, 6, 7, 8] + list(range(9, 15)) + list(range(19, 25))] == 0).all()
            conf = [np.asarray(p["face_keypoints_2d"]).reshape(70, 3) for p in people]
            spans = [np.ptp(c[c[:, 2] > 0, 0]) for c in conf]
            if people:
                main = int(np.argmax(spans))
                body = np.asarray(people[main]["pose_keypoints_2d"]).reshape(25, 3)
                face = conf[main]
                assert (body[[0, 1, 2, 5], 2] > 0).all()  # nose, neck, shoulders
                if face[8, 2] > 0:  # neck below the chin, chin below the nose
                    assert body[1, 1] > face[8, 1] - 2 > body[0, 1]
                assert body[2, 0] < body[1, 0] < body[5, 0]
            if len(people) == 2:
                means = [c[c[:, 2] > 0, 2].mean() for c in conf]
                assert spans[1 - main] < 0.6 * spans[main] and means[1 - main] < means[main]
            elif len(people) == 1:
                dropped += int((np.asarray(people[0]["face_keypoints_2d"])[2::3] == 0).sum())
    assert empty >= 1 and two >= 1 and dropped >= 1, (empty, two, dropped)


def test_openpose_points_follow_the_drawn_face(tree):
    root, summary = tree
    cid = next(c for c in summary["labels"] if c not in summary["missing_ids"])
    n = summary["num_frames"][cid]
    label = summary["labels"][cid] - 1
    frames, kp, meta = synthetic.draw_clip(synthetic.clip_rng(SEED, cid), label, n, SIZE)
    first = frames[0]
    with Image.open(os.path.join(_folder(root, "clip_224x224", cid), f"{cid}_00001.jpg")) as im:
        decoded = np.asarray(im.convert("RGB"), np.float64)
    assert np.abs(decoded - first).mean() < 6.0  # same picture, up to JPEG loss
    matched = 0
    for f in range(n):
        with open(os.path.join(root, "OpenPose", cid, f"{cid}_{f:012d}_keypoints.json")) as fh:
            people = json.load(fh)["people"]
        if not people:
            continue
        face = max((np.asarray(p["face_keypoints_2d"]).reshape(70, 3) for p in people),
                   key=lambda a: np.ptp(a[a[:, 2] > 0, 0]))
        ok = face[:, 2] > 0
        assert np.abs(face[ok, :2] - kp[f, ok, :2]).max() < 1.0
        matched += 1
    assert matched >= n - 3


def test_face_keypoints_lie_in_the_drawn_face():
    size = 128
    for seed in range(4):
        frames, kp, meta = synthetic.draw_clip(np.random.default_rng(seed), 2, 12, size)
        assert frames.shape == (12, size, size, 3) and frames.dtype == np.uint8
        assert kp.shape == (12, 70, 3) and kp.dtype == np.float32
        assert ((kp[..., 2] > 0.3) & (kp[..., 2] <= 1.0)).all()
        # Inside the face ellipse (jaw points on its rim), in the face's own rotated frame.
        rel = kp[..., :2] - meta["face_center"][:, None]
        ang = meta["face_angle"][:, None]
        u = (rel[..., 0] * np.cos(ang) + rel[..., 1] * np.sin(ang)) / meta["face_scale"][:, None]
        v = (-rel[..., 0] * np.sin(ang) + rel[..., 1] * np.cos(ang)) / meta["face_scale"][:, None]
        rx, ry = meta["face_axes"]
        r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        assert (r[:, :17] > 0.97).all() and (r[:, :17] < 1.03).all()
        assert (r[:, 17:] < 0.9).all()
        # Pixels: the pupils (open eyes) are darker than the cheeks, left of the nose tip is
        # skin, the face is not the background.
        lum = frames.astype(np.float64).mean(-1)
        open_eyes = meta["blink"] > 0.9

        def at(points):
            x = np.clip(np.round(points[..., 0]).astype(int), 0, size - 1)
            y = np.clip(np.round(points[..., 1]).astype(int), 0, size - 1)
            return lum[np.arange(len(lum))[:, None], y, x]

        pupils = at(kp[:, 68:70])[open_eyes]
        cheeks = at((kp[:, [3, 13]] + kp[:, [31, 35]]) / 2)[open_eyes]
        assert pupils.mean() < cheeks.mean() - 30


# ----------------------------------------------------------------------------- classes
def _lip_profile(frame, meta, f):
    """Mean lip height at the mouth corners minus at the centre, in face units (+ = lower)."""
    u = np.linspace(-0.45, 0.45, 91)
    v = meta["mouth_y"] + np.linspace(-0.3, 0.3, 61)
    uu, vv = np.meshgrid(u, v)
    a, s, c = meta["face_angle"][f], meta["face_scale"][f], meta["face_center"][f]
    x = c[0] + s * (np.cos(a) * uu - np.sin(a) * vv)
    y = c[1] + s * (np.sin(a) * uu + np.cos(a) * vv)
    patch = frame[np.clip(np.round(y).astype(int), 0, frame.shape[0] - 1),
                  np.clip(np.round(x).astype(int), 0, frame.shape[1] - 1)].astype(np.float64)
    ratio = patch[..., 1] / np.maximum(patch[..., 0], 1.0)  # lips are less green than skin
    lip = ratio < 0.85 * np.median(ratio)
    w = meta["mouth_w"]

    def mean_v(cols):
        m = lip[:, cols]
        rows = np.nonzero(m)[0]
        return v[rows].mean()

    corners = mean_v(np.abs(u) > 0.7 * w)
    centre = mean_v(np.abs(u) < 0.15 * w)
    return corners - centre


def test_class_detectable_at_apex_and_not_at_intensity_zero():
    size = 160
    happy, sad, neutral = [], [], []
    for seed in range(6):
        fh, kh, mh = synthetic.draw_clip(np.random.default_rng(seed), 0, 10, size, intensity=1.0)
        fs, ks, ms = synthetic.draw_clip(np.random.default_rng(seed), 1, 10, size, intensity=1.0)
        fn, _, mn = synthetic.draw_clip(np.random.default_rng(seed), 2, 10, size, intensity=1.0)
        a = mh["apex_frame"]
        happy.append(_lip_profile(fh[a], mh, a))
        sad.append(_lip_profile(fs[a], ms, a))
        neutral.append(_lip_profile(fn[a], mn, a))
        # Keypoints agree: corners (48, 54) above the lip centre for happy, below for sad.
        lift_h = kh[a, [51, 57], 1].mean() - kh[a, [48, 54], 1].mean()
        lift_s = ks[a, [51, 57], 1].mean() - ks[a, [48, 54], 1].mean()
        assert lift_h > 0.05 * mh["face_scale"][a] > 0 > lift_s
        # Intensity 0: every class gives the very same clip.
        zero = [synthetic.draw_clip(np.random.default_rng(seed), c, 10, size, intensity=0.0)
                for c in range(7)]
        for frames, kp, _ in zero[1:]:
            np.testing.assert_array_equal(frames, zero[0][0])
            np.testing.assert_array_equal(kp, zero[0][1])
    happy, sad, neutral = np.array(happy), np.array(sad), np.array(neutral)
    assert (happy < -0.05).all() and (sad > 0.05).all(), (happy, sad)
    assert (np.abs(neutral) < 0.03).all(), neutral


def test_look_alike_pairs_are_closer_than_other_pairs():
    def shape(label, intensity):
        _, kp, meta = synthetic.draw_clip(np.random.default_rng(11), label, 6, 96,
                                          intensity=intensity)
        a = meta["apex_frame"]
        return kp[a, :, :2] / meta["face_scale"][a]

    happy, angry, surprise, disgust, fear = 0, 3, 4, 5, 6

    def dist(i, j, t):
        return np.linalg.norm(shape(i, t) - shape(j, t))

    for t in (0.3, 1.0):
        assert dist(fear, surprise, t) < dist(happy, surprise, t)
        assert dist(angry, disgust, t) < dist(happy, angry, t)
    assert dist(fear, surprise, 0.3) < 0.5 * dist(fear, surprise, 1.0)


def test_draw_clip_blend_and_edge_cases():
    frames, kp, meta = synthetic.draw_clip(np.random.default_rng(0), np.eye(7)[4], 1, 40)
    ref, ref_kp, _ = synthetic.draw_clip(np.random.default_rng(0), 4, 1, 40)
    np.testing.assert_array_equal(frames, ref)
    assert frames.shape == (1, 40, 40, 3) and meta["intensity"].shape == (1,)
    with pytest.raises(ValueError, match="label"):
        synthetic.draw_clip(np.random.default_rng(0), 7, 4, 64)


# ----------------------------------------------------------------------------- CSV helper
def test_write_split_csvs(tmp_path):
    folds = {1: [("00017", 1), ("3", 7)], 2: [("00005", 2)], 3: [("12", 3)],
             4: [("100", 4)], 5: [("00009", 6), ("8", 5)]}
    synthetic.write_split_csvs(tmp_path, folds)
    header, rows = _read_csv(tmp_path / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv")
    assert header == ["video_name", "label"] and rows == [["3", "7"], ["17", "1"]]
    _, rows = _read_csv(tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_1.csv")
    assert rows == [["5", "2"], ["8", "5"], ["9", "6"], ["12", "3"], ["100", "4"]]
    synthetic.write_split_csvs(tmp_path / "padded", folds, pad_ids=True)
    _, rows = _read_csv(tmp_path / "padded" / "EmoLabel_DataSplit" / "test(single-labeled)" /
                        "set_5.csv")
    assert rows == [["00008", "5"], ["00009", "6"]]
    assert len(list((tmp_path / "EmoLabel_DataSplit").rglob("*.csv"))) == 10
    with pytest.raises(ValueError, match="disjoint"):
        synthetic.write_split_csvs(tmp_path / "bad", {1: [("1", 1)], 2: [("00001", 2)]})
    with pytest.raises(ValueError, match="1..7"):
        synthetic.write_split_csvs(tmp_path / "bad2", {1: [("1", 0)]})


# ----------------------------------------------------------------------------- hard scenario
from tfds_dfew import synthetic_body, synthetic_hard  # noqa: E402

HAPPY, SAD, NEUTRAL, ANGRY, SURPRISE, DISGUST, FEAR = range(7)
DFEW_COUNTS = (2445, 1894, 2669, 2173, 1469, 145, 902)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_class_skew_folds_unlabelled_share_and_label_noise(seed):
    p = synthetic.plan(seed=seed, scenario="hard")  # decides everything, draws nothing
    labels = p["labels"]
    assert len(labels) == synthetic_hard.DEFAULT_CLIPS == 1000
    counts = np.bincount(list(labels.values()), minlength=8)[1:]
    # DFEW's order of frequencies (Disgust rarest, Fear next ... Neutral most frequent) ...
    assert list(np.argsort(counts)) == list(np.argsort(DFEW_COUNTS))
    # ... and its proportions, but for the floor on Disgust (1.2% in DFEW).
    assert counts[DISGUST] == round(synthetic_hard.DISGUST_FLOOR * 1000) == 55
    dfew = np.delete(np.asarray(DFEW_COUNTS, float), DISGUST)
    np.testing.assert_allclose(np.delete(counts, DISGUST), dfew / dfew.sum() * (1000 - 55), atol=1)
    # Every class keeps >= 10 test clips with frames in every fold (stratified folds; the clips
    # without a face come from the four most frequent classes only).
    missing = set(p["missing"])
    assert len(missing) == 30 and {labels[c] for c in missing} <= {1, 2, 3, 4}
    for k in range(1, 6):
        per_class = np.bincount([labels[c] for c in labels if p["folds"][c] == k and c not in missing],
                                minlength=8)[1:]
        assert per_class.min() >= 10, (k, per_class)
    # Unlabelled (multi-labelled) clips: DFEW's share of the clips with frames (4,209 / 15,906).
    share = len(p["multi"]) / len(p["drawn"])
    assert abs(share - 4209 / 15906) < 0.01, share
    # Label noise: exactly 4% of the labelled clips are drawn as another class.
    noisy = p["noisy"]
    assert len(noisy) == round(synthetic_hard.LABEL_NOISE * 1000) == 40
    assert set(noisy) <= set(labels) and all(noisy[c] != labels[c] and 1 <= noisy[c] <= 7 for c in noisy)
    assert len(set(noisy.values())) >= 5
    assert synthetic.plan(100, seed)["noisy"] == {}  # easy: no label noise


def test_hard_face_pairs_share_their_expression():
    table = synthetic_hard.EXPRESSIONS
    np.testing.assert_array_equal(table[[HAPPY, SAD, NEUTRAL]],
                                  synthetic._EXPRESSIONS[[HAPPY, SAD, NEUTRAL]])
    assert set(synthetic_hard.FACE_PAIRS) == {(SURPRISE, FEAR), (ANGRY, DISGUST)}
    for a, b in synthetic_hard.FACE_PAIRS:
        diff = np.abs(table[a] - table[b])
        assert (diff > 1e-12).sum() <= 2 and diff.max() < 0.065, diff
        others = min(np.linalg.norm(table[a] - table[c]) for c in range(7) if c not in (a, b))
        assert np.linalg.norm(table[a] - table[b]) < 0.15 * others

    # Drawn with the same seed, a pair's faces are nearly the same image; other classes are not.
    number = next(k for k in range(100, 200)
                  if synthetic_hard.clip_params(synthetic.clip_rng(4, k, 3), 0, 16).peak > 0.8)
    frames = {c: synthetic_hard.draw(4, number, c, 16, 64, openpose=False)[0].astype(np.float64)
              for c in range(7)}

    def dist(i, j):
        return np.abs(frames[i] - frames[j]).mean()

    assert dist(SURPRISE, FEAR) < 0.25 * min(dist(SURPRISE, c) for c in (HAPPY, SAD, NEUTRAL, ANGRY))
    assert dist(ANGRY, DISGUST) < 0.25 * min(dist(ANGRY, c) for c in (HAPPY, SAD, NEUTRAL, SURPRISE))


def _gesture_stats(params, num_frames=16):
    """Face-local statistics of a clip's body and hands (y down; face half-width = 1)."""
    track = synthetic_body.pose_track(params, num_frames)
    wrists = track["body"][:, [4, 7]]
    hands = track["hands"]
    tips = hands[:, :, [4, 8, 12, 16, 20]]
    return {"height": -wrists[..., 1].min(),  # the highest a wrist gets
            "openness": np.linalg.norm(tips - hands[:, :, :1], axis=-1).mean(),  # fist < open hand
            # up-and-down travel beyond one rise (beating) of the busier wrist
            "shake": (np.abs(np.diff(wrists[..., 1], axis=0)).sum(0) - np.ptp(wrists[..., 1], axis=0)).max(),
            "centre": np.abs(wrists[-1, :, 0]).max()}  # wrists near the midline at the end


def test_hard_pose_separates_the_face_pairs_and_not_the_face_clear_classes():
    n = 150
    params = {c: [synthetic_hard.clip_params(synthetic.clip_rng(9, k, 3), c, 16) for k in range(n)]
              for c in range(7)}
    # Class-independent draws: the same stream gives the same intensity, head turn, occluder,
    # framing and motion numbers for every class; the face-clear classes also the same gesture.
    for k in range(n):
        ref = params[HAPPY][k]
        for c in range(1, 7):
            p = params[c][k]
            assert (p.peak, p.weak, p.framing) == (ref.peak, ref.weak, ref.framing)
            np.testing.assert_array_equal(p.yaw, ref.yaw)
            assert p.motion.keys() == ref.motion.keys()
            assert all(np.array_equal(p.motion[key], ref.motion[key]) for key in p.motion)
        assert params[SAD][k].gesture == params[NEUTRAL][k].gesture == ref.gesture
    # A pair clip shows its own gesture ~80% of the time; the face-clear classes rarely do.
    for c, gesture in synthetic_hard.CLASS_GESTURE.items():
        own = np.mean([p.gesture == gesture for p in params[c]])
        assert 0.7 < own < 0.9, (c, own)
        assert np.mean([p.gesture == gesture for p in params[HAPPY]]) < 0.15
    # Weak expressions in about a third of the clips.
    assert 0.25 < np.mean([p.weak for p in params[HAPPY]]) < 0.45

    stats = {c: [_gesture_stats(p) for p in params[c]] for c in (SURPRISE, FEAR, ANGRY, DISGUST)}

    def median(c, key):
        return float(np.median([s[key] for s in stats[c]]))

    # surprise: hands thrown up beside the head; fear: hands to the chest, near the midline.
    assert median(SURPRISE, "height") > median(FEAR, "height") + 2.0
    assert median(FEAR, "centre") < median(SURPRISE, "centre") - 1.5
    # angry: pounding fists; disgust: one open hand pushed out, slowly.
    assert median(ANGRY, "openness") < 0.8 * median(DISGUST, "openness")
    assert median(ANGRY, "shake") > 2.0 * median(DISGUST, "shake") + 1.0


@pytest.fixture(scope="module")
def hard_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfew_hard")
    summary = synthetic.generate(root, 40, seed=5, frame_size=48, scenario="hard", max_frames=20,
                                 workers=1)
    return str(root), summary


def test_hard_tree_layout_noise_and_missing_keypoints(hard_tree):
    root, summary = hard_tree
    assert summary["scenario"] == "hard" and summary["frame_size"] == 48
    assert sorted(os.listdir(root)) == ["Annotation", "Clip", "EmoLabel_DataSplit", "OpenPose"]
    assert len(summary["multi_ids"]) == 14 and len(summary["noisy_ids"]) == 2
    for cid, drawn in summary["noisy_ids"].items():
        assert drawn != summary["labels"][cid]
        assert summary["annotation_labels"][cid] == summary["labels"][cid]  # votes follow the CSV
    counts = {"empty": 0, "frames": 0, "wrist_missing": 0, "wrist_found": 0, "hand_lost": 0,
              "face_partial": 0, "hand_points": 0}
    for cid in os.listdir(os.path.join(root, "OpenPose")):
        folder = os.path.join(root, "OpenPose", cid)
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as fh:
                doc = json.load(fh)
            counts["frames"] += 1
            if not doc["people"]:
                counts["empty"] += 1
                continue
            person = doc["people"][0]
            body = np.reshape(person["pose_keypoints_2d"], (25, 3))
            face = np.reshape(person["face_keypoints_2d"], (70, 3))
            for wrist, key in ((4, "hand_right_keypoints_2d"), (7, "hand_left_keypoints_2d")):
                hand = np.reshape(person[key], (21, 3))
                assert len(person[key]) == 63
                if body[wrist, 2] > 0:
                    counts["wrist_found"] += 1
                    counts["hand_lost"] += int((hand[:, 2] == 0).all())
                    counts["hand_points"] += int((hand[:, 2] > 0).sum())
                else:
                    counts["wrist_missing"] += 1
                    assert (hand == 0).all(), "no hand without its wrist"
            counts["face_partial"] += int(0 < (face[:, 2] == 0).sum() < 70)
            assert (body[[10, 11, 13, 14, 19, 20, 21, 22, 23, 24]] == 0).all()  # legs: not in shot
    assert counts["empty"] > 0 and counts["face_partial"] > 0
    assert counts["wrist_missing"] > 0 and counts["wrist_found"] > 0
    assert counts["hand_lost"] > 0 and counts["hand_points"] > 0


def test_hard_same_seed_same_bytes(tmp_path, hard_tree, capsys):
    a = synthetic.generate(tmp_path / "a", 8, seed=2, frame_size=40, scenario="hard", max_frames=17,
                           workers=1)
    b = synthetic.generate(tmp_path / "b", 8, seed=2, frame_size=40, scenario="hard", max_frames=17,
                           workers=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert a["labels"] == b["labels"] and a["noisy_ids"] == b["noisy_ids"]
    assert synthetic.main(["--scenario", "hard", "--out", str(tmp_path / "c"), "--clips", "8",
                           "--seed", "3", "--frame_size", "40", "--max_frames", "17"]) == 0
    assert "hard scenario" in capsys.readouterr().out
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    with pytest.raises(ValueError, match="scenario"):
        synthetic.generate(tmp_path / "d", 8, scenario="medium")
