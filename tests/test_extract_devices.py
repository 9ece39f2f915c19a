"""extract on 8 forced CPU devices: every batch sharded over them, features equal to one device's."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.helpers import ROOT
from tfds_dfew import datasets

SCRIPT = r"""
import json, sys
sys.path.insert(0, {root!r})
import jax
from fer_jax import extract, inference
from tests.helpers import extract_config

sharded = []
plain_split = inference.LocalDevices.split

def split(self, *arrays):
    out = plain_split(self, *arrays)
    sharded.append([len(arrays[0]), all(len(a.sharding.device_set) == 8 if hasattr(a, "sharding") else False
                                         for a in out)])
    return out

inference.LocalDevices.split = split
config = extract_config({data_dir!r}, {out!r})
config.batch_size = 8
extract.extract(config)
print(json.dumps({{"devices": len(jax.local_devices()), "calls": sharded}}))
"""


def _records(out_dir):
    builder = datasets.open_built(out_dir, "dfew_features/mini_xception_fer")
    rows = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split)
        for i in range(len(source)):
            r = source[i]
            rows[r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"])] = r
    return rows


def test_extract_on_eight_devices_equals_one(tiny_features, tmp_path):
    data_dir, one_dir, _ = tiny_features
    eight_dir = str(tmp_path / "eight")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT, data_dir=data_dir, out=eight_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    calls = report["calls"]  # [rows, sharded over all 8 devices] per generator call
    assert any(rows == 8 for rows, _ in calls), calls
    assert all(done == (rows % 8 == 0) for rows, done in calls), calls  # whole batches split, the rest replicated
    one, eight = _records(one_dir), _records(eight_dir)
    assert one.keys() == eight.keys() and len(one) > 10
    for clip_id in one:
        a, b = one[clip_id]["face_mini_xception_fer"], eight[clip_id]["face_mini_xception_fer"]
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6, err_msg=clip_id)
