"""The published-recipe configs (configs/paper.py, configs/clip.py) end to end on a small synthetic DFEW.

Weights by name without a network: the test writes random-weight files in the publishers' formats
(torchvision's resnet18() state dict via torch.save; open_clip's ViT-B-16 state dict as
safetensors) into a temporary $FER_JAX_CACHE under hub.WEIGHTS's file names and pins the table's
hashes to them, so `weights=imagenet` / `weights=openai` resolve to those files exactly as they
would to the publishers' (the URLs point nowhere: a download attempt would fail the test).

ViT-B/16 at 224 px is slow on a CPU, so everything runs on an 8-clip build at 64 px.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import tfds_dfew.dfew  # noqa: F401  (registers the `dfew` builder with TFDS)
from fer_jax.weights import hub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import clip as clip_configs  # noqa: E402
from configs import extract as extract_configs  # noqa: E402
from configs import paper  # noqa: E402

NUM_CLIPS = 8
FRAME_SIZE = 64
GENERATORS = {"resnet18": ("imagenet", 512), "clip_vit_b16": ("openai", 512)}


def _write_resnet18(path: str) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)


def _write_clip_vit_b16(path: str) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None)
    # the image tower's keys (`visual.*`), as in the published whole-model file
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("visual.")}, path)


WRITERS = {"resnet18": _write_resnet18, "clip_vit_b16": _write_clip_vit_b16}


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory):
    """$FER_JAX_CACHE holding random-weight files under the table's names, the table pinned to them."""
    cache = str(tmp_path_factory.mktemp("fer_jax_cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(hub.CACHE_ENV, cache)
        mp.delenv(hub.MIRROR_ENV, raising=False)
        for generator, (name, _) in GENERATORS.items():
            entry = hub.WEIGHTS[(generator, name)]
            path = os.path.join(cache, entry.file_name)
            WRITERS[generator](path)
            mp.setitem(hub.WEIGHTS, (generator, name), dataclasses.replace(
                entry, sha256=hub.sha256_of(path), url=f"http://127.0.0.1:9/no-download/{entry.file_name}"))
        yield cache


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """`dfew/frames64` of an 8-clip synthetic release (each fold's test split non-empty); its data_dir."""
    from tfds_dfew import build, synthetic

    root = tmp_path_factory.mktemp("recipes_release") / "DFEW"
    synthetic.generate(root, NUM_CLIPS, seed=11, frame_size=FRAME_SIZE, missing_frac=0.0, short_frac=0.0,
                       multi_frac=0.0, max_frames=16, workers=1, audio=False)
    data_dir = str(tmp_path_factory.mktemp("recipes_tfds"))
    build.build(str(root), data_dir, config=f"frames{FRAME_SIZE}", num_workers=2)
    return data_dir


@pytest.fixture(scope="module")
def features_dir(frames_dir, weights_cache, tmp_path_factory):
    """configs/extract.py:<generator>,weights=<name> over frames_dir, for both generators; the output data_dir."""
    from fer_jax import extract

    out = str(tmp_path_factory.mktemp("recipes_features"))
    for generator, (name, _) in GENERATORS.items():
        config = extract_configs.get_config(f"{generator},weights={name},source=frames{FRAME_SIZE}")
        config.source.data_dir = frames_dir
        config.output.data_dir = out
        config.batch_size = 1  # each split's last batch is padded to a full one: 1 computes no padding clip
        extract.extract(config)
    return out


def _records(builder, key: str) -> dict[str, np.ndarray]:
    """{clip id: record[key]} over every split of a built dataset."""
    out = {}
    for split in builder.info.splits.keys():
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            record = source[i]
            clip_id = record["clip_id"]
            out[clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)] = record[key]
    return out


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_extract_with_named_weights_matches_the_generator(generator, frames_dir, features_dir, weights_cache):
    import tensorflow_datasets as tfds

    from fer_jax.models import generators
    from tfds_dfew import features as features_lib

    name, dim = GENERATORS[generator]
    builder = features_lib.open_builder(features_dir, generator)
    assert builder is not None, os.listdir(features_dir)
    key = f"face_{generator}"
    assert builder.info.features[key].shape == (16, dim)
    made = builder.info.metadata["setup"]["generators"][key]
    assert (made["generator"], made["weights"], made["feature_dim"]) == (generator, name, dim)

    cached = _records(builder, key)
    frames = _records(tfds.builder(f"dfew/frames{FRAME_SIZE}", data_dir=frames_dir), "frames")
    assert sorted(cached) == sorted(frames) and len(cached) == NUM_CLIPS
    ids = sorted(cached)
    got = np.stack([np.asarray(cached[i]) for i in ids])
    assert got.shape == (NUM_CLIPS, 16, dim) and got.dtype == np.float32 and np.isfinite(got).all()
    assert got.std() > 0

    # The same generator with the same named weights, run directly on the frames of two clips.
    module, report = generators.create(generator, weights=name)
    assert "random" not in str(report)
    graphdef, state = nnx.split(module)
    run = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=False))
    clips = np.stack([np.stack(frames[i]) if isinstance(frames[i], list) else np.asarray(frames[i]) for i in ids[:2]])
    want = np.asarray(run(state, clips))
    np.testing.assert_allclose(got[:2], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _point_at(config, name: str, data_dir: str):
    config.dataset.name = name
    config.dataset.data_dir = data_dir
    return config


def _assert_trained(result, config):
    assert result.get("step") == config.num_train_steps, result
    for metric in ("uar", "war"):
        assert math.isfinite(result[metric]) and 0.0 <= result[metric] <= 1.0, result


def test_paper_frozen_trains_on_cached_resnet18_features(features_dir, tmp_path):
    from fer_jax import train

    config = _point_at(paper.get_config("frozen,tiny"), "dfew_features/resnet18", features_dir)
    assert config.modalities.face.tokenizer == "linear" and config.modalities.face.input == "face_resnet18"
    _assert_trained(train.train_and_evaluate(config, str(tmp_path / "paper_frozen")), config)


def test_paper_finetune_trains_resnet18_end_to_end(frames_dir, weights_cache, tmp_path):
    from fer_jax import train

    config = _point_at(paper.get_config("finetune,tiny"), f"dfew/frames{FRAME_SIZE}", frames_dir)
    face = config.modalities.face
    assert (face.tokenizer, face.generator, face.weights) == ("generator", "resnet18", "imagenet")
    assert config.optimizer.lr_multipliers == (("tokenizers/face/generator/.*", 0.1),)
    _assert_trained(train.train_and_evaluate(config, str(tmp_path / "paper_finetune")), config)


def test_clip_trains_on_cached_clip_features(features_dir, tmp_path):
    from fer_jax import train

    config = _point_at(clip_configs.get_config("tiny"), "dfew_features/clip_vit_b16", features_dir)
    _assert_trained(train.train_and_evaluate(config, str(tmp_path / "clip")), config)


def test_recipe_variants():
    ft = paper.get_config("finetune,+pose,fold=3")
    assert ft.dataset.name == "dfew/frames112_pose" and ft.dataset.fold == 3
    assert sorted(ft.modalities) == ["face", "pose"] and ft.data.crop_size == 104 and ft.data.flip
    frozen = paper.get_config("frozen,face+pose+omnivec")
    assert frozen.dataset.name == "dfew_features/resnet18_omnivec"
    assert sorted(frozen.modalities) == ["face", "omnivec", "pose"]
    assert paper.get_config("").num_train_steps == 100 * 293  # 100 epochs of a fold at batch 32
    for bad in ("finetune,face+omnivec", "frozen,finetune", "pose", "finetune,features=x"):
        with pytest.raises(ValueError, match="configs/paper.py"):
            paper.get_config(bad)
    assert clip_configs.get_config("l14").dataset.name == "dfew_features/clip_vit_l14"
    assert clip_configs.get_config("siglip,fold=4").modalities.face.input == "face_siglip_vit_b16"
    with pytest.raises(ValueError, match="configs/clip.py"):
        clip_configs.get_config("l14,siglip")


@pytest.mark.parametrize("make,shapes", [
    (lambda: paper.get_config("finetune,+pose"), {"face": (16, 104, 104, 3), "pose": (16, 411)}),
    (lambda: paper.get_config("frozen"), {"face": (16, 512)}),
    (lambda: clip_configs.get_config("l14"), {"face": (16, 768)}),
], ids=["paper-finetune+pose", "paper-frozen", "clip-l14"])
def test_full_size_recipes_build(make, shapes):
    """The real-DFEW configs make a model and optimizer (shapes only: nothing is computed or loaded)."""
    from fer_jax import runs, train_state

    config = make()
    _, _, state = train_state.abstract(config, runs.model_builder(config, shapes, pretrained=False))
    assert train_state.param_count(state) > 1_000_000
