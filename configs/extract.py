"""Feature extraction setups: which generators turn `dfew` frames into cached features.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 --config.generators.face_resnet18.weights=PATH.pth
    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer+resnet18 ...

Variant = generator names joined by '+'. Each becomes the feature key `face_<generator>`.
To extract a fine-tuned generator, set `--config.generators.face_<generator>.checkpoint=<run workdir>`
(and a distinct `--config.output.name`).
"""

import ml_collections

from fer_jax.models import generators as generators_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    names = (arg or "mini_xception_fer").split("+")
    c = ml_collections.ConfigDict()
    c.source = ml_collections.ConfigDict({"name": "dfew/frames112", "data_dir": "data/tfds"})
    c.output = ml_collections.ConfigDict({"name": "_".join(names), "data_dir": "data/tfds"})
    c.generators = ml_collections.ConfigDict()
    for name in names:
        generators_lib.get(name)
        c.generators[f"face_{name}"] = ml_collections.ConfigDict(
            {"generator": name, "weights": "", "checkpoint": "", "modality": ""})
    c.batch_size = 16
    c.overwrite = False
    return c
