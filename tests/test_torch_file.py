"""fer_jax.weights.torch_file reads torch.save files without torch, checked against torch itself."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from fer_jax.weights import torch_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same(got, want, where="obj"):
    if isinstance(want, torch.Tensor):
        ref = want.detach()
        ref = ref.float().numpy() if ref.dtype == torch.bfloat16 else ref.numpy()
        assert isinstance(got, np.ndarray), where
        assert got.shape == ref.shape, (where, got.shape, ref.shape)
        assert np.array_equal(got.astype(ref.dtype), ref), where
        if want.dtype != torch.bfloat16:
            assert got.dtype == ref.dtype, (where, got.dtype, ref.dtype)
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            _same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


def test_resnet_state_dict_equals_torch_load(tmp_path):
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    _same(torch_file.read(path), torch.load(path, weights_only=True))


def test_views_dtypes_and_containers(tmp_path):
    torch.manual_seed(1)
    base = torch.randn(6, 5)
    obj = {
        "transposed": base.t(),  # strides (1, 5) into a shared storage
        "slice": base[2:4, 1:],  # an offset into the same storage
        "bf16": torch.randn(3, 4).to(torch.bfloat16), "f16": torch.randn(2).half(), "f64": torch.randn(2, 2).double(),
        "i64": torch.arange(5), "i32": torch.arange(4, dtype=torch.int32), "u8": torch.arange(3, dtype=torch.uint8),
        "bool": torch.tensor([True, False]), "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
        "nested": [torch.ones(2), {"x": (torch.full((2,), 7.0), 3, "text")}],
        "parameter": torch.nn.Parameter(torch.randn(2, 2)), "step": 12,
    }
    path = tmp_path / "mixed.pt"
    torch.save(obj, path)
    got = torch_file.read(path)
    _same(got, obj)
    assert got["transposed"].flags["C_CONTIGUOUS"]  # a copy, not a view into the file's bytes


def test_a_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match="torch.nn.modules.linear.Linear"):
        torch_file.read(path)


def test_legacy_format_goes_to_torch_load(tmp_path):
    torch.manual_seed(2)
    sd = {"w": torch.randn(3, 2)}
    path = tmp_path / "legacy.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    with pytest.raises(torch_file.NotZipFormat):
        torch_file.read(path)
    got = torch_file.load(path)  # torch.load, as torch is installed here
    assert torch.equal(got["w"], sd["w"])


def test_damaged_file_names_itself(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    import zipfile

    damaged = tmp_path / "damaged.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            if "/data/" not in item.filename:  # drop the storage record
                dst.writestr(item, src.read(item))
    with pytest.raises(ValueError, match="damaged.pth lacks its storage record"):
        torch_file.read(damaged)


def test_resnet_weights_load_in_a_process_without_torch(tmp_path):
    """load_torchvision on a .pth where `import torch` fails: the same arrays as the state dict."""
    torch.manual_seed(3)
    sd = torchvision.models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    np.savez(tmp_path / "ref.npz", conv1=sd["conv1.weight"].numpy(), fc=sd["layer4.1.bn2.running_var"].numpy())
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
from flax import nnx
from fer_jax.models.resnet import resnet18
from fer_jax.weights.torchvision import load_torchvision
model = nnx.eval_shape(lambda: resnet18(num_classes=None, rngs=nnx.Rngs(0)))
report = load_torchvision(model, {str(path)!r}, strict=True)
ref = np.load({str(tmp_path / 'ref.npz')!r})
np.testing.assert_array_equal(np.asarray(model.conv1.kernel.get_value()), ref["conv1"].transpose(2, 3, 1, 0))
np.testing.assert_array_equal(np.asarray(model.layer4[1].bn2.var.get_value()), ref["fc"])
print("OK", report.ok)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK True" in out.stdout
