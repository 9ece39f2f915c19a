"""Inference processes get the measured CPU XLA flags by default; a user's XLA_FLAGS and training are left alone."""

import ast
import os
import subprocess
import sys

import pytest

from fer_jax import xla_defaults
from fer_jax.models import resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFERENCE = ("extract", "predict", "evaluate")
TRAINING = ("train", "pretrain", "cross_validate")


def test_sets_the_flags_only_when_unset_and_on_cpu():
    lines = []
    env = {"JAX_PLATFORMS": "cpu"}
    assert xla_defaults.use_inference_defaults(env, log=lines.append) == resnet.CPU_INFERENCE_XLA_FLAGS
    assert env["XLA_FLAGS"] == resnet.CPU_INFERENCE_XLA_FLAGS
    assert len(lines) == 1 and "XLA_FLAGS" in lines[0] and "override" in lines[0]

    for users in ("--xla_cpu_multi_thread_eigen=false", ""):  # theirs win, even empty
        env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": users}
        assert xla_defaults.use_inference_defaults(env, log=lines.append) is None
        assert env["XLA_FLAGS"] == users
    for platforms in ("cuda", "tpu", "cuda,cpu"):  # not the CPU: nothing set
        env = {"JAX_PLATFORMS": platforms}
        assert xla_defaults.use_inference_defaults(env, log=lines.append) is None and "XLA_FLAGS" not in env
    assert len(lines) == 1


def test_training_defaults_follow_the_same_rules():
    lines = []
    env = {"JAX_PLATFORMS": "cpu"}
    assert xla_defaults.use_training_defaults(env, log=lines.append) == resnet.CPU_TRAINING_XLA_FLAGS
    assert env["XLA_FLAGS"] == resnet.CPU_TRAINING_XLA_FLAGS
    assert len(lines) == 1 and "training" in lines[0] and "override" in lines[0]
    for env in ({"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}, {"JAX_PLATFORMS": "cuda"}):
        before = dict(env)
        assert xla_defaults.use_training_defaults(env, log=lines.append) is None and env == before
    assert len(lines) == 1


def test_an_installed_accelerator_plugin_means_not_cpu(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_installed", lambda d: d == "jax-cuda12-plugin")
    assert not xla_defaults.runs_on_cpu({})
    assert xla_defaults.runs_on_cpu({"JAX_PLATFORMS": "cpu"})


def _main_guard_calls(module: str) -> bool:
    tree = ast.parse(open(os.path.join(ROOT, "fer_jax", module + ".py")).read())
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            first = node.body[0]
            return "use_inference_defaults" in ast.unparse(first)
    return False


def test_inference_entry_points_call_it_first_and_training_does_not():
    assert [m for m in INFERENCE if not _main_guard_calls(m)] == []
    assert [m for m in TRAINING if _main_guard_calls(m)] == []


def _run(*args, env_extra=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_importing_the_clis_does_not_start_jax_so_the_flags_still_count():
    code = ("import fer_jax.extract, fer_jax.predict, fer_jax.evaluate\n"
            "from jax._src import xla_bridge\n"
            "from fer_jax import xla_defaults\n"
            "assert not xla_bridge.backends_are_initialized()\n"
            "assert xla_defaults.use_inference_defaults() is not None\n"
            "import jax, os\n"
            "jax.numpy.zeros(1).block_until_ready()\n"
            "print(os.environ['XLA_FLAGS'])\n")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == resnet.CPU_INFERENCE_XLA_FLAGS
    assert proc.stderr.count("note: using XLA_FLAGS=") == 1


@pytest.mark.parametrize("users", [None, "--xla_cpu_multi_thread_eigen=true"])
def test_predict_process_logs_the_default_unless_the_user_set_xla_flags(tmp_path, users):
    extra = {"XLA_FLAGS": users} if users is not None else None
    proc = _run("-m", "fer_jax.predict", "--model", "mini_xception_fer", str(tmp_path / "missing.mp4"),
                env_extra=extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    note = f"using XLA_FLAGS={resnet.CPU_INFERENCE_XLA_FLAGS}"
    assert (note in proc.stderr) == (users is None), proc.stderr[-2000:]


def test_training_cli_sets_the_training_flags_only_for_runs_that_fine_tune_a_generator(monkeypatch):
    import sys

    from fer_jax import train
    from tests.helpers import ROOT

    sys.path.insert(0, ROOT)
    from configs import fusion, paper

    calls = []
    monkeypatch.setattr(xla_defaults, "use_training_defaults", lambda *a, **k: calls.append(1))
    train.use_training_defaults(fusion.get_config("face+pose"))  # cached features: XLA's defaults
    assert calls == []
    train.use_training_defaults(paper.get_config("finetune"))  # frames -> ResNet-18, end to end
    assert calls == [1]
