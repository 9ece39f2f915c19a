"""The bad-input catalogue: each damaged input gets one specific message (or a reported skip), and
nothing half-done is left marked complete.

Release and OpenPose damage goes through the real builder entry point (`tfds_dfew.build.build`);
training-side damage through `fer_jax.train` / `fer_jax.cli`.
"""

import os
from fer_jax import errors
import shutil

import pytest
import tensorflow_datasets as tfds

from tests.helpers import features_config, run_module, tiny_config
from tfds_dfew import build, release
from tfds_dfew.release import ReleaseError

SPLITS = os.path.join("EmoLabel_DataSplit", "test(single-labeled)")


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
    from tfds_dfew import synthetic

    root = tmp_path_factory.mktemp("small") / "DFEW"
    synthetic.generate(root, 12, seed=5, frame_size=32, max_frames=18, missing_frac=0.0, short_frac=0.0,
                       multi_frac=0.0, workers=1, audio=False)
    return root


def _first_clip(root):
    return release.plan_release(str(root)).clips[0]


def _csv(root, fold=1, part="test"):
    return release.split_csv_path(str(root), part, fold)


def _rewrite(path, text):
    with open(path, "w") as f:
        f.write(text)


def _frames(root):
    return release.list_frames(_first_clip(root).frame_dir)


# Each case: damage(root) -> None; then the build must fail with `match` in the message.
FAILING = {
    "no_split_folder": (lambda r: shutil.rmtree(r / "EmoLabel_DataSplit"), "no EmoLabel_DataSplit/ folder"),
    "no_frame_folders": (lambda r: shutil.rmtree(r / "Clip"), "neither Clip/clip_224x224_16f/"),
    "csv_missing_columns": (lambda r: _rewrite(_csv(r), "name,emotion\n1,2\n"), "expected columns 'video_name,label'"),
    "csv_header_only": (lambda r: _rewrite(_csv(r), "video_name,label\n"), "header but no clips"),
    "csv_empty_file": (lambda r: _rewrite(_csv(r), ""), "file is empty"),
    "csv_duplicate_ids": (lambda r: _rewrite(_csv(r), open(_csv(r)).read() + open(_csv(r)).read().splitlines()[1] + "\n"),
                          "listed twice"),
    "csv_label_8": (lambda r: _rewrite(_csv(r), "video_name,label\n" + open(_csv(r)).read().splitlines()[1].split(",")[0]
                                       + ",8\n"), "outside 1..7"),
    "csv_label_text": (lambda r: _rewrite(_csv(r), "video_name,label\n1,Happy\n"), "not an integer 1..7"),
    "csv_bad_clip_id": (lambda r: _rewrite(_csv(r), "video_name,label\nclip_a,1\n"), "is not a number"),
    "csv_missing_file": (lambda r: os.remove(_csv(r, 3)), "split file not found"),
    "clip_in_train_and_test": (lambda r: _rewrite(_csv(r, 1, "train"), open(_csv(r, 1, "train")).read()
                                                  + open(_csv(r)).read().splitlines()[1] + "\n"),
                               "also in test set_1.csv"),
    "clip_in_two_test_sets": (lambda r: _rewrite(_csv(r, 2), open(_csv(r, 2)).read()
                                                 + open(_csv(r)).read().splitlines()[1] + "\n"), "in both"),
    "empty_frame_folder": (lambda r: [os.remove(p) for p in _frames(r)], "has no frame images"),
    "corrupt_jpeg": (lambda r: open(_frames(r)[2], "wb").write(b"not a jpeg at all"), "cannot be decoded"),
    "truncated_jpeg": (lambda r: open(_frames(r)[0], "r+b").truncate(200), "cannot be decoded"),
    "frame_name_without_number": (lambda r: os.rename(_frames(r)[0], os.path.join(os.path.dirname(_frames(r)[0]),
                                                                                    "frame.jpg")), "no frame number"),
    "duplicate_frame_numbers": (lambda r: shutil.copy(_frames(r)[0], os.path.join(os.path.dirname(_frames(r)[0]),
                                                                                  "1.jpg")), "carry frame number 1"),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_damaged_release_fails_clearly(small_release, tmp_path, case):
    damage, match = FAILING[case]
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root)
    damage(root)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(ReleaseError, match=match.replace("(", r"\(").replace(".", r"\.")):
        build.build(str(root), data_dir, config="frames64", num_workers=1)
    assert not tfds.builder("dfew/frames64", data_dir=data_dir).is_prepared()


OPENPOSE_DAMAGE = {
    "malformed_json": lambda p: p.write_text("{not json"),
    "truncated_json": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "empty_json_file": lambda p: p.write_text(""),
    "wrong_length_list": lambda p: p.write_text('{"version": 1.3, "people": [{"pose_keypoints_2d": [1, 2, 3, 4]}]}'),
}


@pytest.mark.parametrize("case", sorted(OPENPOSE_DAMAGE))
def test_damaged_openpose_names_file_and_clip(small_release, tmp_path, case):
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root)
    entry = _first_clip(root)
    victim = sorted((root / "OpenPose" / entry.clip_id).iterdir())[0]
    OPENPOSE_DAMAGE[case](victim)
    with pytest.raises(ReleaseError) as info:
        build.build(str(root), str(tmp_path / "tfds"), config="frames64_pose", num_workers=1)
    assert entry.clip_id in str(info.value) and victim.name in str(info.value)
    # skipping is a choice: the clip keeps its frames, its pose is masked, and the file is reported
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64_pose", skip_bad_clips=True)
    assert builder.info.metadata["skipped_clips"] == []
    assert victim.name in builder.info.metadata["clips_with_bad_openpose"][entry.clip_id]


def test_unpadded_ids_and_missing_folder_are_handled(small_release, tmp_path):
    """Not errors: ids written without zero padding are normalised; a clip without frames is reported."""
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root)
    entry = _first_clip(root)
    shutil.rmtree(entry.frame_dir)
    shutil.rmtree(os.path.join(str(root), "Clip", "clip_224x224", entry.clip_id), ignore_errors=True)
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64")
    assert builder.info.metadata["missing_clips"] == [entry.clip_id]
    assert "no frame folder: 1" in build.summary(builder)
    with open(release.split_csv_path(str(root), "test", 1)) as f:
        assert not f.read().splitlines()[1].startswith("0")  # the CSVs hold ids like 7, not 00007


def test_missing_manual_dir(tmp_path):
    with pytest.raises(ReleaseError, match="does not exist"):
        build.build(str(tmp_path / "absent"), str(tmp_path / "tfds"))


# -- training side -------------------------------------------------------------------------------


def test_checkpoint_of_another_architecture(tiny_features, tmp_path):
    from fer_jax import checkpoint, train

    _, out, _ = tiny_features
    train.train_and_evaluate(features_config(out, num_train_steps=2, checkpoint_every=2), str(tmp_path / "a"))
    # same workdir files, other model: move the checkpoints into a run with a wider model
    other = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints", other / "checkpoints")
    with pytest.raises(checkpoint.CheckpointMismatchError, match="does not fit this model"):
        train.train_and_evaluate(features_config(out, num_train_steps=2, **{"model.width": 48}), str(other))


def test_workdir_of_another_config(tiny_features, tmp_path):
    from fer_jax import train, workdir

    _, out, _ = tiny_features
    train.train_and_evaluate(features_config(out, num_train_steps=2, checkpoint_every=2), str(tmp_path))
    with pytest.raises(workdir.WorkdirConflictError, match="model.depth: 1 -> 2"):
        train.train_and_evaluate(features_config(out, num_train_steps=2, **{"model.depth": 2}), str(tmp_path))


def test_cached_features_of_another_shape(tiny_features):
    from fer_jax import input_pipeline

    _, out, _ = tiny_features
    config = features_config(out, **{"modalities.face.generator": "resnet18"})
    with pytest.raises(input_pipeline.FeatureSetupError, match="made by generator"):
        input_pipeline.open_source(config, "fold1")


@pytest.mark.parametrize(
    "args,match",
    [
        (["--config", "configs/frames.py:tiny", "--config.optimzer.lr=1"], "unknown config key 'optimzer'"),
        (["--config", "configs/fusion.py:fase"], "unknown modality ['fase']"),
        (["--config", "configs/fusion.py:face", "--config.dataset.data_dir=/nonexistent/x"],
         "python -m fer_jax.extract"),
        (["--config", "configs/frames.py:tiny", "--config.dataset.data_dir=/nonexistent/x"],
         "python -m tfds_dfew.build"),
    ],
)
def test_cli_config_and_data_errors(tmp_path, args, match):
    proc = run_module("fer_jax.train", *args, "--workdir", str(tmp_path / "run"))
    assert proc.returncode != 0 and match in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_features, tmp_path, monkeypatch):
    """A NaN in the inputs from step 3 on: training stops naming the step; skipping is an option."""
    import numpy as np

    from fer_jax import input_pipeline, train

    _, out, _ = tiny_features
    original = input_pipeline.Preprocessor.__call__
    calls = {"n": 0}

    def poisoned(self, record, rng=None):
        example = original(self, record, rng)
        calls["n"] += self.train
        if self.train and calls["n"] > 16:  # the first two batches of 8 are clean
            example["face"] = np.full_like(example["face"], np.nan)
        return example

    monkeypatch.setattr(input_pipeline.Preprocessor, "__call__", poisoned)
    config = features_config(out, num_train_steps=6, checkpoint_every=2, log_every=1,
                             **{"data.read_threads": 1, "data.prefetch": 0})
    with pytest.raises(errors.NonFiniteLossError, match=r"step 3: the loss or its gradients are not finite"):
        train.train_and_evaluate(config, str(tmp_path / "stop"))
    assert sorted(os.listdir(tmp_path / "stop" / "checkpoints")) == ["2"]
    calls["n"] = 0
    skip = features_config(out, num_train_steps=6, checkpoint_every=2, log_every=1, skip_nonfinite_batches=True,
                           **{"data.read_threads": 1, "data.prefetch": 0})
    result = train.train_and_evaluate(skip, str(tmp_path / "skip"))
    assert np.isfinite(result["uar"])
    from fer_jax import workdir

    skipped = sum(m.get("skipped_batches", 0) for m in workdir.read_metrics(str(tmp_path / "skip"))
                  if m["split"] == "train")
    assert skipped == 4


# -- the vote annotation (Annotation/annotation.xlsx) ---------------------------------------------


def _annotation(root):
    return release.annotation_path(str(root))


def _edit_annotation(root, edit):
    """Opens the release's annotation workbook with openpyxl, applies edit(sheet), saves it."""
    import openpyxl

    book = openpyxl.load_workbook(_annotation(root))
    edit(book.active)
    book.save(_annotation(root))


def _set(cell, value):
    def edit(sheet):
        sheet[cell] = value
    return edit


def _delete_column(index):
    def edit(sheet):
        sheet.delete_cols(index)
    return edit


def _duplicate_row(sheet):
    sheet.append([c.value for c in sheet[2]])


# Each case: damage(root) -> None; then the build must fail naming the annotation file (and row).
ANNOTATION_FAILING = {
    "annotation_not_a_workbook": (lambda r: _rewrite(_annotation(r), "1happy,2sad\n"),
                                  "cannot be read as an .xlsx workbook", None),
    "annotation_missing_vote_column": (lambda r: _edit_annotation(r, _delete_column(4)), "no column for 4angry", 1),
    "annotation_missing_label_column": (lambda r: _edit_annotation(r, _delete_column(9)), "no column for label", 1),
    "annotation_text_vote": (lambda r: _edit_annotation(r, _set("B3", "many")), "not a whole number", 3),
    "annotation_fractional_vote": (lambda r: _edit_annotation(r, _set("C2", 1.5)), "not a whole number", 2),
    "annotation_negative_vote": (lambda r: _edit_annotation(r, _set("G4", -2)), "votes are >= 0", 4),
    "annotation_label_9": (lambda r: _edit_annotation(r, _set("I5", 9)), "outside 0..7", 5),
    "annotation_duplicate_clip": (lambda r: _edit_annotation(r, _duplicate_row), "is listed twice (also in row 2)",
                                  None),
    "annotation_bad_clip_id": (lambda r: _edit_annotation(r, _set("H2", "clip one")), "is not a number", 2),
}


@pytest.mark.parametrize("case", sorted(ANNOTATION_FAILING))
def test_damaged_annotation_fails_clearly(small_release, tmp_path, case):
    damage, match, row = ANNOTATION_FAILING[case]
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root)
    damage(root)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(ReleaseError, match=match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")) as info:
        build.build(str(root), data_dir, config="frames64", num_workers=1)
    assert _annotation(root) in str(info.value)
    if row is not None:
        assert f"row {row}:" in str(info.value)
    assert not tfds.builder("dfew/frames64", data_dir=data_dir).is_prepared()


def test_annotation_label_conflict_keeps_the_csv_label_or_fails_strict(small_release, tmp_path):
    """The CSV decides a clip's label and fold; the annotation's other label is reported (or fatal with --strict)."""
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root)
    entry = _first_clip(root)
    import openpyxl

    sheet = openpyxl.load_workbook(_annotation(root)).active
    row = next(r for r in range(2, sheet.max_row + 1) if int(sheet.cell(r, 8).value) == int(entry.clip_id))
    other = (entry.label + 1) % 7 + 1  # an official label 1..7 other than the CSV one (label + 1)
    _edit_annotation(root, _set(f"I{row}", other))
    with pytest.raises(ReleaseError, match="another label in the split CSVs") as info:
        build.build(str(root), str(tmp_path / "strict"), config="frames64", num_workers=1, strict=True)
    assert entry.clip_id in str(info.value)
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64", num_workers=1)
    assert builder.info.metadata["label_conflicts"] == [entry.clip_id]
    assert "CSV label differs from the annotation (CSV label kept): 1" in build.summary(builder)
    source = tfds.data_source("dfew/frames64", split=f"fold{entry.fold}", data_dir=str(tmp_path / "tfds"),
                              download=False)
    stored = next(source[i] for i in range(len(source)) if source[i]["clip_id"].decode() == entry.clip_id)
    assert stored["label"] == entry.label


def test_missing_annotation_folder_is_fine(small_release, tmp_path):
    root = tmp_path / "DFEW"
    shutil.copytree(small_release, root, ignore=shutil.ignore_patterns("Annotation"))
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64", num_workers=1)
    assert builder.info.metadata["has_votes"] is False
    assert set(builder.info.splits) == {f"fold{k}" for k in range(1, 6)}  # the small release has no multi-labelled
    assert "no votes" in build.summary(builder)
