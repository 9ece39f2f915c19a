"""The pose modality: OpenPose keypoints in the builder, through extraction, into face+pose training."""

import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax import extract, input_pipeline, train
from tests.helpers import extract_config, features_config
from tfds_dfew import build, openpose, release
from tfds_dfew.release import ReleaseError


@pytest.fixture(scope="module")
def pose_tfds(tiny_release, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("pose_tfds"))
    builder = build.build(tiny_release[0], data_dir, config="frames64_pose", num_workers=2)
    return data_dir, builder


def test_keypoints_are_those_of_the_sampled_frames(tiny_release, pose_tfds):
    root, summary = tiny_release
    data_dir, _ = pose_tfds
    source = tfds.data_source("dfew/frames64_pose", split="fold2", data_dir=data_dir, download=False)
    for i in (0, len(source) - 1):
        record = source[i]
        clip_id = record["clip_id"].decode()
        n = summary["num_frames"][clip_id]
        expected = openpose.read_clip(os.path.join(root, "OpenPose", clip_id), frame_indices=release.sample_indices(n))
        assert record["pose"].shape == (16, 137, 3)
        np.testing.assert_array_equal(record["pose"], expected.points)


def test_clip_without_openpose_folder_gets_masked_keypoints(tiny_release, tmp_path):
    root = tmp_path / "DFEW"
    shutil.copytree(tiny_release[0], root)
    victim = release.plan_release(str(root)).clips[0].clip_id
    shutil.rmtree(root / "OpenPose" / victim)
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64_pose")
    assert builder.info.metadata["clips_without_openpose"] == [victim]
    assert "no OpenPose output" in build.summary(builder)


def test_malformed_openpose_json_names_file_and_clip(tiny_release, tmp_path):
    root = tmp_path / "DFEW"
    shutil.copytree(tiny_release[0], root)
    victim = release.plan_release(str(root)).clips[0].clip_id
    folder = root / "OpenPose" / victim
    bad = sorted(folder.iterdir())[0]
    bad.write_text('{"version": 1.3, "people": [{"pose_keypoints_2d": [1, 2')  # truncated
    with pytest.raises(ReleaseError) as info:
        build.build(str(root), str(tmp_path / "tfds"), config="frames64_pose")
    assert victim in str(info.value) and bad.name in str(info.value)
    # --skip_bad_clips keeps the clip (its frames are fine) with its pose masked, and says why
    builder = build.build(str(root), str(tmp_path / "tfds"), config="frames64_pose", skip_bad_clips=True)
    assert builder.info.metadata["skipped_clips"] == []
    assert list(builder.info.metadata["clips_with_bad_openpose"]) == [victim]
    assert bad.name in builder.info.metadata["clips_with_bad_openpose"][victim]
    fold = next(c.fold for c in release.plan_release(str(root)).clips if c.clip_id == victim)
    source = builder.as_data_source(split=f"fold{fold}")
    record = next(r for r in source if r["clip_id"].decode() == victim)
    assert not np.asarray(record["pose"]).any()
    assert "unreadable OpenPose JSON" in build.summary(builder) and "unreadable frames" not in build.summary(builder)


def test_missing_openpose_dir_is_a_clear_error(tiny_release, tmp_path):
    with pytest.raises(ReleaseError, match="no OpenPose output folder"):
        build.build(tiny_release[0], str(tmp_path / "tfds"), config="frames64_pose",
                    openpose_dir=str(tmp_path / "nowhere"))


def test_face_and_pose_train_on_cached_features(pose_tfds, tmp_path):
    data_dir, _ = pose_tfds
    out = str(tmp_path / "features")
    c = extract_config(data_dir, out)
    c.source.name = "dfew/frames64_pose"
    extract.extract(c)
    config = features_config(out)
    import sys

    from tests.helpers import ROOT

    sys.path.insert(0, ROOT)
    from configs import fusion

    full = fusion.get_config("face+pose")
    config.modalities = full.modalities
    source = input_pipeline.open_source(config, "fold1")
    example = input_pipeline.Preprocessor(config, train=False)(source[0])
    assert example["pose"].shape == (16, 411) and example["mask/pose"].shape == (16,)
    for fusion_mode in ("concat", "bottleneck"):
        config.model.fusion = fusion_mode
        result = train.train_and_evaluate(config, str(tmp_path / fusion_mode))
        assert np.isfinite(result["uar"]) and result["num_clips"] == len(source)


def test_flip_mirrors_frames_and_keypoints_together(pose_tfds):
    from fer_jax.data import keypoints
    from tests.helpers import tiny_config

    data_dir, _ = pose_tfds
    config = tiny_config(data_dir, **{"dataset.name": "dfew/frames64_pose", "data.flip": True, "data.crop_size": 0})
    config.modalities.pose = {"input": "pose", "tokenizer": "mlp"}
    record = input_pipeline.open_source(config, "fold1")[0]
    pre = input_pipeline.Preprocessor(config, train=True)
    frames = np.stack(record["frames"])
    seen = set()
    for seed in range(12):
        out = pre(record, np.random.default_rng(seed))
        flipped = bool(np.array_equal(out["face"], frames[:, :, ::-1]))
        assert flipped or np.array_equal(out["face"], frames)
        points = keypoints.flip_keypoints(record["pose"]) if flipped else record["pose"]
        np.testing.assert_array_equal(out["pose"], keypoints.keypoint_features(points))
        seen.add(flipped)
    assert seen == {True, False}
