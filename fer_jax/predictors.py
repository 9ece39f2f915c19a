"""The model side of predict: a `Predictor` turns face crops into window probabilities.

Two kinds: the packaged FER2013 mini-Xception (`--model mini_xception_fer`, no run needed) and a
training run's model at its newest checkpoint (`--workdir RUN`): a run on cached features first
runs the generators that made them (the features dataset's metadata names each generator and
its weights), then the fusion model; a run on frames gets the frames. Every input goes through
the training pipeline's Preprocessor, exactly as evaluation does.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from fer_jax import input_pipeline, runs, workdir as workdir_lib
from fer_jax.data import audio as audio_lib
from fer_jax.errors import ConfigError, DatasetNotFoundError, MissingError
from fer_jax.models import generators, mini_xception
from fer_jax.windows import SAMPLES_PER_WINDOW
from tfds_dfew import features as features_lib

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 112
MODELS = ("mini_xception_fer",)  # packaged models with an emotion head


@dataclasses.dataclass
class Predictor:
    """How one model turns face crops into window probabilities.

    frame_size: S, the size of the square face crops it reads (uint8[N, S, S, 3]).
    per_frame:  crops uint8[n, S, S, 3] -> {key: array[n, ...]} (features, probabilities or crops).
    per_window: {key: array[B, 16, ...]} gathered per window -> probabilities float[B, 7] (DFEW order);
                with needs_keypoints, the window's OpenPose points come as 'keypoints'; with
                needs_audio, the sound under the window as 'audio' (a list of B int16 arrays,
                16 kHz mono) and 'audio_length' int32[B] (0 = no sound).
    description: what the JSON says about the model.
    """

    frame_size: int
    per_frame: Callable[[np.ndarray], dict]
    per_window: Callable[[dict], np.ndarray]
    description: dict
    batch: int = 16
    needs_keypoints: bool = False  # per_window also reads 'keypoints' float32[B, 16, 137, 3] (OpenPose)
    needs_audio: bool = False  # per_window also reads the window's sound ('audio', 'audio_length')


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

    rows = batch * SAMPLES_PER_WINDOW

    def per_frame(crops):
        return padded_calls(lambda c: {"probabilities": probabilities(state, c["crops"])}, {"crops": crops}, rows)

    def per_window(gathered):
        p = np.asarray(gathered["probabilities"], np.float64).mean(axis=1)
        return p / p.sum(axis=1, keepdims=True)

    description = {"kind": "mini_xception_fer", "weights": str(getattr(report, "source", report)),
                   "frame_size": frame_size,
                   "how": "per-frame FER2013 softmax in DFEW class order, mean over the window's 16 frames"}
    return Predictor(frame_size, per_frame, per_window, description, batch)


def frame_size_of(dataset_name: str) -> int:
    """'dfew/frames112' or 'dfew/frames112_pose' -> 112; 'dfew' (its default config) -> 112."""
    m = re.fullmatch(r"dfew(?:/frames(\d+)(?:_pose)?(?:_audio)?)?(?::[\d.]+)?", dataset_name)
    if m is None:
        raise ConfigError(f"frames dataset {dataset_name!r}: expected dfew/frames<size>, e.g. dfew/frames112.")
    return int(m.group(1) or DEFAULT_FRAME_SIZE)


def generator_for(setup: dict, key: str, dataset: str):
    """(module, weights record) of the generator that made feature `key` of a features dataset."""
    made = dict(dict(setup.get("generators", {}) or {}).get(key, {}) or {})
    name, weights = made.get("generator"), str(made.get("weights", "packaged") or "packaged")
    if not name:
        raise ConfigError(f"{dataset}: its metadata does not say which generator made feature {key!r}; "
                          "re-extract it with python -m fer_jax.extract.")
    if generators.GENERATORS.get(name) is not None and generators.get(name).modality == "audio":
        raise ConfigError(f"feature {key!r} of {dataset} was made by the audio generator {name!r}; a frame "
                          "generator was expected here.")
    if name in ("omnivec", "npy"):
        raise ConfigError(f"feature {key!r} of {dataset} was made by {name!r}, which does not run on face frames, "
                          "so it cannot be computed for a video (predict computes face-generator features, OpenPose "
                          "keypoints read from --openpose_dir, and OmniVec features from those); predict with a "
                          "run without it (e.g. configs/fusion.py:face).")
    path = weights.split(":", 1)[1] if weights.startswith("checkpoint:") else weights
    if weights != "packaged" and os.sep in path and not os.path.exists(path):
        raise MissingError(f"{path}: the {name} weights that made {dataset}'s feature {key!r} are not there; put "
                           "them back at that path to predict with this run.")
    module, report = runs.generator_module(name, weights)
    log.info("%s: %s", key, str(report).splitlines()[0])
    return module, {"generator": name, "weights": weights}


def audio_generator_for(setup: dict, key: str, dataset: str):
    """(module, weights record) of the audio generator that made feature `key` of a features dataset."""
    made = dict(dict(setup.get("generators", {}) or {}).get(key, {}) or {})
    name, weights = made.get("generator"), str(made.get("weights", "packaged") or "packaged")
    if not name or name not in generators.GENERATORS or generators.get(name).modality != "audio":
        raise ConfigError(f"{dataset}: its metadata does not name the audio generator that made {key!r}; re-extract "
                          "it with python -m fer_jax.extract.")
    options = {k: made[k] for k in generators.get(name).options if made.get(k) is not None}  # e.g. the layer
    module, report = runs.generator_module(name, weights, **options)
    log.info("%s: %s", key, str(report).splitlines()[0])
    return module, {"generator": name, "weights": weights, **options}


def run_predictor(workdir: str, *, data_dir: str | None = None, batch: int = 16) -> Predictor:
    """The model of the training run in `workdir` at its newest checkpoint."""
    config = workdir_lib.load_classifier_config(workdir, data_dir)
    name = str(config.dataset.name)
    modalities = {m: spec for m, spec in config.modalities.items()}
    pre = input_pipeline.Preprocessor(config, train=False)  # exactly what evaluation does to a clip
    generator_modules, used, per_frame_shapes = {}, {}, {}
    audio_modules, per_window_dummy, max_seconds = {}, {}, float("inf")  # sound: per window, not per frame
    omnivec = None  # (module, its run's Preprocessor) for a frozen OmniVec feature
    if name.startswith(features_lib.NAME + "/"):
        store = os.path.expanduser(config.dataset.data_dir)
        builder = features_lib.open_builder(store, name.split("/", 1)[1])
        if builder is None:
            raise DatasetNotFoundError(
                f"the run in {workdir} trained on cached features {name!r}, which are not in {store}. Prediction "
                "reads their metadata to know which generators (and weights) made them: pass --data_dir with "
                "the folder that holds them.")
        input_pipeline.check_feature_setup(config, builder)
        setup = dict(builder.info.metadata.get("setup", {}) or {})
        made = dict(setup.get("generators", {}) or {})
        frame_size = frame_size_of(str(setup.get("frames_source", setup.get("source", "dfew/frames112"))))
        keys = set()
        for m, spec in modalities.items():
            keys |= set(dict(spec.inputs).values()) if spec.get("inputs") else {spec.input}
            record = dict(made.get(spec.input, {}) or {})
            used[m] = ({"input": spec.input, **{k: record[k] for k in ("generator", "weights") if k in record}}
                       if not spec.get("inputs") else
                       {"inputs": dict(spec.inputs), "tokenizer": spec.tokenizer, "checkpoint": spec.checkpoint})
        if dict(made.get("omnivec", {})).get("generator") == "omnivec" and "omnivec" in keys:
            run_dir = str(made["omnivec"]["weights"]).split(":", 1)[1]
            module, report = runs.omnivec_encoder(run_dir)
            log.info("omnivec: %s", report)
            omnivec = (module, input_pipeline.Preprocessor(workdir_lib.load_config(run_dir), train=False))
            per_frame_shapes["omnivec"] = (module.width,)
            keys = (keys - {"omnivec"}) | {s.input for s in workdir_lib.load_config(run_dir).modalities.values()}
        for key in sorted(keys):
            if key == "keypoints":
                per_frame_shapes[key] = (137, 3)
            elif key == "audio":  # the raw sound, read per window
                per_window_dummy.update(audio=np.zeros(audio_lib.SAMPLE_RATE, np.int16), audio_length=np.int32(0))
            elif key.startswith(input_pipeline.AUDIO_FEATURE_PREFIX):  # an audio generator's features, per window
                module, record = audio_generator_for(setup, key, name)
                audio_modules[key] = module
                max_seconds = min(max_seconds, float(dict(made.get(key, {})).get("max_seconds", 30.0)))
                per_window_dummy.update({key: np.zeros((SAMPLES_PER_WINDOW, generators.get(record["generator"])
                                                        .feature_dim), np.float32),
                                         "audio_mask": np.zeros(SAMPLES_PER_WINDOW, np.float32)})
            elif key != "omnivec":
                module, record = generator_for(setup, key, name)
                generator_modules[key] = module
                per_frame_shapes[key] = (generators.get(record["generator"]).feature_dim,)
        input_size = frame_size
    else:
        frame_size = frame_size_of(name)
        input_size = int(config.data.get("crop_size", 0) or 0) or frame_size
        if input_size > frame_size:
            raise ConfigError(f"config.data.crop_size={input_size} of {workdir} is larger than its frames ({frame_size}).")
        for m, spec in modalities.items():
            if spec.input not in ("frames", "keypoints", "audio"):
                raise ConfigError(f"modality {m!r} of {workdir} reads {spec.input!r}; only face frames, OpenPose "
                                  "keypoints and the sound can be computed for a video.")
            if spec.input == "audio":
                per_window_dummy.update(audio=np.zeros(audio_lib.SAMPLE_RATE, np.int16), audio_length=np.int32(0))
            used[m] = {"input": spec.input, "tokenizer": spec.tokenizer, "generator": spec.get("generator", "")}
        per_frame_shapes = {"frames": (frame_size, frame_size, 3)}
        if any(spec.input == "keypoints" for spec in modalities.values()):
            per_frame_shapes["keypoints"] = (137, 3)
    needs_keypoints = "keypoints" in per_frame_shapes
    needs_audio = "audio" in per_window_dummy or bool(audio_modules)
    for m, spec in modalities.items():
        if spec.tokenizer in ("generator", "omnivec"):
            spec.pretrained = False  # the checkpoint holds the fine-tuned weights
    # Input shapes: the training preprocessing of a stand-in clip with the right per-frame shapes.
    dummy = {k: np.zeros((SAMPLES_PER_WINDOW,) + tuple(v), np.uint8 if k == "frames" else np.float32)
             for k, v in per_frame_shapes.items()}
    input_shapes = input_pipeline.shapes_of(config, pre({**dummy, **per_window_dummy, "label": 0}))

    run = runs.restore(workdir, config=config, input_shapes=input_shapes,
                       sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    graphdef, params, model_state, step = run.graphdef, run.params, run.model_state, run.step
    names = tuple(modalities)

    @jax.jit
    def window_probabilities(params, model_state, batch_):
        model = nnx.merge(graphdef, params, model_state)
        inputs, masks = input_pipeline.model_inputs(batch_, names)
        logits = model(inputs, masks, train=False)
        return jax.nn.softmax(logits.astype(np.float32), axis=-1)

    if omnivec is not None:
        ov_graphdef, ov_state = nnx.split(omnivec[0])
        ov_names = omnivec[0].modalities

        @jax.jit
        def omnivec_features(ov_state, batch_):
            inputs, masks = input_pipeline.model_inputs(batch_, ov_names)
            return nnx.merge(ov_graphdef, ov_state)(inputs, masks, train=False)

    def stacked(examples):
        return {k: np.stack([e[k] for e in examples]) for k in examples[0] if k not in ("label", "mask")}

    if audio_modules:
        audio_graphdef, audio_state = nnx.split(audio_modules)

        @jax.jit
        def audio_features(audio_state, waveform, lengths):
            outs = {k: m(waveform, lengths, train=False) for k, m in nnx.merge(audio_graphdef, audio_state).items()}
            return {**{k: f for k, (f, _) in outs.items()}, "audio_mask": next(iter(outs.values()))[1]}

    def per_window(gathered):
        records = [{**{k: v[b] for k, v in gathered.items()}, "label": 0}
                   for b in range(len(next(iter(gathered.values()))))]
        if audio_modules:  # the audio generators' features of each window's sound, as extraction computed them
            waveform, lengths = audio_lib.fit_batch([r["audio"] for r in records], [r["audio_length"] for r in records],
                                                    max_seconds)
            sound = padded_calls(lambda b: audio_features(audio_state, b["w"], b["n"]), {"w": waveform, "n": lengths},
                                 batch)
            for i, r in enumerate(records):
                r.update({k: v[i] for k, v in sound.items()})
                r["audio_mask"] = np.asarray(r["audio_mask"], np.float32)
        if omnivec is not None:  # the frozen OmniVec feature, from the features it was pretrained on
            ov = padded_calls(lambda b: {"o": omnivec_features(ov_state, b)},
                               stacked([omnivec[1](r) for r in records]), batch)["o"]
            for r, o in zip(records, ov):
                r["omnivec"] = o
        out = padded_calls(lambda b: {"p": window_probabilities(params, model_state, b)},
                            stacked([pre(r) for r in records]), batch)
        return np.asarray(out["p"], np.float64)

    rows = batch * SAMPLES_PER_WINDOW
    if generator_modules:
        gen_graphdef, gen_state = nnx.split(generator_modules)

        @jax.jit
        def features(gen_state, crops):
            mods = nnx.merge(gen_graphdef, gen_state)
            clips = crops.reshape((batch, SAMPLES_PER_WINDOW) + crops.shape[1:])
            return {k: generators.clip_features(mod, clips).reshape((rows, -1)) for k, mod in mods.items()}

        def per_frame(crops):
            return padded_calls(lambda c: features(gen_state, c["crops"]), {"crops": crops}, rows)
    else:
        def per_frame(crops):  # whole crops: the Preprocessor takes the evaluation centre crop
            return {"frames": crops}

    description = {"kind": "run", "workdir": os.path.abspath(workdir), "step": int(step), "dataset": name,
                   "fold": int(config.dataset.get("fold", 0) or 0), "modalities": used, "frame_size": frame_size,
                   "input_size": input_size, "openpose": needs_keypoints, "audio": needs_audio}
    return Predictor(frame_size, per_frame, per_window, description, batch, needs_keypoints, needs_audio)


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
        if model in generators.GENERATORS:
            raise ConfigError(f"--model {model!r} is a feature generator without an emotion head; packaged models: "
                              f"{', '.join(MODELS)}. To predict with {model} features, train a run on them and pass "
                              "--workdir.")
        close = difflib.get_close_matches(str(model), MODELS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {model!r}{hint}; packaged models: {', '.join(MODELS)}, or pass --workdir "
                          "with a trained run.")
    return mini_xception_predictor(batch=batch)
