"""Feature extraction setups: which generators turn `dfew` frames into cached features.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 --config.generators.face_resnet18.weights=PATH.pth
    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer+resnet18 ...

Variant = generator names joined by '+', then optional `,source=<dfew config>` (default
frames112; use e.g. frames112_pose to carry OpenPose keypoints along with the features). Each
generator becomes the feature key `face_<generator>`.
To extract a fine-tuned generator, set `--config.generators.face_<generator>.checkpoint=<run workdir>`
(and a distinct `--config.output.name`).
"""

import ml_collections

from fer_jax.models import generators as generators_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = (arg or "mini_xception_fer").split(",")
    names = items[0].split("+")
    options = dict(a.split("=", 1) for a in items[1:])
    if set(options) - {"source"}:
        raise ValueError(f"configs/extract.py: unknown option(s) {sorted(set(options) - {'source'})}; known: source.")
    c = ml_collections.ConfigDict()
    c.source = ml_collections.ConfigDict({"name": f"dfew/{options.get('source', 'frames112')}", "data_dir": "data/tfds"})
    c.output = ml_collections.ConfigDict({"name": "_".join(names), "data_dir": "data/tfds"})
    c.generators = ml_collections.ConfigDict()
    for name in names:
        generators_lib.get(name)
        c.generators[f"face_{name}"] = ml_collections.ConfigDict(
            {"generator": name, "weights": "", "checkpoint": "", "modality": ""})
    c.batch_size = 16
    c.overwrite = False
    return c
