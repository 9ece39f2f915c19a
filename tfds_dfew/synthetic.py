"""Synthetic DFEW-layout generator: drawn face clips, split CSVs, vote annotation and OpenPose JSON, no download.

Writes a tree laid out exactly like the official DFEW release (see DFEW.md):

    DIR/Clip/clip_224x224/<id>/<id>_<k>.jpg        variable length (11..60 frames), k = 00001..
    DIR/Clip/clip_224x224_16f/<id>/<id>_<k>.jpg    the same clip resampled to 16 frames
    DIR/EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv   (video_name,label)
    DIR/Annotation/annotation.xlsx     one row per clip id: 1happy..7fear (votes), order, label
    DIR/OpenPose/<id>/<id>_<000000000000..>_keypoints.json               one per frame
    DIR/Clip/original/<id>.mp4         the clip's "original video": its clip_224x224 frames at
                                       25 fps (tree frame size, MPEG-4) + a mono AAC sound track
                                       of T / 25 s; ~10% of the clips have no sound track

Every clip with frames gets an original video whose sound is speech-like, with class-dependent
prosody (pitch level, range and contour, energy, syllable rate; tfds_dfew/synthetic_audio.py
gives the design): in the hard scenario it separates the pairs the face confuses (angry /
disgust, surprise / fear) and is clearly imperfect on its own. The sound of clip k is drawn from
`clip_rng(seed, k, 4)` (a multi-labelled clip's from its blend), so adding it changes no other
file; the clips without a sound track (`silent_clips`) are chosen from the seed alone. The
originals cost ~30 ms of CPU per clip (sound 9 ms, mp4 with AAC 22 ms): a 200-clip hard tree
took 8-9 s of CPU without them and 14-15 s with them; `--no_audio` skips them.

The annotation has the released workbook's columns: the votes of 10 annotators per class
(official label order), the clip number (`order`, unpadded) and the single label (1..7; 0 for a
multi-labelled clip). A single-labelled clip has 7..10 votes for its class and the rest scattered
over the others; a multi-labelled clip's votes follow its blend weights (at most 6 per class) and
its label is 0. Votes are drawn from `clip_rng(seed, clip, 2)`, so they never change the frames.

Each clip is a procedurally drawn face whose expression (mouth, brows, eyes, cheek folds, brow
furrow, nose wrinkle) follows its class with an onset -> apex -> partial offset time course;
everything else (face position, head motion, lighting, skin tone, hair, background, noise,
blinks, talking) is drawn from the seed independently of the class, so a frame at intensity 0
carries no class information. Every clip has its own `np.random.Generator` seeded from
(seed, clip number): the tree is byte-identical for the same arguments and generation can run
in parallel in any order.

Scenarios. Everything above is the `easy` scenario (the default): the face alone nearly saturates
(98-99% UAR), so it shows that every stage works but cannot tell a working fusion from one that
ignores a modality. The `hard` scenario (tfds_dfew/synthetic_hard.py, with the body and hands of
tfds_dfew/synthetic_body.py) is built so that face and pose complement each other: surprise/fear
and angry/disgust share their face and differ in body and hand gestures that only the OpenPose
output carries, happy/sad/neutral are clear in the face only; DFEW's class skew (with a floor
on Disgust), weak expressions, 4% label noise, off-frontal heads, occluders, missing keypoints
and DFEW's share of multi-labelled clips; 1,000 labelled clips at 112 px by default. Its module
docstring gives the design. The easy scenario's output does not change with this option.

Python API: `generate`, `plan`, `scenario_defaults`, `draw_clip`, `openpose_frames`,
`write_split_csvs`, `annotation_votes`, `write_annotation`, `resample_indices`, `clip_rng`,
`silent_clips`.
Class order is the project's (index 0..6: happy, sad, neutral, angry, surprise, disgust, fear);
CSVs hold the official labels 1..7 (index + 1).
CLI: `python -m tfds_dfew.synthetic --out DIR [--scenario easy|hard] [--clips N] [--seed S]
[--frame_size PX] [--no_audio | --no_audio_frac F] ...` (options left out take the scenario's
defaults: easy 600 clips at 224 px).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import io
import json
import multiprocessing
import os
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import openpyxl
from openpyxl.writer.excel import ExcelWriter
from PIL import Image

# Project class order (index 0..6); the official CSV label is index + 1.

from tfds_dfew import synthetic_audio, synthetic_draw, synthetic_hard
from tfds_dfew.synthetic_openpose import openpose_frames  # noqa: F401  (this module's API)
from tfds_dfew.synthetic_draw import (  # noqa: F401  (re-exported: this module's API)
    CLASS_NAMES,
    NUM_CLASSES,
    DEFAULT_CLASS_PROBS,
    _EXPRESSIONS,
    _class_weights,
    clip_rng,
    draw_clip,
)

CLIP_DIR = "Clip"
VARIABLE_DIR = "clip_224x224"
FIXED_DIR = "clip_224x224_16f"
SPLIT_DIR = "EmoLabel_DataSplit"
TRAIN_DIR = "train(single-labeled)"
TEST_DIR = "test(single-labeled)"
OPENPOSE_DIR = "OpenPose"
ORIGINAL_DIR = "original"
ORIGINAL_FPS = 25
AUDIO_STREAM = 4  # clip_rng stream of a clip's sound
ANNOTATION_DIR = "Annotation"
ANNOTATION_FILE = "annotation.xlsx"
ANNOTATION_HEADER = ("1happy", "2sad", "3neutral", "4angry", "5surprise", "6disgust", "7fear", "order", "label")
NUM_ANNOTATORS = 10
NUM_FOLDS = 5
NUM_FRAMES_16F = 16


def resample_indices(num_frames: int, num_out: int = NUM_FRAMES_16F) -> np.ndarray:
    """Uniformly spaced frame indices int64[num_out] over [0, num_frames), first and last kept.

    Clips shorter than num_out repeat frames (numpy.linspace, rounded).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    positions = np.linspace(0.0, num_frames - 1, num_out)
    return np.clip(np.round(positions), 0, num_frames - 1).astype(np.int64)


# ----------------------------------------------------------------------------- split CSVs
def _csv_id(clip_id, pad_ids: bool) -> str:
    number = int(clip_id)
    return f"{number:05d}" if pad_ids else str(number)


def write_split_csvs(root: str | os.PathLike, folds: Mapping[int, Sequence[tuple[str, int]]],
                     pad_ids: bool = False) -> list[str]:
    """Writes EmoLabel_DataSplit/{train,test}(single-labeled)/set_<k>.csv under `root`.

    folds: fold k -> [(clip_id, official label 1..7), ...] = test set k; train set k is the
    union of the other folds. Rows are sorted by clip number; `video_name` is written without
    zero padding unless pad_ids. Returns the written paths.
    """
    seen = {}
    for k, rows in folds.items():
        for clip_id, label in rows:
            if not 1 <= int(label) <= NUM_CLASSES:
                raise ValueError(f"clip {clip_id} in fold {k}: label {label} is not an "
                                 "official DFEW label 1..7")
            if int(clip_id) in seen:
                raise ValueError(f"clip {clip_id} is listed in folds {seen[int(clip_id)]} and "
                                 f"{k}: test folds must be disjoint")
            seen[int(clip_id)] = k
    paths = []
    for k in sorted(folds):
        test = sorted(folds[k], key=lambda r: int(r[0]))
        train = sorted((r for j in folds if j != k for r in folds[j]), key=lambda r: int(r[0]))
        for sub, rows in ((TRAIN_DIR, train), (TEST_DIR, test)):
            directory = os.path.join(os.fspath(root), SPLIT_DIR, sub)
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"set_{k}.csv")
            with open(path, "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["video_name", "label"])
                for clip_id, label in rows:
                    writer.writerow([_csv_id(clip_id, pad_ids), int(label)])
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------- annotation
def annotation_votes(rng: np.random.Generator, label, num_annotators: int = NUM_ANNOTATORS) -> np.ndarray:
    """Vote counts int64[7] (project class order) of `num_annotators` annotators for one clip.

    label: class index 0..6 -> a clear majority (more than 60% of the votes, at least
    floor(0.6 n) + 1) for that class, the rest scattered over the other six classes; or float[7]
    blend weights (a multi-labelled clip) -> the largest-remainder rounding of n * weights.
    """
    if np.ndim(label) == 0:
        index = int(label)
        if not 0 <= index < NUM_CLASSES:
            raise ValueError(f"label must be a class index 0..6, got {label}")
        majority = int(rng.integers(int(0.6 * num_annotators) + 1, num_annotators + 1))
        others = np.delete(np.arange(NUM_CLASSES), index)
        votes = np.bincount(rng.choice(others, num_annotators - majority), minlength=NUM_CLASSES)
        votes[index] = majority
        return votes.astype(np.int64)
    return _largest_remainder(num_annotators, _class_weights(label)).astype(np.int64)


def _fixed_time_xlsx(book) -> bytes:
    """The workbook as .xlsx bytes that do not depend on the clock (fixed document and zip times)."""
    stamp = datetime.datetime(2020, 1, 1)
    book.properties.created = book.properties.modified = stamp
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(book, archive).write_data()
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def write_annotation(root: str | os.PathLike, rows: Mapping[str, tuple[Sequence[int], int]],
                     pad_ids: bool = False) -> str:
    """Writes Annotation/annotation.xlsx under `root`; returns its path.

    rows: clip id -> (7 vote counts in project class order, official label 1..7 or 0 for no
    single label). One sheet, header ANNOTATION_HEADER, rows sorted by clip number; `order` holds
    the clip number as an integer (or the zero-padded text when pad_ids). The bytes depend only
    on the rows.
    """
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(list(ANNOTATION_HEADER))
    for clip_id in sorted(rows, key=int):
        votes, label = rows[clip_id]
        votes = [int(v) for v in votes]
        if len(votes) != NUM_CLASSES or min(votes) < 0:
            raise ValueError(f"clip {clip_id}: votes must be 7 counts >= 0, got {votes}")
        if not 0 <= int(label) <= NUM_CLASSES:
            raise ValueError(f"clip {clip_id}: label {label} is not 0..7")
        number = int(clip_id)
        sheet.append(votes + [f"{number:05d}" if pad_ids else number, int(label)])
    directory = os.path.join(os.fspath(root), ANNOTATION_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ANNOTATION_FILE)
    with open(path, "wb") as fh:
        fh.write(_fixed_time_xlsx(book))
    return path


# ----------------------------------------------------------------------------- the tree
def _largest_remainder(total: int, probs: np.ndarray) -> np.ndarray:
    raw = probs * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _at_least_one(count: float, frac: float, num_clips: int) -> int:
    n = int(round(count))
    return max(n, 1) if (frac > 0 and num_clips >= 20) else n


def _plan(num_clips: int, seed: int, class_probs, missing_frac: float, short_frac: float,
          multi_frac: float, max_frames: int, missing_classes: Sequence[int] | None = None) -> dict:
    """Clip ids, roles, labels, folds and lengths: everything decided before drawing.

    missing_classes: official labels (1..7) the clips without a frame folder are taken from
    (default: any class).
    """
    rng = np.random.default_rng([seed, 0x5EED, 0])
    num_multi = int(round(multi_frac * num_clips))
    total = num_clips + num_multi
    numbers, n = [], 1
    while len(numbers) < total:
        numbers.append(n)
        n += 1 + (int(rng.integers(1, 4)) if rng.uniform() < 0.06 else 0)
    if numbers[-1] > 99999:
        raise ValueError(f"{total} clips do not fit 5-digit ids; use fewer clips")
    ids = [f"{k:05d}" for k in numbers]
    order = rng.permutation(total)
    multi = sorted(ids[i] for i in order[:num_multi])
    labelled = sorted(ids[i] for i in order[num_multi:])

    counts = _largest_remainder(num_clips, class_probs)
    labels_idx = rng.permutation(np.repeat(np.arange(NUM_CLASSES), counts))
    labels = {cid: int(lab) + 1 for cid, lab in zip(labelled, labels_idx)}
    # Stratified folds: clips sorted by class (shuffled within), dealt round-robin.
    by_class = []
    for c in range(1, NUM_CLASSES + 1):
        members = [cid for cid in labelled if labels[cid] == c]
        by_class += [members[i] for i in rng.permutation(len(members))]
    offset = int(rng.integers(NUM_FOLDS))
    folds = {cid: (i + offset) % NUM_FOLDS + 1 for i, cid in enumerate(by_class)}

    num_missing = min(num_clips, _at_least_one(missing_frac * num_clips, missing_frac, num_clips))
    if missing_classes is None:
        missing = sorted(labelled[i] for i in rng.permutation(num_clips)[:num_missing])
    else:
        pool = [cid for cid in labelled if labels[cid] in set(missing_classes)]
        missing = sorted(pool[i] for i in rng.permutation(len(pool))[:min(num_missing, len(pool))])
    drawn = sorted(set(ids) - set(missing))
    num_short = min(len(drawn), _at_least_one(short_frac * len(drawn), short_frac, num_clips))
    short = set(drawn[i] for i in rng.permutation(len(drawn))[:num_short])
    lengths = {}
    for cid in drawn:  # one draw of each kind per clip, whatever its role
        short_len = int(rng.integers(11, 16))
        long_len = NUM_FRAMES_16F + int(round((max_frames - NUM_FRAMES_16F) * rng.beta(1.2, 1.8)))
        lengths[cid] = short_len if cid in short else long_len
    blends = {}
    for cid in multi:
        a, b = rng.choice(NUM_CLASSES, 2, replace=False)
        w = np.zeros(NUM_CLASSES)
        w[a], w[b] = rng.uniform(0.4, 0.6), 0.0
        w[b] = 1.0 - w[a]
        blends[cid] = w
    return {"ids": ids, "labelled": labelled, "multi": multi, "labels": labels, "folds": folds,
            "missing": missing, "drawn": drawn, "short": sorted(short), "lengths": lengths,
            "blends": blends}


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_clip(task: tuple) -> int:
    """Draws one clip and writes its frame folders (+ OpenPose JSON). Returns frames written."""
    out_dir, clip_id, label, num_frames, seed, frame_size, openpose, quality, scenario, original = task
    number = int(clip_id)
    if scenario == "hard":
        frames, docs, _ = synthetic_hard.draw(seed, number, label, num_frames, frame_size, openpose)
    else:
        frames, face_kp, meta = draw_clip(clip_rng(seed, number, 0), label, num_frames, frame_size)
        docs = openpose_frames(clip_rng(seed, number, 1), face_kp, meta, frame_size) if openpose else None
    var_dir = os.path.join(out_dir, CLIP_DIR, VARIABLE_DIR, clip_id)
    fix_dir = os.path.join(out_dir, CLIP_DIR, FIXED_DIR, clip_id)
    os.makedirs(var_dir)
    os.makedirs(fix_dir)
    encoded = [_encode_jpeg(fr, quality) for fr in frames]
    for k, data in enumerate(encoded):
        with open(os.path.join(var_dir, f"{clip_id}_{k + 1:05d}.jpg"), "wb") as fh:
            fh.write(data)
    for k, index in enumerate(resample_indices(num_frames)):
        with open(os.path.join(fix_dir, f"{clip_id}_{k + 1:05d}.jpg"), "wb") as fh:
            fh.write(encoded[index])
    if docs is not None:
        pose_dir = os.path.join(out_dir, OPENPOSE_DIR, clip_id)
        os.makedirs(pose_dir)
        for k, doc in enumerate(docs):
            with open(os.path.join(pose_dir, f"{clip_id}_{k:012d}_keypoints.json"), "w") as fh:
                fh.write(json.dumps(doc, separators=(",", ":")))
    if original is not None:  # 'sound' or 'silent'
        sound = None
        if original == "sound":
            sound = synthetic_audio.speech(clip_rng(seed, number, AUDIO_STREAM), label,
                                           num_frames / ORIGINAL_FPS, scenario=scenario)
        orig_dir = os.path.join(out_dir, CLIP_DIR, ORIGINAL_DIR)
        os.makedirs(orig_dir, exist_ok=True)
        synthetic_audio.write_original(os.path.join(orig_dir, f"{clip_id}.mp4"), frames, sound,
                                       fps=ORIGINAL_FPS)
    return num_frames


def silent_clips(drawn: Sequence[str], seed: int, frac: float) -> list[str]:
    """The clips (of `drawn`, the ids with frames) whose original video has no sound track:
    round(frac * len(drawn)) of them (at least 1 when frac > 0 and 20+ clips), chosen from the
    seed alone, sorted."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"no_audio_frac must be in [0, 1], got {frac}")
    drawn = sorted(drawn, key=int)
    count = min(len(drawn), _at_least_one(frac * len(drawn), frac, len(drawn)))
    rng = np.random.default_rng([int(seed), 0x5EED, 2])
    return sorted(drawn[i] for i in rng.permutation(len(drawn))[:count])


_OWNED = (CLIP_DIR, SPLIT_DIR, OPENPOSE_DIR, ANNOTATION_DIR)


SCENARIOS = ("easy", "hard")
# The easy scenario's defaults (the hard scenario's are synthetic_hard.DEFAULTS).
EASY_DEFAULTS = {"num_clips": 600, "frame_size": 224, "multi_frac": 0.05, "missing_frac": 0.03,
                 "short_frac": 0.05, "max_frames": 60, "class_probs": DEFAULT_CLASS_PROBS,
                 "label_noise": 0.0}


def scenario_defaults(scenario: str) -> dict:
    """num_clips, frame_size, multi_frac, missing_frac, short_frac, max_frames, class_probs and
    label_noise of a scenario ('easy' or 'hard')."""
    if scenario == "easy":
        return dict(EASY_DEFAULTS)
    if scenario == "hard":
        return dict(synthetic_hard.DEFAULTS)
    raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")


def plan(num_clips: int | None = None, seed: int = 0, *, scenario: str = "easy", **overrides) -> dict:
    """Everything `generate` decides before drawing, without drawing (fast).

    Arguments as `generate` (num_clips, missing_frac, short_frac, multi_frac, class_probs,
    max_frames, label_noise; None = the scenario's default). Returns a dict: ids, labelled,
    multi, labels {id: official label 1..7}, folds {id: test fold}, missing, drawn, short,
    lengths {id: T}, blends {id: float[7]}, noisy {id: the official label the clip is drawn
    as, for the label-noise clips}, and 'settings' (the resolved arguments).
    """
    settings = scenario_defaults(scenario)
    unknown = set(overrides) - set(settings)
    if unknown:
        raise TypeError(f"plan() got unknown argument(s) {sorted(unknown)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if num_clips is not None:
        settings["num_clips"] = num_clips
    n = int(settings["num_clips"])
    if n < NUM_FOLDS:
        raise ValueError(f"num_clips must be >= {NUM_FOLDS} (one per test fold), got {n}")
    for name in ("missing_frac", "short_frac", "multi_frac", "label_noise"):
        if not 0.0 <= settings[name] < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {settings[name]}")
    if settings["max_frames"] < NUM_FRAMES_16F:
        raise ValueError(f"max_frames must be >= {NUM_FRAMES_16F}, got {settings['max_frames']}")
    probs = np.asarray(settings["class_probs"], np.float64)
    if probs.shape != (NUM_CLASSES,) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"class_probs must be 7 non-negative numbers in the order "
                         f"{', '.join(CLASS_NAMES)}; got {settings['class_probs']}")
    probs = probs / probs.sum()
    missing_classes = None
    if scenario == "hard":
        missing_classes = synthetic_hard.MISSING_CLASSES
    result = _plan(n, seed, probs, settings["missing_frac"], settings["short_frac"],
                   settings["multi_frac"], settings["max_frames"], missing_classes)
    result["noisy"] = _label_noise(result, seed, settings["label_noise"])
    result["settings"] = settings
    return result


def _label_noise(plan_: dict, seed: int, rate: float) -> dict:
    """round(rate * labelled) clips drawn as another class (uniform over the other six)."""
    if rate <= 0:
        return {}
    rng = np.random.default_rng([seed, 0x5EED, 1])
    labelled = plan_["labelled"]
    chosen = sorted(labelled[i] for i in rng.permutation(len(labelled))[:int(round(rate * len(labelled)))])
    noisy = {}
    for cid in chosen:
        others = [c for c in range(1, NUM_CLASSES + 1) if c != plan_["labels"][cid]]
        noisy[cid] = others[int(rng.integers(len(others)))]
    return noisy


def generate(out_dir: str | os.PathLike, num_clips: int | None = None, seed: int = 0,
             frame_size: int | None = None, *, scenario: str = "easy",
             missing_frac: float | None = None, short_frac: float | None = None,
             multi_frac: float | None = None, class_probs: Sequence[float] | None = None,
             label_noise: float | None = None, openpose: bool = True,
             max_frames: int | None = None, jpeg_quality: int = 90, overwrite: bool = False,
             workers: int | None = None, annotation: bool = True, audio: bool = True,
             no_audio_frac: float = 0.1) -> dict:
    """Writes a synthetic DFEW release tree under out_dir and returns its summary.

    Args:
      num_clips: single-labelled clips listed in the CSVs (including the ones without frames).
      scenario: 'easy' (the faces alone nearly saturate; module docstring) or 'hard' (face and
        pose complement each other, DFEW-like skew and noise; tfds_dfew/synthetic_hard.py).
        Every argument left None takes the scenario's default (`scenario_defaults`); easy:
        600 clips, 224 px, missing 0.03, short 0.05, multi 0.05, 16..60 frames, no label noise.
      missing_frac: fraction of those with no frame folder (at least 1 when num_clips >= 20).
      short_frac: fraction of clips with frame folders that have 11..15 frames.
      multi_frac: extra multi-labelled clips (frame folders, in no CSV), as a fraction of
        num_clips.
      class_probs: 7 class frequencies in project order (happy, sad, neutral, angry, surprise,
        disgust, fear); easy default DEFAULT_CLASS_PROBS. Counts are exact (largest remainder).
      label_noise: fraction of the single-labelled clips drawn as another class than their
        label (exact count, rounded).
      openpose: also write OpenPose/<id>/ JSON per frame.
      max_frames: longest variable-length clip (lengths 16..max_frames, skewed short).
      workers: processes drawing clips; default 2 for large jobs, 1 (in-process) otherwise.
      annotation: also write Annotation/annotation.xlsx (votes and single label of every id,
        the listed clips without frames included).
      audio: also write Clip/original/<id>.mp4 for every clip with frames (its frames at 25 fps
        and a speech-like sound track of T / 25 s whose prosody follows the class).
      no_audio_frac: share of those originals written without a sound track (video only; at
        least 1 when > 0 and 20+ clips), chosen from the seed (`silent_clips`).

    Clip k is drawn from `clip_rng(seed, k)`; the OpenPose JSON from `clip_rng(seed, k, 1)`; its
    annotation votes from `clip_rng(seed, k, 2)` (hard: its scenario parameters from stream 3);
    its original video's sound from stream 4.
    A non-empty out_dir is refused unless overwrite (which replaces only Clip/,
    EmoLabel_DataSplit/, OpenPose/ and Annotation/).

    Returns a dict: out_dir, scenario, seed, frame_size, num_labelled, ids (all, sorted), labels
    {id: official label 1..7}, folds {id: test fold 1..5}, fold_counts
    {k: {'train', 'test'}}, class_counts {name: n}, fold_class_counts {k: [7 counts]},
    fold_drawn_class_counts {k: [7 counts of test clips with frames]}, missing_ids, short_ids,
    multi_ids, noisy_ids {id: official label it is drawn as}, num_frames {id: T}, votes
    {id: [7 vote counts]} and annotation_labels {id: 1..7, or 0 for multi-labelled} (every id,
    also without annotation), annotation_path (None without annotation), original_ids (clips with
    an original video; [] without audio), silent_ids (those without a sound track),
    frames_written, seconds.
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    settings = scenario_defaults(scenario)
    if frame_size is None:
        frame_size = settings["frame_size"]
    the_plan = plan(num_clips, seed, scenario=scenario, missing_frac=missing_frac,
                    short_frac=short_frac, multi_frac=multi_frac, class_probs=class_probs,
                    max_frames=max_frames, label_noise=label_noise)
    silent = set(silent_clips(the_plan["drawn"], seed, no_audio_frac)) if audio else set()
    synthetic_draw.prepare_out_dir(out_dir, overwrite, _OWNED)

    folds = {k: [] for k in range(1, NUM_FOLDS + 1)}
    for cid in the_plan["labelled"]:
        folds[the_plan["folds"][cid]].append((cid, the_plan["labels"][cid]))
    write_split_csvs(out_dir, folds, pad_ids=False)
    votes, annotation_labels = {}, {}
    for cid in the_plan["ids"]:
        if cid in the_plan["blends"]:
            votes[cid] = annotation_votes(clip_rng(seed, cid, 2), the_plan["blends"][cid])
            annotation_labels[cid] = 0
        else:
            votes[cid] = annotation_votes(clip_rng(seed, cid, 2), the_plan["labels"][cid] - 1)
            annotation_labels[cid] = the_plan["labels"][cid]
    annotation_path = None
    if annotation:
        annotation_path = write_annotation(out_dir, {c: (votes[c], annotation_labels[c]) for c in the_plan["ids"]})

    tasks = []
    noisy = the_plan["noisy"]
    for cid in the_plan["drawn"]:
        if cid in the_plan["blends"]:
            label = the_plan["blends"][cid]
        else:
            label = noisy.get(cid, the_plan["labels"][cid]) - 1
        original = None if not audio else ("silent" if cid in silent else "sound")
        tasks.append((out_dir, cid, label, the_plan["lengths"][cid], int(seed), int(frame_size),
                      bool(openpose), int(jpeg_quality), scenario, original))
    total_frames = sum(t[3] for t in tasks)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if total_frames >= 2000 else 1
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_clip, tasks, chunksize=4))
    else:
        written = sum(_write_clip(t) for t in tasks)

    labels = the_plan["labels"]
    missing = set(the_plan["missing"])
    class_counts = {name: sum(1 for v in labels.values() if v == i + 1)
                    for i, name in enumerate(CLASS_NAMES)}
    fold_counts, fold_class_counts, fold_drawn = {}, {}, {}
    for k in range(1, NUM_FOLDS + 1):
        test = [cid for cid, _ in folds[k]]
        fold_counts[k] = {"train": len(labels) - len(test), "test": len(test)}
        fold_class_counts[k] = [sum(1 for cid in test if labels[cid] == c + 1)
                                for c in range(NUM_CLASSES)]
        fold_drawn[k] = [sum(1 for cid in test if labels[cid] == c + 1 and cid not in missing)
                         for c in range(NUM_CLASSES)]
    return {
        "out_dir": out_dir,
        "scenario": scenario,
        "seed": int(seed),
        "frame_size": int(frame_size),
        "num_labelled": len(the_plan["labelled"]),
        "ids": the_plan["ids"],
        "labels": dict(labels),
        "folds": dict(the_plan["folds"]),
        "fold_counts": fold_counts,
        "class_counts": class_counts,
        "fold_class_counts": fold_class_counts,
        "fold_drawn_class_counts": fold_drawn,
        "missing_ids": the_plan["missing"],
        "short_ids": the_plan["short"],
        "multi_ids": the_plan["multi"],
        "noisy_ids": dict(noisy),
        "num_frames": dict(the_plan["lengths"]),
        "votes": {cid: v.tolist() for cid, v in votes.items()},
        "annotation_labels": annotation_labels,
        "annotation_path": annotation_path,
        "original_ids": list(the_plan["drawn"]) if audio else [],
        "silent_ids": sorted(silent, key=int),
        "frames_written": int(written),
        "seconds": time.perf_counter() - start,
    }


def format_summary(summary: dict) -> str:
    """One screen of text describing a `generate` summary."""
    ids = summary["ids"]
    lines = [
        f"synthetic DFEW tree at {summary['out_dir']} ({summary.get('scenario', 'easy')} scenario, "
        f"seed {summary['seed']}, {summary['frame_size']} px)",
        f"  clips: {len(ids)} ids {ids[0]}..{ids[-1]}; {summary['num_labelled']} single-labelled "
        f"(in CSVs), {len(summary['multi_ids'])} multi-labelled (no CSV)",
        f"  no frame folder: {len(summary['missing_ids'])} "
        f"(first: {', '.join(summary['missing_ids'][:5]) or '-'})",
        f"  short clips (11..15 frames): {len(summary['short_ids'])}; frames written: "
        f"{summary['frames_written']} (+16 per clip in {FIXED_DIR})",
        "  class counts: " + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items()),
        f"  label noise: {len(summary.get('noisy_ids', {}))} clips drawn as another class",
        f"  annotation: {summary['annotation_path'] or 'not written'} ({NUM_ANNOTATORS} votes per clip)",
        _originals_line(summary),
        "  fold   train  test   test per class (" + " ".join(n[:3] for n in CLASS_NAMES) + ")",
    ]
    for k, c in summary["fold_counts"].items():
        per = " ".join(f"{v:3d}" for v in summary["fold_class_counts"][k])
        lines.append(f"  {k:4d} {c['train']:7d} {c['test']:5d}   {per}")
    lines.append(f"  took {summary['seconds']:.1f} s")
    return "\n".join(lines)


def _originals_line(summary: dict) -> str:
    originals, silent = summary.get("original_ids", []), summary.get("silent_ids", [])
    if not originals:
        return f"  original videos ({CLIP_DIR}/{ORIGINAL_DIR}): not written"
    return (f"  original videos ({CLIP_DIR}/{ORIGINAL_DIR}, {ORIGINAL_FPS} fps): {len(originals)}, "
            f"{len(originals) - len(silent)} with sound, {len(silent)} without")


# --dataset <name>: the synthetic maker of another release layout (its own options follow).
OTHER_LAYOUTS = {"mafw": "tfds_dfew.synthetic_mafw", "ferv39k": "tfds_dfew.synthetic_ferv39k"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--dataset", default="dfew", choices=("dfew", *OTHER_LAYOUTS))
    chosen, rest = chooser.parse_known_args(argv)
    if chosen.dataset != "dfew":  # another layout: its module parses the rest
        return importlib.import_module(OTHER_LAYOUTS[chosen.dataset]).main(rest)
    argv = rest
    parser = argparse.ArgumentParser(
        prog="python -m tfds_dfew.synthetic",
        description="Write a synthetic DFEW-layout tree (drawn faces, split CSVs, OpenPose "
                    "JSON) for the demo and tests. Options left out take the scenario's default.",
        epilog="example: python -m tfds_dfew.synthetic --scenario hard --out data/synthetic_dfew --seed 0; "
               "--dataset mafw or --dataset ferv39k (first) writes those releases' layouts instead, with their own "
               "options (python -m tfds_dfew.synthetic --dataset mafw --help)")
    parser.add_argument("--out", required=True, help="output directory (empty or new)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="easy",
                        help="easy: faces alone nearly saturate (600 clips, 224 px); hard: face and "
                             "pose complement each other, DFEW-like class skew, weak expressions, "
                             "label noise, occlusion, unlabelled clips (1000 clips, 112 px)")
    parser.add_argument("--clips", type=int, default=None,
                        help="single-labelled clips listed in the split CSVs")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same tree")
    parser.add_argument("--frame_size", type=int, default=None, help="face frame size in px, e.g. 112")
    parser.add_argument("--missing_frac", type=float, default=None,
                        help="share of listed clips without a frame folder (DFEW has ~3%%), e.g. 0.03")
    parser.add_argument("--short_frac", type=float, default=None,
                        help="share of clips shorter than 16 frames, e.g. 0.05")
    parser.add_argument("--multi_frac", type=float, default=None,
                        help="multi-labelled (unlabelled) clips per listed clip, e.g. 0.35")
    parser.add_argument("--label_noise", type=float, default=None,
                        help="share of clips whose CSV label is another class than drawn, e.g. 0.04")
    parser.add_argument("--max_frames", type=int, default=None,
                        help="longest variable-length clip in clip_224x224/, e.g. 60")
    parser.add_argument("--class_probs", type=str, default=None,
                        help="7 comma-separated class frequencies (happy,sad,neutral,angry,"
                             "surprise,disgust,fear)")
    parser.add_argument("--no_openpose", action="store_true", help="skip OpenPose/ JSON")
    parser.add_argument("--no_annotation", action="store_true", help="skip Annotation/annotation.xlsx")
    parser.add_argument("--no_audio", action="store_true",
                        help=f"skip {CLIP_DIR}/{ORIGINAL_DIR}/ (the original videos with sound)")
    parser.add_argument("--no_audio_frac", type=float, default=0.1,
                        help="share of original videos written without a sound track, e.g. 0.1")
    parser.add_argument("--workers", type=int, default=None, help="drawing processes (default: by size), e.g. 2")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {', '.join(_OWNED)} in a non-empty --out")
    args = parser.parse_args(argv)
    probs = None
    if args.class_probs:
        probs = [float(v) for v in args.class_probs.split(",")]
    try:
        summary = generate(args.out, args.clips, args.seed, args.frame_size, scenario=args.scenario,
                           missing_frac=args.missing_frac, short_frac=args.short_frac,
                           multi_frac=args.multi_frac, class_probs=probs,
                           label_noise=args.label_noise, openpose=not args.no_openpose,
                           max_frames=args.max_frames, overwrite=args.overwrite,
                           workers=args.workers, annotation=not args.no_annotation,
                           audio=not args.no_audio, no_audio_frac=args.no_audio_frac)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
