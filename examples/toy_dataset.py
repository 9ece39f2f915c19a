"""A 3-class toy dataset ('toy3'): a release layout of its own, its builder, and a maker of such releases.

Shows that a dataset is one module that registers itself: load it with
FER_JAX_PLUGINS=examples.toy_dataset, then

    python -m examples.toy_dataset --out data/toy3_release                  # make a release
    python -m tfds_dfew.build --dataset toy3 --manual_dir data/toy3_release --data_dir data/tfds --config frames64
    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer,dataset=toy3,source=frames64
    python -m fer_jax.train --config configs/fusion.py:face,dataset=toy3 --workdir runs/toy3

The release:

    <root>/labels.csv            clip,label,split   (label: calm | joy | anger; split: train | test)
    <root>/frames/<clip>/<n>.jpg one folder of frames per clip, any length

Everything downstream (tables, plots, predict's JSON) speaks of calm, joy and anger, the names this
module declares; calm, joy and anger stand for the basic emotions neutral, happy and angry, so a
toy3 run can be scored on DFEW's clips of those three classes (fer_jax.evaluate --dataset dfew).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tfds_dfew import clip_builder, datasets, description, synthetic_draw
from tfds_dfew.errors import ReleaseError
from tfds_dfew.plan import ClipEntry, Plan

CLASSES = ("calm", "joy", "anger")
DRAWN_AS = {"calm": 2, "joy": 0, "anger": 3}  # the synthetic faces' classes (DFEW order: neutral, happy, angry)

DESCRIPTION = description.DatasetDescription(
    name="toy3", title="Toy3", class_names=CLASSES, basic_emotions=("neutral", "happy", "angry"),
    scheme=description.SplitScheme.train_test(), clip_id="any folder name under frames/",
    frame_sources=("frames",))


@datasets.register_builder
class Toy3(clip_builder.ClipBuilder):
    """Toy3 clips: frames, label and the train/test split of labels.csv."""

    DESCRIPTION = DESCRIPTION
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = clip_builder.ClipBuilder.grid(sizes=(64, 112), pose=False, audio_=False)
    DEFAULT_CONFIG_NAME = "frames64"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Make a release with python -m examples.toy_dataset --out DIR; pass DIR."

    def _plan(self, root: str) -> Plan:
        path = os.path.join(root, "labels.csv")
        if not os.path.isfile(path):
            raise ReleaseError(f"{path}: not found; a toy3 release holds labels.csv and frames/.")
        splits = {"train": [], "test": []}
        with open(path, newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if row.get("label") not in CLASSES or row.get("split") not in splits:
                    raise ReleaseError(f"{path}, line {line}: expected a label among {CLASSES} and a split train or "
                                       f"test, got {row}.")
                folder = os.path.join(root, "frames", row["clip"])
                splits[row["split"]].append(ClipEntry(row["clip"], CLASSES.index(row["label"]), 0, folder,
                                                      split=row["split"]))
        return Plan(splits=splits)


def make_release(root: str, clips: int = 24, *, seed: int = 0, frame_size: int = 64, num_frames: int = 12) -> dict:
    """Writes a toy3 release of `clips` drawn clips (a quarter in test); returns {clip: (label, split)}."""
    os.makedirs(os.path.join(root, "frames"), exist_ok=True)
    out = {}
    for k in range(clips):
        label = CLASSES[k % len(CLASSES)]
        split = "test" if k % 4 == 3 else "train"
        clip = f"clip{k:03d}"
        frames, _, _ = synthetic_draw.draw_clip(synthetic_draw.clip_rng(seed, k), DRAWN_AS[label], num_frames,
                                                frame_size)
        folder = os.path.join(root, "frames", clip)
        os.makedirs(folder, exist_ok=True)
        for i, frame in enumerate(frames, start=1):
            Image.fromarray(np.asarray(frame)).save(os.path.join(folder, f"{i}.jpg"), quality=90)
        out[clip] = (label, split)
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip", "label", "split"])
        writer.writerows([clip, label, split] for clip, (label, split) in out.items())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.toy_dataset", description="Write a toy3 release.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = make_release(args.out, args.clips, seed=args.seed)
    print(f"wrote {len(written)} toy3 clips to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
