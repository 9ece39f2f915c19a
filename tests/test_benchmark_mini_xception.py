"""Smoke test of benchmarks/mini_xception_inference.py: --quick runs end to end and prints its table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "mini_xception_inference.py"


def test_quick_benchmark_prints_table_and_json(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "| variant | frames/s | x torch_eager |" in table
    assert "AVX-512" in table and "load average" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for name in ("torch_eager", "torch_channels_last", "flax", "flax_grouped", "flax_uint8"):
        assert name in rows, table
        assert "skipped" not in rows[name], rows[name]
    assert "torch_compile" not in rows  # --quick skips it
    (result,) = tmp_path.glob("mini_xception_inference_*.json")
    data = json.loads(result.read_text())
    by_name = {r["variant"]: r for r in data["results"]}
    assert data["meta"]["batch"] == 8 and data["meta"]["quick"]
    assert by_name["torch_eager"]["ratio_to_torch_eager"] == 1.0
    for name in ("flax", "flax_grouped", "flax_uint8", "torch_channels_last"):
        # Same weights and input: the twins compute the same function.
        assert by_name[name]["max_rel_diff"] < 1e-4, (name, by_name[name]["max_rel_diff"])
        assert by_name[name]["frames_per_s"] > 0
