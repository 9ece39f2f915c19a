"""The `dfew` TFDS builder on generated release trees: counts, frames, labels, bad input, no TF."""

import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.helpers import run_module
from tfds_dfew import build, release
from tfds_dfew.release import ReleaseError


def test_no_tensorflow_needed():
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None


def test_counts_folds_and_labels_match_the_csvs(tiny_release, tiny_tfds):
    root, summary = tiny_release
    data_dir, builder = tiny_tfds
    plan = release.plan_release(root)
    expected_ids = {k: sorted(c.clip_id for c in plan.by_fold(k)) for k in range(1, 6)}
    labels = {c.clip_id: c.label for c in plan.clips}
    seen = set()
    for k in range(1, 6):
        source = tfds.data_source("dfew/frames64", split=f"fold{k}", data_dir=data_dir, download=False)
        ids = []
        for i in range(len(source)):
            r = source[i]
            clip_id = r["clip_id"].decode()
            ids.append(clip_id)
            assert r["label"] == labels[clip_id] and r["fold"] == k
            assert len(r["frames"]) == 16 and r["frames"][0].shape == (64, 64, 3)
            assert r["num_frames"] == summary["num_frames"][clip_id]
        assert sorted(ids) == expected_ids[k]
        seen.update(ids)
    # every labelled clip with frames stored exactly once; the ones without frames left out
    assert len(seen) == len(plan.clips) and not seen & set(summary["missing_ids"])
    assert builder.info.metadata["missing_clips"] == sorted(summary["missing_ids"])
    # training split of fold 1 = the other four stored test sets
    train, test = release.fold_splits(1)
    assert len(tfds.data_source("dfew/frames64", split=train, data_dir=data_dir, download=False)) == \
        len(plan.clips) - len(expected_ids[1])
    # the closing summary carries the same numbers
    text = build.summary(builder)
    assert f"all     {len(plan.clips):>7}" in text and "no frame folder" in text


def test_frames_match_the_release(tiny_release, tiny_tfds):
    """Stored frames are the release's JPEGs (16f folder), within JPEG re-encoding error."""
    root, _ = tiny_release
    data_dir, _ = tiny_tfds
    source = tfds.data_source("dfew/frames64", split="fold2", data_dir=data_dir, download=False)
    record = source[0]
    entry = next(c for c in release.plan_release(root).clips if c.clip_id == record["clip_id"].decode())
    direct, _, _ = release.load_clip(entry, 64)
    stored = np.stack(record["frames"]).astype(np.float32)
    assert np.abs(stored - direct).mean() < 3.0


def test_variable_length_source_agrees_with_16f(tiny_release, tmp_path):
    """Sampling clip_224x224 to 16 frames picks the frames the 16f folder holds (synthetic release)."""
    root, summary = tiny_release
    plan16 = {c.clip_id: c for c in release.plan_release(root, frame_source="clip_224x224_16f").clips}
    planv = {c.clip_id: c for c in release.plan_release(root, frame_source="clip_224x224").clips}
    clip_id = sorted(summary["short_ids"])[0] if summary["short_ids"] else sorted(planv)[0]
    a, idx, n = release.load_clip(planv[clip_id], 64)
    b, _, _ = release.load_clip(plan16[clip_id], 64)
    assert n == summary["num_frames"][clip_id] and len(idx) == 16
    assert np.abs(a.astype(np.float32) - b).mean() < 3.0


def _copy_release(tiny_release, tmp_path):
    dst = tmp_path / "DFEW"
    shutil.copytree(tiny_release[0], dst, ignore=shutil.ignore_patterns("OpenPose"))
    return dst


def _first_clip(root):
    return release.plan_release(str(root)).clips[0]


def test_corrupt_jpeg_names_file_and_clip(tiny_release, tmp_path):
    root = _copy_release(tiny_release, tmp_path)
    entry = _first_clip(root)
    bad = release.list_frames(entry.frame_dir)[3]
    with open(bad, "r+b") as f:  # truncate the JPEG half way
        f.truncate(os.path.getsize(bad) // 3)
    with pytest.raises(ReleaseError) as info:
        build.build(str(root), str(tmp_path / "tfds"), config="frames64")
    assert entry.clip_id in str(info.value) and os.path.basename(bad) in str(info.value)
    # nothing is marked complete: no dataset_info.json in a finished version folder
    assert not tfds.builder("dfew/frames64", data_dir=str(tmp_path / "tfds")).is_prepared()
    # with --skip_bad_clips the clip is left out and reported
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64", skip_bad_clips=True)
    assert builder.info.metadata["skipped_clips"] == [entry.clip_id]
    assert "unreadable frames: 1" in build.summary(builder)


def test_strict_fails_on_missing_clips(tiny_release, tmp_path):
    with pytest.raises(ReleaseError, match="no frame folder"):
        build.build(tiny_release[0], str(tmp_path / "tfds"), config="frames64", strict=True)


def test_killed_build_is_not_complete_and_rebuilds(tiny_release, tmp_path, monkeypatch):
    """An exception half way through leaves no prepared dataset; the rerun completes it."""
    from tfds_dfew import dfew

    calls = {"n": 0}
    original = dfew.Dfew._encode_clip

    def flaky(self, entry):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated kill")
        return original(self, entry)

    monkeypatch.setattr(dfew.Dfew, "_encode_clip", flaky)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(KeyboardInterrupt):
        build.build(tiny_release[0], data_dir, config="frames64", num_workers=1)
    assert not tfds.builder("dfew/frames64", data_dir=data_dir).is_prepared()
    monkeypatch.setattr(dfew.Dfew, "_encode_clip", original)
    builder = build.build(tiny_release[0], data_dir, config="frames64", num_workers=1)
    assert builder.is_prepared()


def test_cli_reports_missing_manual_dir(tmp_path):
    proc = run_module("tfds_dfew.build", "--manual_dir", str(tmp_path / "absent"), "--data_dir", str(tmp_path))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty_release").mkdir()
    (tmp_path / "empty_release" / "readme.txt").write_text("x")
    proc = run_module("tfds_dfew.build", "--manual_dir", str(tmp_path / "empty_release"), "--data_dir",
                      str(tmp_path))
    assert proc.returncode == 2 and "EmoLabel_DataSplit" in proc.stderr


def test_cli_builds_and_prints_summary(tiny_release, tmp_path):
    proc = run_module("tfds_dfew.build", "--manual_dir", tiny_release[0], "--data_dir", str(tmp_path),
                      "--config", "frames64", check=True)
    assert "fold1" in proc.stdout and "left out, no frame folder" in proc.stdout
    assert "unlabelled: 3 clips" in proc.stdout and "votes read from Annotation/annotation.xlsx" in proc.stdout
    assert "tensorflow" not in proc.stderr.lower() or "no module named" not in proc.stderr.lower()


# -- votes and the unlabelled split ----------------------------------------------------------------


def _records(data_dir, split, name="dfew/frames64"):
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return [source[i] for i in range(len(source))]


def test_unlabelled_split_and_votes_match_the_annotation(tiny_release, tiny_tfds):
    """Multi-labelled clips -> split 'unlabelled' (label -1, fold 0); every record's votes = the xlsx row."""
    root, summary = tiny_release
    data_dir, builder = tiny_tfds
    assert summary["multi_ids"], "the tiny release should have multi-labelled clips"
    unlabelled = _records(data_dir, "unlabelled")
    assert sorted(r["clip_id"].decode() for r in unlabelled) == sorted(summary["multi_ids"])
    for r in unlabelled:
        clip_id = r["clip_id"].decode()
        assert r["label"] == -1 and r["fold"] == 0
        assert r["votes"].dtype == np.int32 and r["votes"].tolist() == summary["votes"][clip_id]
        assert summary["annotation_labels"][clip_id] == 0
        assert len(r["frames"]) == 16 and r["frames"][0].shape == (64, 64, 3)
        assert r["num_frames"] == summary["num_frames"][clip_id]
    labelled = 0
    for k in range(1, 6):
        for r in _records(data_dir, f"fold{k}"):
            clip_id = r["clip_id"].decode()
            assert r["votes"].tolist() == summary["votes"][clip_id]
            assert int(np.argmax(r["votes"])) == r["label"]  # the synthetic votes agree with the CSV
            labelled += 1
    meta = builder.info.metadata
    assert meta["has_votes"] is True and meta["unlabelled_clips"] == len(unlabelled)
    assert meta["unlabelled_source"] == "annotation" and meta["label_conflicts"] == []
    # class counts are those of the labelled clips only
    plan = release.plan_release(root)
    assert {k: list(v) for k, v in meta["class_counts"].items()} == plan.counts()
    assert sum(map(sum, meta["class_counts"].values())) == labelled == len(plan.clips)
    # the unlabelled split is not part of any fold's train or test split
    train, test = release.fold_splits(1)
    assert len(tfds.data_source("dfew/frames64", split=train, data_dir=data_dir, download=False)) + \
        len(tfds.data_source("dfew/frames64", split=test, data_dir=data_dir, download=False)) == labelled
    assert f"unlabelled: {len(unlabelled)} clips" in build.summary(builder)


@pytest.fixture(scope="module")
def multi_release(tmp_path_factory):
    """A very small release with many multi-labelled clips (32 px, with OpenPose)."""
    from tfds_dfew import synthetic

    root = tmp_path_factory.mktemp("multi") / "DFEW"
    summary = synthetic.generate(root, 10, seed=9, frame_size=32, max_frames=18, multi_frac=0.3, missing_frac=0.0,
                                 short_frac=0.0, workers=1, audio=False)
    return root, summary


def _fold_ids(data_dir, name="dfew/frames64"):
    return {k: sorted(r["clip_id"].decode() for r in _records(data_dir, f"fold{k}", name)) for k in range(1, 6)}


def test_without_annotation_votes_are_zero_and_unlisted_folders_are_unlabelled(multi_release, tmp_path):
    root, summary = multi_release
    with_votes = str(tmp_path / "with")
    build.build(str(root), with_votes, config="frames64", num_workers=1)
    bare = tmp_path / "DFEW"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("Annotation", "OpenPose"))
    data_dir = str(tmp_path / "tfds")
    builder = build.build(str(bare), data_dir, config="frames64", num_workers=1)
    unlabelled = _records(data_dir, "unlabelled")
    assert sorted(r["clip_id"].decode() for r in unlabelled) == sorted(summary["multi_ids"])
    assert all(r["label"] == -1 and r["fold"] == 0 for r in unlabelled)
    for k in range(1, 6):
        assert all(r["votes"].tolist() == [0] * 7 for r in _records(data_dir, f"fold{k}"))
    assert all(r["votes"].tolist() == [0] * 7 for r in unlabelled)
    meta = builder.info.metadata
    assert meta["has_votes"] is False and meta["unlabelled_source"] == "clip folders"
    assert "no votes (no Annotation/annotation.xlsx" in build.summary(builder)
    # the fold splits are the same with and without the annotation
    assert _fold_ids(data_dir) == _fold_ids(with_votes)
    # leaving the unlabelled clips out: no such split, folds unchanged
    left_out = str(tmp_path / "left_out")
    builder = build.build(str(root), left_out, config="frames64", num_workers=1, unlabelled=False)
    assert "unlabelled" not in builder.info.splits and set(builder.info.splits) == {f"fold{k}" for k in range(1, 6)}
    assert builder.info.metadata["unlabelled_clips"] == 0
    assert f"{len(summary['multi_ids'])} clips without a single label left out" in build.summary(builder)
    assert _fold_ids(left_out) == _fold_ids(with_votes)


def test_no_multi_labelled_clips_means_no_unlabelled_split(tmp_path):
    from tfds_dfew import synthetic

    root = tmp_path / "DFEW"
    synthetic.generate(root, 6, seed=2, frame_size=32, max_frames=17, multi_frac=0.0, missing_frac=0.0,
                       short_frac=0.0, openpose=False, workers=1,
                       audio=False)
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64", num_workers=1)
    assert set(builder.info.splits) == {f"fold{k}" for k in range(1, 6)}
    assert builder.info.metadata["has_votes"] is True and builder.info.metadata["unlabelled_clips"] == 0
    assert "unlabelled: none" in build.summary(builder)


def test_unlabelled_clips_get_keypoints_in_pose_configs(multi_release, tmp_path):
    from tfds_dfew import openpose

    root, summary = multi_release
    data_dir = str(tmp_path / "tfds")
    build.build(str(root), data_dir, config="frames64_pose", num_workers=1)
    unlabelled = _records(data_dir, "unlabelled", "dfew/frames64_pose")
    assert sorted(r["clip_id"].decode() for r in unlabelled) == sorted(summary["multi_ids"])
    for r in unlabelled:
        clip_id = r["clip_id"].decode()
        expected = openpose.read_clip(os.path.join(str(root), "OpenPose", clip_id),
                                      frame_indices=release.sample_indices(summary["num_frames"][clip_id]))
        np.testing.assert_array_equal(r["pose"], expected.points)
        assert r["votes"].tolist() == summary["votes"][clip_id] and r["label"] == -1
