"""Parity of fer_jax's NNX ResNets and the .pth loader with torchvision (eval and train mode)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from fer_jax.models import resnet as R  # noqa: E402
from fer_jax.weights.torchvision import load_torchvision  # noqa: E402

RTOL = 1e-4


def rel_err(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def random_torchvision(arch: str, seed: int) -> "torch.nn.Module":
    """A torchvision ResNet in eval mode with random weights, BN affine params and BN running stats."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return model.eval()


def torch_forward(model, x_nhwc: np.ndarray, *, features: bool = False) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        if features:
            m = model
            y = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            y = m.layer4(m.layer3(m.layer2(m.layer1(y))))
            return torch.flatten(m.avgpool(y), 1).numpy()
        return model(x).numpy()


def batch(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def abstract(arch: str, **kw) -> R.ResNet:
    """A ResNet without random initialisation, to be filled by a complete checkpoint."""
    return nnx.eval_shape(lambda: getattr(R, arch)(rngs=nnx.Rngs(0), **kw))


def jitted(model: R.ResNet, method: str):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x))


@pytest.fixture(scope="module")
def tv18():
    return random_torchvision("resnet18", seed=0)


@pytest.fixture(scope="module")
def tv50():
    return random_torchvision("resnet50", seed=1)


@pytest.fixture(scope="module")
def pth18(tv18, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv18.state_dict(), path)
    return path


def test_resnet18_parity_from_pth(tv18, pth18):
    model = R.resnet18(rngs=nnx.Rngs(0))  # concrete init, then overwritten
    report = load_torchvision(model, pth18, strict=True)
    assert report.ok and len(report.loaded) == 102 and len(report.ignored) == 20
    assert report.checkpoint_arch == "resnet18" and str(pth18) in str(report)
    x = batch((2, 112, 112, 3))
    logits = jitted(model, "__call__")(nnx.state(model), jnp.asarray(x))
    feats = jitted(model, "features")(nnx.state(model), jnp.asarray(x))
    assert logits.shape == (2, 1000) and feats.shape == (2, 512)
    assert logits.dtype == jnp.float32 and feats.dtype == jnp.float32
    assert rel_err(logits, torch_forward(tv18, x)) < RTOL
    assert rel_err(feats, torch_forward(tv18, x, features=True)) < RTOL


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_parity_other_depths(arch, tv50):
    tv = tv50 if arch == "resnet50" else random_torchvision(arch, seed=2)
    model = abstract(arch)
    load_torchvision(model, tv.state_dict(), strict=True)  # torch tensors accepted directly
    x = batch((2, 64, 64, 3), seed=1)
    assert rel_err(model(jnp.asarray(x)), torch_forward(tv, x)) < RTOL
    feats = model.features(jnp.asarray(x))
    assert feats.shape == (2, model.feature_dim)
    assert rel_err(feats, torch_forward(tv, x, features=True)) < RTOL


def test_train_mode_batchnorm_matches_torch(tv18):
    tv = random_torchvision("resnet18", seed=3).train()
    model = abstract("resnet18")
    load_torchvision(model, tv.state_dict(), strict=True)
    old_mean = {k: v.clone() for k, v in tv.state_dict().items() if k.endswith("running_mean")}
    old_var = {k: v.clone() for k, v in tv.state_dict().items() if k.endswith("running_var")}
    counts = {}  # samples per channel that each BatchNorm saw: batch * height * width
    hooks = [
        mod.register_forward_hook(lambda m, inp, out, name=name: counts.__setitem__(name, inp[0].numel() // inp[0].shape[1]))
        for name, mod in tv.named_modules()
        if isinstance(mod, torch.nn.BatchNorm2d)
    ]
    x = batch((4, 64, 64, 3), seed=4)
    want = torch_forward(tv, x)
    for h in hooks:
        h.remove()
    got = model(jnp.asarray(x), train=True)
    assert rel_err(got, want) < RTOL
    # The eval-mode output of the same batch differs: the batch statistics were really used.
    assert rel_err(model(jnp.asarray(x)), want) > 1e-2

    from fer_jax.weights.torchvision import _torch_key, _variables

    new = {_torch_key(p): np.asarray(v.get_value()) for p, v in _variables(model)}
    torch_new = tv.state_dict()
    for key, old in old_mean.items():
        np.testing.assert_allclose(new[key], torch_new[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
    for key, old in old_var.items():
        n = counts[key.rsplit(".", 1)[0]]
        # torch mixes in the unbiased batch variance, flax the biased one (factor (n - 1) / n).
        old = old.double().numpy()
        expected = 0.9 * old + (torch_new[key].double().numpy() - 0.9 * old) * (n - 1) / n
        np.testing.assert_allclose(new[key], expected, rtol=1e-4, atol=1e-5, err_msg=key)


def test_fold_batchnorm_matches_unfused(tv18):
    model = abstract("resnet18")
    load_torchvision(model, tv18.state_dict(), strict=True)
    folded = R.fold_batchnorm(model)
    assert folded.fused and folded.bn1 is None and folded.conv1.bias is not None
    x = jnp.asarray(batch((2, 64, 64, 3), seed=5))
    assert rel_err(folded.features(x), model.features(x)) < RTOL
    assert rel_err(folded(x), model(x)) < RTOL
    with pytest.raises(ValueError, match="folded"):
        folded(x, train=True)
    with pytest.raises(ValueError, match="folded"):
        load_torchvision(folded, tv18.state_dict())


def test_wrong_architecture_is_refused(tv50, tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(tv50.state_dict(), path)
    model = abstract("resnet18")
    with pytest.raises(ValueError, match=r"r50\.pth has bottleneck blocks .*resnet50-like.* model is resnet18"):
        load_torchvision(model, path)
    r34 = {k: v.numpy() for k, v in torchvision.models.resnet34().state_dict().items()}
    with pytest.raises(ValueError, match=r"resnet34-like.*resnet34\(\.\.\.\)"):
        load_torchvision(model, r34)
    other = tmp_path / "vgg_like.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), other)
    with pytest.raises(ValueError, match=r"vgg_like\.pth does not look like a torchvision ResNet"):
        load_torchvision(model, other)
    wide = {k: v.numpy() for k, v in torchvision.models.wide_resnet50_2().state_dict().items()}
    with pytest.raises(ValueError, match="different layer shapes"):
        load_torchvision(abstract("resnet50"), wide)


def test_missing_and_unexpected_keys_are_reported(tv18):
    state = {k: v.numpy().copy() for k, v in tv18.state_dict().items()}
    del state["layer1.0.bn1.running_var"]
    state["bogus.weight"] = np.zeros(3, np.float32)
    model = R.resnet18(rngs=nnx.Rngs(0))
    before = np.asarray(model.layer1[0].bn1.var.get_value()).copy()
    kernel_before = np.asarray(model.conv1.kernel.get_value()).copy()
    with pytest.raises(ValueError, match="strict load"):
        load_torchvision(model, state, strict=True)
    np.testing.assert_array_equal(model.conv1.kernel.get_value(), kernel_before)  # nothing written
    report = load_torchvision(model, state)
    assert report.missing == ["layer1.0.bn1.running_var"]
    assert report.unexpected == ["bogus.weight"]
    assert not report.ok and len(report.loaded) == 101
    text = str(report)
    assert "1 missing" in text and "1 unexpected" in text and "bogus.weight" in text
    np.testing.assert_array_equal(model.layer1[0].bn1.var.get_value(), before)
    np.testing.assert_array_equal(
        model.conv1.kernel.get_value(), state["conv1.weight"].transpose(2, 3, 1, 0)
    )
    with pytest.raises(ValueError, match="built abstract"):
        load_torchvision(abstract("resnet18"), state)


def test_headless_loads(tv18, tmp_path):
    trunk = {k: v.numpy() for k, v in tv18.state_dict().items() if not k.startswith("fc.")}
    np.savez(tmp_path / "trunk.npz", **trunk)
    model = abstract("resnet18", num_classes=None)
    report = load_torchvision(model, tmp_path / "trunk.npz", strict=True)
    assert report.ok and not report.skipped_head
    assert any("no fc.* head" in n for n in report.notes)
    x = batch((2, 64, 64, 3), seed=6)
    out = model(jnp.asarray(x))
    assert out.shape == (2, 512)
    assert rel_err(out, torch_forward(tv18, x, features=True)) < RTOL

    full = load_torchvision(abstract("resnet18", num_classes=None), tv18.state_dict(), strict=True)
    assert full.skipped_head == ["fc.weight", "fc.bias"] and not full.unexpected

    seven = load_torchvision(R.resnet18(num_classes=7, rngs=nnx.Rngs(0)), tv18.state_dict())
    assert sorted(m[0] for m in seven.mismatched) == ["fc.bias", "fc.weight"]
    assert any("1000 classes" in n for n in seven.notes) and len(seven.loaded) == 100


def test_normalize_matches_torchvision():
    from torchvision.transforms import functional as TF

    frames = np.random.default_rng(7).integers(0, 256, size=(2, 9, 11, 3), dtype=np.uint8)
    got = np.asarray(R.normalize_imagenet(jnp.asarray(frames)))
    assert got.dtype == np.float32 and got.shape == frames.shape
    for frame, g in zip(frames, got):
        ref = TF.normalize(TF.to_tensor(frame), R.IMAGENET_MEAN, R.IMAGENET_STD).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        R.normalize_imagenet(jnp.zeros((2, 4, 4, 3), jnp.float32))


def test_bfloat16_compute_keeps_float32_params(tv18):
    model = abstract("resnet18", dtype=jnp.bfloat16)
    load_torchvision(model, tv18.state_dict(), strict=True)
    assert model.conv1.kernel.get_value().dtype == jnp.float32
    x = batch((2, 64, 64, 3), seed=8)
    feats = model.features(jnp.asarray(x))
    assert feats.dtype == jnp.float32
    assert rel_err(feats, torch_forward(tv18, x, features=True)) < 5e-2


def test_max_pool_matches_torch_with_ties():
    # ReLU outputs: many zeros, so windows tie; torch sends each window's gradient to its first maximum
    x = np.maximum(batch((2, 13, 10, 5), seed=9), 0)
    pool = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),  # noqa: E731
                                           ((0, 0), (1, 1), (1, 1), (0, 0)))
    y, vjp = jax.vjp(R.max_pool_3x3_s2, jnp.asarray(x))
    g = batch(y.shape, seed=10)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
    yt.backward(torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2))))
    np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(pool(jnp.asarray(x))))
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), xt.grad.numpy().transpose(0, 2, 3, 1))


def test_train_mode_gradients_match_torch():
    tv = random_torchvision("resnet18", seed=5).train()
    model = abstract("resnet18")
    load_torchvision(model, tv.state_dict(), strict=True)
    x, r = batch((3, 48, 48, 3), seed=11), batch((3, 1000), seed=12)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()
    (tv(xt) * torch.from_numpy(r)).sum().backward()

    def loss(params, rest, x):
        return jnp.sum(nnx.merge(graphdef, params, rest, copy=True)(x, train=True) * r)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads, dx = jax.jit(jax.grad(loss, argnums=(0, 2)))(params, rest, jnp.asarray(x))
    assert rel_err(dx, xt.grad.numpy().transpose(0, 2, 3, 1)) < 1e-3
    flat = dict(nnx.to_flat_state(grads))
    checked = {("conv1", "kernel"): tv.conv1.weight, ("bn1", "scale"): tv.bn1.weight,
               ("layer1", 0, "conv2", "kernel"): tv.layer1[0].conv2.weight,
               ("layer2", 0, "bn2", "bias"): tv.layer2[0].bn2.bias,
               ("layer4", 1, "conv2", "kernel"): tv.layer4[1].conv2.weight, ("fc", "kernel"): tv.fc.weight}
    for path, tparam in checked.items():
        want = tparam.grad.numpy()
        want = want.transpose(2, 3, 1, 0) if want.ndim == 4 else want.T
        assert rel_err(flat[path].get_value(), want) < 1e-3, path


def test_create_fills_shapes_from_the_file_and_falls_back_when_it_lacks_some(tv18, tmp_path):
    """generators.create builds shapes only when the file fills them; a partial file gets the random build."""
    from fer_jax.models import generators

    sd = tv18.state_dict()
    full, partial = tmp_path / "full.pth", tmp_path / "partial.pth"
    torch.save(sd, full)
    torch.save({k: v for k, v in sd.items() if k != "layer4.1.bn2.weight"}, partial)
    gen, report = generators.create("resnet18", weights=str(full))
    assert report.ok
    np.testing.assert_array_equal(np.asarray(gen.network.conv1.kernel.get_value()),
                                  sd["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    leaves = jax.tree.leaves(nnx.state(gen))
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    gen, report = generators.create("resnet18", weights=str(partial))
    assert "layer4.1.bn2.weight" in report.missing
    fresh, _ = generators.create("resnet18", pretrained=False)  # the same seed's initialisation
    np.testing.assert_array_equal(np.asarray(gen.network.layer4[1].bn2.scale.get_value()),
                                  np.asarray(fresh.network.layer4[1].bn2.scale.get_value()))
    np.testing.assert_array_equal(np.asarray(gen.network.layer4[1].bn2.bias.get_value()),
                                  sd["layer4.1.bn2.bias"].numpy())
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(gen)))
