"""A new user's usual mistakes, each ending in one clear line and losing nothing (the second walkthrough).

Stale features after a rebuild, a build reused from another release, a release with an empty fold,
a failed first command that must not lock its workdir, config typos, missing or wrong weights
files, pasted commands with spaces, --help that lists only what a command reads, configs named
from any folder, and the quiet parts of a first build and a first cross-validation.
"""

from __future__ import annotations

import os
import shlex
import shutil

import pytest

from fer_jax import extract, train
from fer_jax.errors import ConfigError, DatasetNotFoundError, FeatureSetupError
from tests.helpers import ROOT, extract_config, features_config, run_module
from tfds_dfew import build, release
from tfds_dfew.errors import ReleaseError


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _one_error(proc) -> str:
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture()
def release_copy(tiny_release, tmp_path):
    root = tmp_path / "DFEW"
    shutil.copytree(tiny_release[0], root)
    return str(root)


def test_stale_features_after_a_rebuild_are_extracted_again_and_never_trained_on(release_copy, tmp_path, capsys):
    root, data_dir = release_copy, str(tmp_path / "tfds")
    victim = release.plan_release(root).by_fold(1)[0]
    frame = sorted(os.listdir(victim.frame_dir))[0]
    good = open(os.path.join(victim.frame_dir, frame), "rb").read()
    open(os.path.join(victim.frame_dir, frame), "wb").write(b"not a jpeg")
    builder = build.build(root, data_dir, config="frames64", skip_bad_clips=True)
    assert builder.info.metadata["skipped_clips"] == [victim.clip_id]
    c = extract_config(data_dir, data_dir)
    extract.extract(c)
    config = features_config(data_dir)
    before = len(train.input_pipeline.open_source(config, "fold1"))

    open(os.path.join(victim.frame_dir, frame), "wb").write(good)  # repaired: one more clip in fold 1
    build.build(root, data_dir, config="frames64", skip_bad_clips=True, overwrite=True)
    with pytest.raises(FeatureSetupError, match="extracted from an older build of dfew/frames64.*fold1"):
        train.train_and_evaluate(features_config(data_dir), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "config.json")  # refused before the run started
    capsys.readouterr()
    extract.extract(c)
    assert "extracting dfew_features/mini_xception_fer again: its source was rebuilt since" in capsys.readouterr().out
    assert len(train.input_pipeline.open_source(features_config(data_dir), "fold1")) == before + 1
    train.train_and_evaluate(features_config(data_dir), str(tmp_path / "run"))
    extract.extract(c)  # made from this build: reused, with one line
    assert "reusing dfew_features/mini_xception_fer" in capsys.readouterr().out


def test_a_build_from_another_release_is_refused_and_a_reused_one_says_so(release_copy, tiny_release, tmp_path,
                                                                         capsys):
    data_dir = str(tmp_path / "tfds")
    build.build(release_copy, data_dir, config="frames64")
    capsys.readouterr()
    build.build(release_copy, data_dir, config="frames64")
    assert f"reusing dfew/frames64 in {data_dir}" in capsys.readouterr().out
    with pytest.raises(ReleaseError, match=f"was built from {release_copy}, not from .*--overwrite"):
        build.build(tiny_release[0], data_dir, config="frames64")


def test_a_first_build_is_quiet_and_leaves_no_downloads_folder(release_copy, tmp_path):
    data_dir = str(tmp_path / "tfds")
    proc = run_module("tfds_dfew.build", "--manual_dir", release_copy, "--data_dir", data_dir, "--config", "frames64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "has no dataset_info.json" not in proc.stderr and not os.path.exists(os.path.join(data_dir, "downloads"))


def test_a_release_that_leaves_a_fold_empty_is_one_line(release_copy, tmp_path):
    plan = release.plan_release(release_copy)
    for entry in plan.by_fold(2):  # both frame folders of every clip of fold 2
        shutil.rmtree(entry.frame_dir)
        shutil.rmtree(os.path.join(release_copy, "Clip", "clip_224x224", entry.clip_id), ignore_errors=True)
    proc = run_module("tfds_dfew.build", "--manual_dir", release_copy, "--data_dir", str(tmp_path / "tfds"),
                      "--config", "frames64")
    line = _one_error(proc)
    assert "fold2 would hold no clip" in line and "--manual_dir is the whole release" in line


def test_a_command_that_fails_before_its_first_step_leaves_the_workdir_free(tiny_features, tmp_path):
    _, out, _ = tiny_features
    workdir = str(tmp_path / "run")
    with pytest.raises(DatasetNotFoundError):  # train before extract
        train.train_and_evaluate(features_config(str(tmp_path / "nothing_here")), workdir)
    with pytest.raises(ConfigError, match="fold must be 1..5"):  # a fold typo
        train.train_and_evaluate(features_config(out, **{"dataset.fold": 6}), workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
    train.train_and_evaluate(features_config(out), workdir)  # the corrected command runs
    assert os.path.exists(os.path.join(workdir, "checkpoints"))


def test_typos_and_bad_weights_files_are_one_line(tiny_features, tmp_path):
    data_dir, out, _ = tiny_features
    proc = run_module("fer_jax.train", "--config", "configs/fusion.py:face,fold=6", "--workdir",
                      str(tmp_path / "a"), f"--config.dataset.data_dir={out}")
    assert "fold must be 1..5, got 6" in _one_error(proc) and not os.path.exists(tmp_path / "a" / "config.json")
    proc = run_module("fer_jax.extract", "--config", "configs/extract.py:resnet18",
                      "--config.generators.face_resnet18.weights=~/weights/resnet18-f37072fd.pth",
                      f"--config.source.data_dir={data_dir}", "--config.source.name=dfew/frames64",
                      f"--config.output.data_dir={tmp_path}")
    assert "resnet18-f37072fd.pth for generator resnet18 does not exist" in _one_error(proc)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    proc = run_module("fer_jax.extract", "--config", "configs/extract.py:resnet18",
                      f"--config.generators.face_resnet18.weights={video}", f"--config.source.data_dir={data_dir}",
                      "--config.source.name=dfew/frames64", f"--config.output.data_dir={tmp_path}")
    line = _one_error(proc)
    assert "is not a torch weights file" in line and "MP4" in line and "legacy" not in line


def test_suggested_commands_paste_back_with_spaces_in_paths(tiny_features, tmp_path):
    _, out, _ = tiny_features
    workdir = tmp_path / "my runs" / "face f1"
    proc = run_module("fer_jax.train", "--config", "configs/fusion.py:face", "--workdir", str(workdir),
                      f"--config.dataset.data_dir={out}", "--config.num_train_steps=2", "--config.batch_size=8",
                      "--config.model.width=16", "--config.model.depth=1", "--config.model.mlp_dim=16",
                      "--config.progress_bar=False", "--config.eval_batch_size=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if "evaluate again with" in line)
    words = shlex.split(line.split("evaluate again with ", 1)[1])
    assert words[:3] == ["python", "-m", "fer_jax.evaluate"] and words[-1] == str(workdir)
    proc = run_module("fer_jax.train", "--config", "configs/clip.py", "--workdir", str(tmp_path / "clip"),
                      f"--config.dataset.data_dir={tmp_path / 'tfds'}")
    line = _one_error(proc)
    assert "--config frames224" in line  # the build the hint names is the one the recipe reads


@pytest.mark.parametrize("command,absent,present", [
    ("fer_jax.cross_validate", ["--drop_modality", "--step", "--split", "--data_dir"], ["--folds", "--subsets",
                                                                                    "--num_processes"]),
    ("fer_jax.extract", ["--workdir", "--stride"], ["--config", "--num_processes"]),  # extract runs on several hosts
    ("fer_jax.evaluate", [], ["--dataset", "--drop_modality"]),
])
def test_help_lists_only_the_flags_a_command_reads(command, absent, present):
    proc = run_module(command, "--help")
    assert proc.returncode == 0 and "note:" not in proc.stderr + proc.stdout
    for flag in absent:
        assert f"  {flag}:" not in proc.stdout, flag
    for flag in present:
        assert f"  {flag}:" in proc.stdout, flag
    assert "         --" not in proc.stdout  # no example joined onto another line


def test_configs_are_found_by_name_from_any_folder(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    for value in ("fusion:face", "configs/fusion.py:face", "fusion.py:face"):
        proc = subprocess.run([sys.executable, "-m", "fer_jax.train", "--config", value, "--workdir",
                               str(tmp_path / "run"), f"--config.dataset.data_dir={tmp_path / 'none'}"],
                              cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
        assert "does not exist" in _one_error(proc) and "no such file" not in proc.stderr, value
    proc = subprocess.run([sys.executable, "-m", "fer_jax.train", "--config", "fuson:face", "--workdir",
                           str(tmp_path / "run")], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert "did you mean fusion.py?" in _one_error(proc) and "--config fusion:face" in proc.stderr


def test_a_training_split_without_a_class_warns(tiny_features, tmp_path, caplog):
    _, out, _ = tiny_features
    config = features_config(out)
    data = train.input_pipeline.open_run_data(config)
    train.resolve_dataset(config, data.description)
    counts = data.class_counts(data.split_of("train"))
    with caplog.at_level("WARNING"):
        train.warn_missing_classes(data, data.split_of("train"))
    empty = [n for n, c in zip(data.description.class_names, counts) if c == 0]
    assert (f"has no clip of {', '.join(empty)}" in caplog.text) == bool(empty)
    data.class_counts = lambda split: [0] + list(counts[1:])  # as if a class were missing
    with caplog.at_level("WARNING"):
        train.warn_missing_classes(data, data.split_of("train"))
    assert "has no clip of happy: the model cannot learn it" in caplog.text
