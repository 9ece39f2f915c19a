"""A new user's first hour: --help on every entry point, and messages that name the real mistake in one line."""

import os
import shlex
import subprocess
import sys

import pytest

from fer_jax import input_pipeline
from tests.helpers import ROOT

ENTRY_POINTS = {
    "fer_jax.train": ["--config", "--workdir", "--coordinator_address", "--num_processes", "--process_id"],
    "fer_jax.evaluate": ["--workdir", "--step", "--split", "--data_dir", "--drop_modality"],
    "fer_jax.extract": ["--config"],
    "fer_jax.pretrain": ["--config", "--workdir"],
    "fer_jax.cross_validate": ["--config", "--workdir", "--folds", "--subsets", "--fusions", "--label_fraction"],
    "fer_jax.predict": ["--workdir", "--model", "--out", "--stride", "--window", "--batch", "--fps", "--aligned",
                        "--data_dir", "--openpose_dir"],
    "tfds_dfew.build": ["--manual_dir", "--data_dir", "--config", "--frame_source", "--skip_bad_clips", "--strict",
                        "--overwrite", "--num_workers", "--openpose_dir", "--no_unlabelled"],
    "tfds_dfew.synthetic": ["--out", "--clips", "--seed", "--frame_size", "--scenario"],
}


def _run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_lists_every_flag_with_a_description(module):
    proc = _run(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "example" in text.lower()
    for flag in ENTRY_POINTS[module]:
        lines = [line for line in text.splitlines() if flag in line]
        assert lines, f"{module} --help does not show {flag}"
    if module.startswith("fer_jax"):
        for line in text.split("\nflags:\n", 1)[1].splitlines():
            if line.startswith("  --"):
                assert len(line.split(":", 1)[1].strip()) > 10, f"{module}: {line!r} has no description"


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_mistyped_data_dir_is_named_first(tmp_path):
    proc = _run("fer_jax.train", "--config", "configs/demo.py", "--workdir", str(tmp_path / "run"),
                "--config.dataset.data_dir=data/tfdss")
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert "data/tfdss" in line and "does not exist" in line
    assert "Traceback" not in proc.stderr


def test_mistyped_config_path_is_one_line(tmp_path):
    proc = _run("fer_jax.train", "--config", "configs/dmeo.py", "--workdir", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "configs/dmeo.py" in proc.stderr and "configs/demo.py" in proc.stderr


def test_mistyped_model_name_suggests_the_right_one():
    proc = _run("fer_jax.predict", "--model", "mini_xception", "video.mp4")
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert "unknown model 'mini_xception'" in line and "did you mean 'mini_xception_fer'" in line


def test_predict_on_a_missing_file_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _run("fer_jax.predict", "--model", "mini_xception_fer", "--out", str(out), str(tmp_path / "nope.mp4"))
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert errors[0].startswith(f"error: {tmp_path / 'nope.mp4'}: no such file")
    assert "the other" not in proc.stderr  # there were no others
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("setup", ["mini_xception_fer", "mini_xception_fer_omnivec", "resnet18_external"])
def test_suggested_extract_commands_parse(setup, tmp_path):
    """Every command a missing-features message suggests is accepted by the CLI it names."""
    hint = input_pipeline.extract_hint(setup, str(tmp_path / "tfds"))
    commands = [part.strip() for part in hint.replace("then ", "").split(", ") if part.strip().startswith("python")]
    assert commands
    for command in commands:
        args = shlex.split(command)[2:]  # after 'python -m'
        args = [a.replace("<pretraining_workdir>", str(tmp_path / "run")).replace("<npy_folder>", str(tmp_path))
                for a in args]
        proc = _run(*args)
        # The config parsed and the command ran up to the data: the message is about the missing folder.
        (line,) = _error_lines(proc.stderr)
        assert "does not exist" in line and "unknown" not in line, line
