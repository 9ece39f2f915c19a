"""CLIP / SigLIP image towers vs open_clip and transformers (random weights, files in their native formats)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from fer_jax.models import vit  # noqa: E402
from fer_jax.weights.vit_loaders import load_openclip, load_siglip  # noqa: E402

torch.set_num_threads(1)
PARITY = 1e-4  # max |ours - reference| / max |reference|


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _jiggle(model, norm_word: str) -> None:
    """Random-init references have LayerNorm = (1, 0) and zero biases; move them so the test sees them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if norm_word in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 224, 224, 3)).astype(np.float32)


def _encode(model, x):
    return np.asarray(nnx.jit(lambda m, x: m.encode_images(x))(model, x))


def _clip_reference(name: str):
    torch.manual_seed(0)
    ref = open_clip.create_model(name, pretrained=None, force_quick_gelu=True).eval()
    _jiggle(ref.visual, "ln")
    return ref


@pytest.fixture(scope="module")
def clip_b16(tmp_path_factory):
    """(open_clip ViT-B-16 with QuickGELU, path of its torch.save state dict)."""
    ref = _clip_reference("ViT-B-16")
    path = tmp_path_factory.mktemp("clip") / "vit_b16_state_dict.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """(transformers SiglipVisionModel, its save_pretrained folder)."""
    torch.manual_seed(0)
    ref = transformers.SiglipVisionModel(transformers.SiglipVisionConfig()).eval()
    _jiggle(ref, "norm")
    folder = tmp_path_factory.mktemp("siglip") / "siglip_vision"
    ref.save_pretrained(folder)
    return ref, folder


def test_clip_b16_matches_open_clip_encode_image(clip_b16):
    ref, path = clip_b16
    model = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0)))
    report = load_openclip(model, path)
    assert report.ok, report
    assert len(report.unused) > 100 and "text tower" in str(report)  # the whole CLIP model was saved
    x = _images(2)
    with torch.no_grad():
        want = ref.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = _encode(model, x)
    assert got.shape == (2, 512) and got.dtype == np.float32
    assert _rel(got, want) < PARITY


def test_clip_frames_call_is_preprocess_then_encode(clip_b16):
    """uint8 clips at 224 px (no resize): __call__ gives [B, T, 512] = encode_image of the normalised frames."""
    ref, path = clip_b16
    model = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0)))
    load_openclip(model, path)
    frames = np.random.default_rng(3).integers(0, 256, size=(1, 2, 224, 224, 3), dtype=np.uint8)
    got = np.asarray(nnx.jit(lambda m, f: m(f))(model, frames))
    x = (frames.reshape(2, 224, 224, 3) / 255.0 - np.asarray(vit.CLIP_MEAN)) / np.asarray(vit.CLIP_STD)
    with torch.no_grad():
        want = ref.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    assert got.shape == (1, 2, 512)
    assert _rel(got.reshape(2, 512), want) < PARITY


def test_clip_safetensors_without_visual_prefix_loads_the_same(clip_b16, tmp_path):
    ref, path = clip_b16
    visual = {k: v.numpy() for k, v in ref.visual.state_dict().items()}
    save_file(visual, str(tmp_path / "visual.safetensors"))
    a = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0)))
    b = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0)))
    load_openclip(a, path)
    report = load_openclip(b, tmp_path / "visual.safetensors", strict=True)
    assert report.ok and not report.unused
    for (_, va), (_, vb) in zip(nnx.to_flat_state(nnx.state(a, nnx.Param)), nnx.to_flat_state(nnx.state(b, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value()))


@pytest.mark.slow
def test_clip_l14_matches_open_clip_encode_image(tmp_path):
    """ViT-L/14 through a safetensors file (open_clip's hub format); batch 1 on CPU."""
    from safetensors.torch import save_file as save_torch

    ref = _clip_reference("ViT-L-14")
    path = tmp_path / "open_clip_model.safetensors"
    save_torch({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = nnx.eval_shape(lambda: vit.clip_vit_l14(rngs=nnx.Rngs(0)))
    assert load_openclip(model, path).ok
    x = _images(1, seed=1)
    with torch.no_grad():
        want = ref.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = _encode(model, x)
    assert got.shape == (1, 768)
    assert _rel(got, want) < PARITY


def test_siglip_matches_transformers_pooler_output(siglip):
    ref, folder = siglip
    model = nnx.eval_shape(lambda: vit.siglip_vit_b16(rngs=nnx.Rngs(0)))
    report = load_siglip(model, folder)
    assert report.ok and not report.unused, report
    x = _images(2, seed=2)
    with torch.no_grad():
        want = ref(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2))).pooler_output.numpy()
    got = _encode(model, x)
    assert got.shape == (2, 768)
    assert _rel(got, want) < PARITY


def test_siglip_whole_model_layout_reports_text_tower_unused(siglip, tmp_path):
    """google/siglip-base-patch16-224 is a whole SiglipModel: vision_model.* + text_model.* + logit_*."""
    _, folder = siglip
    from safetensors.numpy import load_file

    state = {f"vision_model.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state["text_model.embeddings.token_embedding.weight"] = np.zeros((8, 4), np.float32)
    state["logit_scale"] = np.zeros((1,), np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    model = nnx.eval_shape(lambda: vit.siglip_vit_b16(rngs=nnx.Rngs(0)))
    report = load_siglip(model, tmp_path / "model.safetensors")
    assert report.ok, report
    assert sorted(report.unused) == ["logit_scale", "text_model.embeddings.token_embedding.weight"]
    assert "2 unused" in str(report)


def test_refuses_other_architectures_before_writing(clip_b16, siglip, tmp_path):
    _, b16_path = clip_b16
    _, siglip_folder = siglip
    l14 = nnx.eval_shape(lambda: vit.clip_vit_l14(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"vit_b16_state_dict\.pt holds an open_clip ViT of clip_vit_b16.*clip_vit_l14"):
        load_openclip(l14, b16_path)

    import torchvision

    resnet_path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet_path)
    model = vit.siglip_vit_b16(rngs=nnx.Rngs(0))
    before = np.asarray(model.patch_embed.kernel.get_value()).copy()
    with pytest.raises(ValueError, match=r"resnet18\.pth holds a ResNet"):
        load_siglip(model, resnet_path)
    with pytest.raises(ValueError, match=r"holds an open_clip ViT"):
        load_siglip(model, b16_path)
    np.testing.assert_array_equal(np.asarray(model.patch_embed.kernel.get_value()), before)  # nothing written

    b16 = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"resnet18\.pth holds a ResNet"):
        load_openclip(b16, resnet_path)
    with pytest.raises(ValueError, match=r"model\.safetensors holds a transformers SigLIP"):
        load_openclip(b16, siglip_folder / "model.safetensors")
    with pytest.raises(TypeError, match="ClipViT"):
        load_openclip(model, b16_path)


def test_bfloat16_runs_and_is_close(clip_b16):
    ref, path = clip_b16
    model = nnx.eval_shape(lambda: vit.clip_vit_b16(rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
    load_openclip(model, path)
    assert model.proj.get_value().dtype == jnp.float32  # parameters stay float32
    x = _images(2)
    with torch.no_grad():
        want = ref.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = _encode(model, x)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert _rel(got, want) < 3e-2


def _test_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth pattern plus noise: resize-sensitive, like a face crop with texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), np.sin(11 * xx * yy)], -1) * 100 + 128
    noise = np.random.default_rng(seed).normal(0, 20, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# Resizing differs from PIL / torchvision only by rounding: at most 2 uint8 levels anywhere (upsampling),
# 1 when downsampling, and under 0.02 levels on average. Frames already at 224 px are exact.
@pytest.mark.parametrize("h,w", [(224, 224), (300, 400), (400, 300), (112, 112)])
def test_preprocessing_matches_the_reference_transforms(h, w):
    from open_clip.transform import image_transform

    image = _test_image(h, w, seed=h + w)
    clip_tf = image_transform(224, is_train=False, mean=vit.CLIP_MEAN, std=vit.CLIP_STD)
    want = clip_tf(Image.fromarray(image)).numpy().transpose(1, 2, 0)
    levels = np.abs(np.asarray(vit.preprocess_clip(image)) - want) * np.asarray(vit.CLIP_STD) * 255
    want_s = transformers.SiglipImageProcessor()(images=Image.fromarray(image), return_tensors="np")["pixel_values"]
    levels_s = np.abs(np.asarray(vit.preprocess_siglip(image)) - want_s[0].transpose(1, 2, 0)) * 0.5 * 255
    for d in (levels, levels_s):
        assert d.max() <= 2.0 + 1e-3 and d.mean() < 0.02
        if (h, w) == (224, 224):
            assert d.max() < 1e-3


def test_frames_must_be_uint8_clips():
    model = nnx.eval_shape(lambda: vit.siglip_vit_b16(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="uint8"):
        model(np.zeros((1, 1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        model(np.zeros((1, 32, 32, 3), np.uint8))
