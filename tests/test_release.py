"""Reading the official release: ids, CSVs, folds, frame order, sampling, and DFEW's real counts."""

import os

import numpy as np
import pytest

from tfds_dfew import release
from tfds_dfew.release import ReleaseError
from tfds_dfew.synthetic import write_split_csvs

# DFEW's published counts (Jiang et al., 2020): per-fold test class counts are known for fold 1; the per-fold totals for all folds.
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
    """Full-scale: 11,697 clips listed (+362 without frames) -> DFEW's published per-fold and per-class counts."""
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


# -- the vote annotation (Annotation/annotation.xlsx) ---------------------------------------------

HEADER = ["1happy", "2sad", "3neutral", "4angry", "5surprise", "6disgust", "7fear", "order", "label"]


def _xlsx(path, rows, *, extra_sheet=None):
    """Writes `rows` (lists of cell values) as the first sheet of an .xlsx with openpyxl directly."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if extra_sheet is not None:
        other = book.create_sheet("notes")
        for row in extra_sheet:
            other.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return str(path)


def test_read_annotation_round_trip_of_the_synthetic_writer(tmp_path):
    """What synthetic.write_annotation wrote (votes in class order, label 0..7) is what is read back."""
    from tfds_dfew import synthetic

    rng = np.random.default_rng(4)
    rows = {}
    for n in range(1, 40):
        if n % 5 == 0:  # multi-labelled: a blend, label 0
            w = np.zeros(7)
            w[rng.choice(7, 2, replace=False)] = [0.45, 0.55]
            rows[f"{n:05d}"] = (synthetic.annotation_votes(rng, w), 0)
        else:
            label = int(rng.integers(7))
            rows[f"{n:05d}"] = (synthetic.annotation_votes(rng, label), label + 1)
    for pad in (False, True):
        path = synthetic.write_annotation(tmp_path / str(pad), rows, pad_ids=pad)
        got = release.read_annotation(path)
        assert sorted(got) == sorted(rows)
        for clip_id, (votes, label) in rows.items():
            assert got[clip_id][0].dtype == np.int32 and got[clip_id][0].shape == (7,)
            np.testing.assert_array_equal(got[clip_id][0], votes)
            assert got[clip_id][1] == label
    assert path == release.annotation_path(str(tmp_path / "True"))


def test_read_annotation_finds_columns_by_name(tmp_path):
    """Title rows, shuffled/renamed columns, extra columns, unpadded/padded/float ids, numbers as text."""
    path = _xlsx(tmp_path / "a.xlsx", [
        ["DFEW votes"],
        [],
        ["Label", "Video_Name", "Fear", "Disgust", "notes", "SURPRISE", "Anger", "Neutral", "Sadness", "Happiness"],
        [3, 17, 0, 0, "ok", 1, 0, 9, 0, 0],
        [0, "00005", 1, 2, None, 0, 3, 0, "4", 0.0],
        [],
        ["1", 123.0, 0, 0, None, 0, 0, 2, 0, 8],
        [5, "16372.mp4", 0, 7, None, 1, 1, 0, 0, 1],
    ], extra_sheet=[["unrelated"]])
    got = release.read_annotation(path)
    expected = {  # training order: happy, sad, neutral, angry, surprise, disgust, fear
        "00017": ([0, 0, 9, 0, 1, 0, 0], 3),
        "00005": ([0, 4, 0, 3, 0, 2, 1], 0),
        "00123": ([8, 0, 2, 0, 0, 0, 0], 1),
        "16372": ([1, 0, 0, 1, 1, 7, 0], 5),
    }
    assert sorted(got) == sorted(expected)
    for clip_id, (votes, label) in expected.items():
        assert got[clip_id][0].tolist() == votes and got[clip_id][1] == label


def _good_rows():
    return [HEADER, [1, 0, 0, 9, 0, 0, 0, 1, 4], [0, 5, 0, 0, 5, 0, 0, 2, 0], [7, 1, 1, 0, 0, 1, 0, 3, 1]]


def _with(row, col, value):
    rows = _good_rows()
    rows[row][col] = value
    return rows


@pytest.mark.parametrize(
    "rows,row_no,match",
    [
        ([[c for c in HEADER if c != "4angry"]] + [r[:3] + r[4:] for r in _good_rows()[1:]], 1,
         "no column for 4angry"),
        ([[c for c in HEADER if c != "label"]] + [r[:8] for r in _good_rows()[1:]], 1, "no column for label"),
        ([[c for c in HEADER if c != "order"]] + [r[:7] + r[8:] for r in _good_rows()[1:]], 1, "no column for order"),
        ([HEADER + ["Happy"]] + [r + [1] for r in _good_rows()[1:]], 1, "more than one column could be 1happy"),
        (_with(2, 1, "x"), 3, "sad vote count of clip 00002 is 'x', not a whole number"),
        (_with(2, 1, 2.5), 3, "not a whole number"),
        (_with(2, 1, None), 3, "sad vote count of clip 00002 is empty"),
        (_with(3, 0, -1), 4, "happy vote count of clip 00003 is -1; votes are >= 0"),
        (_with(3, 8, 8), 4, "label of clip 00003 is 8, outside 0..7"),
        (_with(3, 8, -1), 4, "outside 0..7"),
        (_with(3, 8, "Happy"), 4, "label of clip 00003 is 'Happy', not a whole number"),
        (_with(3, 7, "00001"), 4, r"clip 00001 is listed twice \(also in row 2\)"),
        (_with(2, 7, "clip_b"), 3, "clip id 'clip_b' is not a number"),
        (_with(2, 7, None), 3, "no clip id"),
        ([HEADER], 1, "header but no clips"),
        ([["video", "votes"], [1, 2]], None, "no header row with the emotion vote columns"),
    ],
)
def test_bad_annotation_gets_clear_error(tmp_path, rows, row_no, match):
    path = _xlsx(tmp_path / "Annotation" / "annotation.xlsx", rows)
    with pytest.raises(ReleaseError, match=match) as info:
        release.read_annotation(path)
    assert path in str(info.value)
    if row_no is not None:
        assert f"row {row_no}:" in str(info.value)


def test_annotation_that_is_not_a_workbook(tmp_path):
    path = _write(tmp_path / "annotation.xlsx", "1happy,2sad\n1,2\n")
    with pytest.raises(ReleaseError, match="cannot be read as an .xlsx workbook") as info:
        release.read_annotation(path)
    assert path in str(info.value) and "move it out of the release folder" in str(info.value)


def _annotated_tree(root):
    """Labelled clips 1..5 and 11..15 (one per fold), multi-labelled and stray folders, an annotation."""
    folds = {k: [(f"{k:05d}", k), (f"{k + 10:05d}", 7)] for k in range(1, 6)}
    _small_tree(root, folds)
    base = root / "Clip" / "clip_224x224"
    for name in ("00050", "00060", "00061", "notes"):  # 00051: multi-labelled without frames
        os.makedirs(base / name)
    rows = [HEADER]
    for k in range(1, 6):
        if k != 3:  # clip 3 has no row
            rows.append([0] * 7 + [k, k])
        rows.append([0] * 6 + [10, k + 10, 7])
    rows[1] = [0, 0, 9, 1, 0, 0, 0, 1, 3]  # clip 1: CSV says 1 (happy), the annotation 3 (neutral)
    rows[3] = [5, 5, 0, 0, 0, 0, 0, 2, 0]  # clip 2: CSV says 2, the annotation 0 (no single label)
    rows += [[4, 0, 0, 0, 6, 0, 0, 50, 0], [0, 5, 0, 0, 0, 5, 0, 51, 0], [0, 0, 0, 0, 0, 10, 0, 61, 6]]
    _xlsx(root / "Annotation" / "annotation.xlsx", rows)
    return folds


def test_plan_with_annotation(tmp_path, caplog):
    folds = _annotated_tree(tmp_path)
    with caplog.at_level("WARNING", logger="tfds_dfew.release"):
        plan = release.plan_release(str(tmp_path))
    # the labelled clips and their folds are the CSVs' (the CSV wins on a label conflict)
    assert {c.clip_id: (c.label, c.fold) for c in plan.clips} == {
        cid: (label - 1, k) for k, rows in folds.items() for cid, label in rows}
    assert plan.has_votes and plan.annotation_path == release.annotation_path(str(tmp_path))
    assert plan.unlabelled_source == "annotation"
    assert [(c.clip_id, c.label, c.fold, c.source) for c in plan.unlabelled] == [("00050", -1, 0, "clip_224x224")]
    assert plan.unlabelled[0].frame_dir == str(tmp_path / "Clip" / "clip_224x224" / "00050")
    assert plan.unlabelled_missing == ["00051"]
    assert plan.votes_of("00050").tolist() == [4, 0, 0, 0, 6, 0, 0] and plan.votes_of("00050").dtype == np.int32
    assert plan.votes_of("00001").tolist() == [0, 0, 9, 1, 0, 0, 0]
    assert plan.votes_of("00003").tolist() == [0] * 7 and plan.unannotated == ["00003"]
    assert plan.label_conflicts == [("00001", 1, 3), ("00002", 2, 0)]
    assert [c for c, _ in plan.left_out] == ["00060", "00061"]
    assert "no row" in dict(plan.left_out)["00060"] and "single label 6" in dict(plan.left_out)["00061"]
    text = caplog.text
    assert "2 clips have another label" in text and "00001 (CSV 1, annotation 3)" in text
    assert "00003" in text and "00060" in text
    # class counts see the labelled clips only, exactly as without the annotation
    os.rename(tmp_path / "Annotation", tmp_path / "Annotation.off")
    assert release.plan_release(str(tmp_path)).counts() == plan.counts()


def test_plan_without_annotation_falls_back_to_unlisted_folders(tmp_path, caplog):
    _annotated_tree(tmp_path)
    os.remove(tmp_path / "Annotation" / "annotation.xlsx")
    with caplog.at_level("WARNING", logger="tfds_dfew.release"):
        plan = release.plan_release(str(tmp_path))
    assert not plan.has_votes and plan.annotation_path is None and plan.unlabelled_source == "clip folders"
    assert [(c.clip_id, c.label, c.fold) for c in plan.unlabelled] == [
        ("00050", -1, 0), ("00060", -1, 0), ("00061", -1, 0)]  # 'notes' is not a clip folder
    assert plan.votes_of("00001").tolist() == [0] * 7 and plan.votes == {}
    assert not plan.label_conflicts and not plan.left_out and not plan.unlabelled_missing and not caplog.text
    assert len(plan.clips) == 10
    # only the chosen frame folder counts
    os.makedirs(tmp_path / "Clip" / "clip_224x224_16f" / "00070")
    only16 = release.plan_release(str(tmp_path), frame_source="clip_224x224_16f")
    assert [c.clip_id for c in only16.unlabelled] == ["00070"] and len(only16.missing) == 10
