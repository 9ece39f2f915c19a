"""benchmarks/run_all.py --quick runs every benchmark end to end on the CPU, so none of them can rot unnoticed."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ("generator_inference resnet18", "generator_inference vit_b16", "mini_xception_inference", "audio_inference",
              "train_step", "input_pipeline", "pretrain_step", "finetune_step", "dense_backward", "extract_end_to_end",
              "predict_memory")


@pytest.mark.slow
def test_run_all_quick_writes_one_table_with_every_benchmark(tmp_path):
    out = tmp_path / "run_all.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert table.strip() == proc.stdout.strip()
    assert "| benchmark | variant | throughput | ratio to its reference |" in table
    for line in ("jax 0.", "torch 2.", "AVX-512", "load average"):
        assert line in table.splitlines()[0], table.splitlines()[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for name in BENCHMARKS:
        mine = [r for r in rows if r[0] == "| " + name]
        assert mine and all(r[1] != "-" for r in mine), (name, table)
        assert all(r[3].rstrip(" |").endswith(("x", "-")) for r in mine)
