"""Feature extraction setups: which generators turn a source dataset into cached features.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 --config.generators.face_resnet18.weights=PATH.pth
    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer+resnet18 ...
    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer+wav2vec2_base,source=frames112_pose_audio
    python -m fer_jax.extract --config configs/extract.py:omnivec,run=runs/omnivec
    python -m fer_jax.extract --config configs/extract.py:npy,path=~/my_embeddings,features=mini_xception_fer

Variant = generator names joined by '+', then optional key=value items:
  dataset=<name>         which dataset's build to read: dfew (default), mafw, ferv39k or a plug-in's;
                         the output is <dataset>_features/<setup> (e.g. mafw_features/mini_xception_fer).
  source=<dfew config>   frame generators read `dfew/<source>` (default frames112; e.g.
                         frames112_pose carries the OpenPose keypoints along; with an audio
                         generator the default is frames112_audio). Each frame generator becomes
                         the feature key `face_<generator>`, each audio generator (wav2vec2_base,
                         hubert_base, logmel) `audio_<generator>` (+ `audio_mask`). An `_audio`
                         source's sound is carried along either way.
  layer=<n>              speech encoders (wav2vec2_base, hubert_base): pool hidden state n
                         (0..12; default 12, the last) instead; the output name gets `_layer<n>`.
                         For frozen features, layers 6-9 carry more prosody than the top.
  run=<workdir>          `omnivec`: the pretraining run (python -m fer_jax.pretrain) to take the
                         network from. Feature key `omnivec`.
  path=<folder>          `npy`: one <clip id>.npy per clip (fer_jax.data.embeddings). Feature key
                         `external` (or key=<name>).
  features=<setup>       `omnivec`/`npy` read the cached-features dataset dfew_features/<setup>
                         (default mini_xception_fer for omnivec) and add their key next to its
                         features; the output is dfew_features/<setup>_<key>.
To extract a fine-tuned frame generator, set `--config.generators.face_<generator>.checkpoint=<run workdir>`
(and a distinct `--config.output.name`).
"""

import ml_collections

from configs import variants
from fer_jax.models import generators as generators_lib

OPTIONS = ("source", "run", "path", "features", "key", "weights", "layer", "dataset")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parsed = variants.parse(arg, file="extract.py", options=OPTIONS, default_modalities="mini_xception_fer")
    names, options = parsed.modalities, parsed.options
    dataset = options.get("dataset", "dfew")
    frame_free = [n for n in names if n in ("omnivec", "npy")]
    if frame_free and len(names) > 1:
        raise ValueError(f"configs/extract.py: extract {frame_free[0]} on its own (it adds to an existing features "
                         "dataset), not together with other generators.")
    c = ml_collections.ConfigDict()
    c.generators = ml_collections.ConfigDict()
    c.batch_size = 16
    c.overwrite = False
    c.max_audio_seconds = 30.0  # audio generators: a longer track keeps 30 s spread over its 16 slices
    if not frame_free:
        specs = {name: generators_lib.get(name) for name in names}
        default_source = "frames112_audio" if any(g.modality == "audio" for g in specs.values()) else "frames112"
        c.source = ml_collections.ConfigDict({"name": f"{dataset}/{options.get('source', default_source)}",
                                              "data_dir": "data/tfds"})
        layer = options.get("layer")
        takes_layer = [n for n, s in specs.items() if "layer" in s.options]
        if layer is not None and not takes_layer:
            raise ValueError(f"configs/extract.py: layer={layer} picks a speech encoder's hidden layer, but none of "
                             f"{names} takes one ({[n for n in generators_lib.names() if 'layer' in generators_lib.get(n).options]} do).")
        suffix = f"_layer{int(layer)}" if layer is not None else ""
        # keep_sound: carry an _audio source's raw sound along (about 32 kB per second of clip; what
        # `audio=conv` trains on). False leaves it out: cached audio features and predict do not need it.
        c.output = ml_collections.ConfigDict({"name": "_".join(names) + suffix, "data_dir": "data/tfds",
                                              "keep_sound": True})
        for name, spec in specs.items():
            entry = {"generator": name, "weights": options.get("weights", ""), "checkpoint": "", "modality": ""}
            if "layer" in spec.options:  # the hidden state to pool: 0..depth (default: the last)
                entry["layer"] = int(layer) if layer is not None else ml_collections.config_dict.placeholder(int)
            c.generators[f"{spec.key_prefix}{name}"] = ml_collections.ConfigDict(entry)
        return c
    kind = frame_free[0]
    features = options.get("features", "mini_xception_fer" if kind == "omnivec" else "")
    key = options.get("key", "omnivec" if kind == "omnivec" else "external")
    source = f"{dataset}_features/{features}" if features else f"{dataset}/{options.get('source', 'frames112')}"
    c.source = ml_collections.ConfigDict({"name": source, "data_dir": "data/tfds"})
    c.output = ml_collections.ConfigDict({"name": f"{features}_{key}" if features else key, "data_dir": "data/tfds",
                                          "keep_sound": True})
    if kind == "omnivec":
        c.generators[key] = ml_collections.ConfigDict({"generator": "omnivec", "checkpoint": options.get("run", "")})
    else:
        c.generators[key] = ml_collections.ConfigDict({"generator": "npy", "path": options.get("path", "")})
    return c
