"""A tiny synthetic DFEW with cached mini_xception_fer features, for benchmarks that time commands, not accuracy."""

from __future__ import annotations

import os


def features(root: str, *, clips: int = 24) -> str:
    """Builds `clips` synthetic clips (64 px frames) under root and extracts dfew_features/mini_xception_fer;
    returns the features' data dir."""
    from configs import extract as extract_configs
    from fer_jax import extract
    from tfds_dfew import build, synthetic

    release = os.path.join(root, "release", "DFEW")
    synthetic.generate(release, clips, seed=3, frame_size=64, max_frames=20, workers=1, audio=False)
    frames_dir, features_dir = os.path.join(root, "tfds"), os.path.join(root, "features")
    build.build(release, frames_dir, config="frames64", num_workers=2)
    c = extract_configs.get_config("mini_xception_fer")
    c.source.name, c.source.data_dir = "dfew/frames64", frames_dir
    c.output.name, c.output.data_dir = "mini_xception_fer", features_dir
    c.batch_size = 8
    extract.extract(c)
    return features_dir
