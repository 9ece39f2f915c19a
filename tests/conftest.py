"""Shared fixtures: a small synthetic DFEW release and its built TFDS dataset (built once per session)."""

from __future__ import annotations

import pytest

from tests.helpers import TINY_CLIPS, TINY_FRAME_SIZE, extract_config


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A synthetic release tree: 60 labelled clips at 64 px (some missing, some short), with OpenPose."""
    from tfds_dfew import synthetic

    root = tmp_path_factory.mktemp("release") / "DFEW"
    summary = synthetic.generate(root, TINY_CLIPS, seed=3, frame_size=TINY_FRAME_SIZE, max_frames=24, workers=1,
                                 audio=False)
    return str(root), summary


@pytest.fixture(scope="session")
def tiny_tfds(tiny_release, tmp_path_factory):
    """`dfew/frames64` built from tiny_release; returns (data_dir, builder)."""
    from tfds_dfew import build

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = build.build(tiny_release[0], data_dir, config="frames64", num_workers=2)
    return data_dir, builder


@pytest.fixture(scope="session")
def tiny_features(tiny_tfds, tmp_path_factory):
    """mini_xception_fer features of tiny_tfds as `dfew_features/mini_xception_fer`: (frames dir, out dir, path)."""
    from fer_jax import extract

    data_dir, _ = tiny_tfds
    out = str(tmp_path_factory.mktemp("features"))
    return data_dir, out, extract.extract(extract_config(data_dir, out))


@pytest.fixture(scope="module")
def quick_compiles():
    """Tiny models, many shapes: XLA's optimisations cost more time than they save (use it per module)."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
