"""Reading the official release: ids, CSVs, folds, frame order, sampling, and DFEW's real counts."""

import os

import numpy as np
import pytest

from tfds_dfew import release
from tfds_dfew.release import ReleaseError
from tfds_dfew.synthetic import write_split_csvs

# DFEW.md: per-fold test class counts are known for fold 1; the per-fold totals for all folds.
DFEW_CLASS_TOTALS = [2445, 1894, 2669, 2173, 1469, 145, 902]
DFEW_FOLD1_TEST = [489, 379, 534, 435, 294, 29, 181]
DFEW_TEST_SIZES = {1: 2341, 2: 2341, 3: 2340, 4: 2339, 5: 2336}
DFEW_TRAIN_SIZES = {1: 9356, 2: 9356, 3: 9357, 4: 9358, 5: 9361}


def _dfew_scale_folds():
    """Clip assignments with exactly DFEW's fold sizes and class counts (fold 1 exact per class)."""
    rest = np.array(DFEW_CLASS_TOTALS) - np.array(DFEW_FOLD1_TEST)
    per_fold = {1: list(DFEW_FOLD1_TEST)}
    remaining = rest.copy()
    for k in (2, 3, 4, 5):  # split the other classes as evenly as the fold sizes allow
        size = DFEW_TEST_SIZES[k]
        share = np.floor(remaining * size / remaining.sum()).astype(int)
        share[np.argmax(remaining - share)] += size - share.sum()
        per_fold[k] = list(share)
        remaining = remaining - share
    assert (remaining == 0).all()
    folds, next_id = {}, 1
    for k in range(1, 6):
        rows = []
        for label, n in enumerate(per_fold[k]):
            for _ in range(n):
                rows.append((f"{next_id:05d}", label + 1))
                next_id += 3 if next_id % 97 == 0 else 1  # a few gaps, as in the release
        folds[k] = rows
    return folds, per_fold


def test_plan_reproduces_dfew_counts(tmp_path):
    """Full-scale: 11,697 clips listed (+362 without frames) -> DFEW.md's per-fold and per-class counts."""
    folds, per_fold = _dfew_scale_folds()
    root = tmp_path / "DFEW"
    # 362 single-labelled clips without frames, as in the release, spread over the folds
    rng = np.random.default_rng(0)
    missing_ids = []
    next_id = 90000
    for k in range(1, 6):
        for _ in range(72 + (k <= 2)):
            folds[k].append((f"{next_id:05d}", int(rng.integers(1, 8))))
            missing_ids.append(f"{next_id:05d}")
            next_id += 1
    assert len(missing_ids) == 362
    write_split_csvs(root, folds)
    base = root / "Clip" / "clip_224x224_16f"
    for rows in folds.values():
        for clip_id, _ in rows:
            if clip_id not in missing_ids:
                os.makedirs(base / clip_id)
    plan = release.plan_release(str(root))
    assert len(plan.clips) == 11697 and len(plan.missing) == 362
    counts = plan.counts()
    assert counts["fold1"] == DFEW_FOLD1_TEST
    assert [sum(counts[f"fold{k}"]) for k in range(1, 6)] == [DFEW_TEST_SIZES[k] for k in range(1, 6)]
    for k in range(1, 6):
        assert 11697 - sum(counts[f"fold{k}"]) == DFEW_TRAIN_SIZES[k]
    assert list(np.sum([counts[f"fold{k}"] for k in range(1, 6)], axis=0)) == DFEW_CLASS_TOTALS
    assert sorted(c.clip_id for c in plan.missing) == sorted(missing_ids)


def test_fold_splits():
    assert release.fold_splits(1) == ("fold2+fold3+fold4+fold5", "fold1")
    assert release.fold_splits(4) == ("fold1+fold2+fold3+fold5", "fold4")
    with pytest.raises(ValueError):
        release.fold_splits(6)


@pytest.mark.parametrize("raw,expected", [("17", "00017"), ("00017", "00017"), (17, "00017"),
                                          (" 123 ", "00123"), ("16372.mp4", "16372")])
def test_normalize_clip_id(raw, expected):
    assert release.normalize_clip_id(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "", "0", "12a"])
def test_normalize_clip_id_rejects(raw):
    with pytest.raises(ReleaseError, match="clip id"):
        release.normalize_clip_id(raw, where="x.csv")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text,match",
    [
        ("name,emotion\n1,2\n", "expected columns 'video_name,label'"),
        ("video_name,label\n", "header but no clips"),
        ("", "empty"),
        ("video_name,label\n1,8\n", "outside 1..7"),
        ("video_name,label\n1,0\n", "outside 1..7"),
        ("video_name,label\n1,happy\n", "not an integer"),
        ("video_name,label\n1,2\n00001,3\n", "listed twice"),
        ("video_name,label\nx1,2\n", "not a number"),
    ],
)
def test_bad_csv_gets_clear_error(tmp_path, text, match):
    path = _write(tmp_path / "set_1.csv", text)
    with pytest.raises(ReleaseError, match=match) as info:
        release.read_split_csv(path)
    assert path in str(info.value)


def test_csv_unpadded_ids_bom_and_column_order(tmp_path):
    path = _write(tmp_path / "set_1.csv", "\ufefflabel,video_name\n3,17\n7,00020\n")
    assert release.read_split_csv(path) == {"00017": 2, "00020": 6}


def test_missing_root_and_layout(tmp_path):
    with pytest.raises(ReleaseError, match="does not exist"):
        release.plan_release(str(tmp_path / "nope"))
    (tmp_path / "x").mkdir()
    with pytest.raises(ReleaseError, match="EmoLabel_DataSplit"):
        release.plan_release(str(tmp_path / "x"))


def _small_tree(root, folds, with_frames=True):
    write_split_csvs(root, folds)
    if with_frames:
        for rows in folds.values():
            for clip_id, _ in rows:
                os.makedirs(root / "Clip" / "clip_224x224" / clip_id)


def test_clip_in_train_and_test_of_a_fold(tmp_path):
    folds = {k: [(f"{k:05d}", 1), (f"{k + 10:05d}", 2)] for k in range(1, 6)}
    _small_tree(tmp_path, folds)
    train1 = tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_1.csv"
    train1.write_text(train1.read_text() + "1,1\n")
    with pytest.raises(ReleaseError, match="also in test set_1.csv"):
        release.plan_release(str(tmp_path))


def test_clip_in_two_test_sets(tmp_path):
    folds = {k: [(f"{k:05d}", 1)] for k in range(1, 6)}
    _small_tree(tmp_path, folds)
    test2 = tmp_path / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_2.csv"
    test2.write_text(test2.read_text() + "1,1\n")
    with pytest.raises(ReleaseError, match="in both"):
        release.plan_release(str(tmp_path))


def test_missing_folders_are_reported_not_fatal(tmp_path):
    folds = {k: [(f"{k:05d}", 1), (f"{k + 10:05d}", 2)] for k in range(1, 6)}
    _small_tree(tmp_path, folds)
    os.rmdir(tmp_path / "Clip" / "clip_224x224" / "00013")
    plan = release.plan_release(str(tmp_path))
    assert [c.clip_id for c in plan.missing] == ["00013"] and len(plan.clips) == 9
    assert "00013" in release.describe_missing(plan.missing)


def test_16f_folder_preferred(tmp_path):
    folds = {k: [(f"{k:05d}", 1)] for k in range(1, 6)}
    _small_tree(tmp_path, folds)
    os.makedirs(tmp_path / "Clip" / "clip_224x224_16f" / "00002")
    plan = release.plan_release(str(tmp_path))
    sources = {c.clip_id: c.source for c in plan.clips}
    assert sources["00002"] == "clip_224x224_16f" and sources["00001"] == "clip_224x224"
    only_var = release.plan_release(str(tmp_path), frame_source="clip_224x224")
    assert all(c.source == "clip_224x224" for c in only_var.clips)


def test_frames_sorted_numerically(tmp_path):
    for name in ["10.jpg", "2.jpg", "1.jpg", "notes.txt", "11.JPG"]:
        (tmp_path / name).write_bytes(b"")
    assert [os.path.basename(p) for p in release.list_frames(str(tmp_path))] == ["1.jpg", "2.jpg", "10.jpg", "11.JPG"]
    other = tmp_path / "b"
    other.mkdir()
    for name in ["00001_00010.jpg", "00001_00002.jpg"]:
        (other / name).write_bytes(b"")
    assert [os.path.basename(p) for p in release.list_frames(str(other))] == ["00001_00002.jpg", "00001_00010.jpg"]


def test_odd_frame_names_and_empty_folder(tmp_path):
    (tmp_path / "frame.jpg").write_bytes(b"")
    with pytest.raises(ReleaseError, match="no frame number"):
        release.list_frames(str(tmp_path), clip_id="00001")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReleaseError, match="no frame images"):
        release.list_frames(str(empty), clip_id="00002")


@pytest.mark.parametrize("n", [1, 11, 15, 16, 17, 40, 847])
def test_sample_indices(n):
    idx = release.sample_indices(n)
    assert idx.shape == (16,) and idx[0] == 0 and idx[-1] == n - 1
    assert (np.diff(idx) >= 0).all() and idx.max() < n
    if n >= 16:
        assert len(set(idx.tolist())) == 16  # no repeats when there are enough frames
    else:
        assert set(idx.tolist()) == set(range(n))  # short clips: every frame used, some twice
    expected = np.rint(np.linspace(0, n - 1, 16))  # float64 reference: evenly spaced
    np.testing.assert_array_equal(idx, expected)


def test_corrupt_frame_names_file_and_clip(tmp_path):
    path = tmp_path / "00007_00001.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ReleaseError, match="00007") as info:
        release.load_frame(str(path), 64, clip_id="00007")
    assert str(path) in str(info.value)
