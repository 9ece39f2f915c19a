"""Synthetic FERV39k-layout releases: drawn face-crop clips with sound and split lists, and full-count lists.

`generate` writes a small tree laid out like the unpacked FERV39k release (FERV39K.md)::

    DIR/4_setups/All_scenes/{train_All,test_All}.csv    no header, CRLF, `Scene/Emotion/NNNN Emotion`
    DIR/2_ClipsforFaceCrop/<Scene>/<Emotion>/<NNNN>/<n>.jpg     n = 1..T, T = 8..40 (nested=True
                                                       adds the zip's doubled 2_ClipsforFaceCrop/ level)
    DIR/0_7_LabelClips/<Scene>/<Emotion>/<NNNN>.mp4     the clip at 25 fps with a speech-like sound track
    DIR/3_ClipsforScenImages/README.txt                 a stub (scene_images=True), else absent

The numbers restart at 0000 in every Scene/Emotion folder (so they repeat across folders, and
train and test clips share a folder's numbering); a handful of scenes (`DEFAULT_SCENES`); some
clips shorter than 16 frames; a few listed clips without a frame folder (and without a video);
a few clips with frames but no video. A clip is drawn by `synthetic_draw.draw_clip` with the
DFEW-order index of its class (angry -> 3, ...), so a model learns the classes; its sound by
`synthetic_audio.speech` with the same index. Clip k (its place in the sorted id list) draws its
frames from `clip_rng(seed, k, 0)` and its sound from `clip_rng(seed, k, 4)`; everything else
comes from the seed: the tree is the same for the same arguments.

`write_official_lists` writes split lists with the official counts (31,088 train / 7,847 test,
the per-class counts of FERV39K.md, spread over the 22 scenes) and one single-frame folder per
clip (one JPEG hard-linked into each), so a test can check the reader's counts on a full-size
tree in seconds. The layout's names and the counts are written out here, not taken from the
reader (`tfds_dfew.ferv39k_release`), so that the tests check one against the other.

    python -m tfds_dfew.synthetic_ferv39k --out data/synthetic_ferv39k --clips 200 --nested
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from tfds_dfew import synthetic_audio, synthetic_draw

SETUP_DIR = os.path.join("4_setups", "All_scenes")
SPLIT_FILES = {"train": "train_All.csv", "test": "test_All.csv"}
FACE_DIR = "2_ClipsforFaceCrop"
VIDEO_DIR = "0_7_LabelClips"
SCENE_IMAGE_DIR = "3_ClipsforScenImages"
_OWNED = (FACE_DIR, VIDEO_DIR, SCENE_IMAGE_DIR, "4_setups")
EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
SCENES = ("Action", "Argue", "Business", "Conflict", "Contest", "Crime", "Crisis", "DailyLife", "ElegantArt",
          "Experiment", "History", "Interview", "Liveshow", "Medicine", "OfficialEvent", "ScholarReport", "School",
          "Social", "Speech", "Talkshow", "Terror", "War")
DEFAULT_SCENES = ("Action", "Crime", "DailyLife", "Interview", "Talkshow")
OFFICIAL_COUNTS = {"train": dict(zip(EMOTIONS, (5906, 1833, 1680, 5854, 7790, 5523, 2502))),
                   "test": dict(zip(EMOTIONS, (1487, 467, 431, 1473, 1958, 1393, 638)))}
# The official share of each class (both splits), the default class mix of `generate`.
OFFICIAL_PROBS = tuple((OFFICIAL_COUNTS["train"][e] + OFFICIAL_COUNTS["test"][e]) / 38935 for e in EMOTIONS)
FPS = 25
FRAME_STREAM, AUDIO_STREAM = 0, 4  # clip_rng streams (as tfds_dfew.synthetic uses them)
LINKS_PER_SOURCE = 60_000  # ext4 allows 65,000 links to one file
DEFAULTS = {"scenes": DEFAULT_SCENES, "test_frac": 0.2, "missing_frac": 0.05, "short_frac": 0.25,
            "no_video_frac": 0.1, "min_frames": 8, "max_frames": 40, "class_probs": OFFICIAL_PROBS,
            "scene_images": False, "jpeg_quality": 90}


def dfew_index(emotion: str) -> int:
    """The index `synthetic_draw.draw_clip` draws a FERV39k class with (DFEW order: happy, sad, ...)."""
    return synthetic_draw.CLASS_NAMES.index(emotion.lower())


def _largest_remainder(total: int, probs: Sequence[float], floor: int = 0) -> list[int]:
    """`total` split in proportion to probs (exact sum); every part >= floor when total allows."""
    p = np.asarray(probs, np.float64) / np.sum(probs)
    floor = floor if total >= floor * len(p) else 0
    raw = p * (total - floor * len(p))
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: total - floor * len(p) - counts.sum()]] += 1
    return [int(c) + floor for c in counts]


def _some(n: int, frac: float, at_least: int) -> int:
    """round(frac * n), at least `at_least` when frac > 0 (never more than n)."""
    return min(n, max(int(round(frac * n)), at_least if frac > 0 else 0))


def plan(num_clips: int = 80, seed: int = 0, **options) -> dict:
    """What `generate` writes, decided from the seed without drawing: ids, labels, splits, scenes, lengths.

    Returns a dict: ids (sorted 'Scene/Emotion/NNNN'), labels {id: Emotion}, splits {id: 'train'|'test'},
    scenes {id: scene}, num_frames {id: T} (clips with frames), missing (listed, no frames), short
    (T < 16), silent (frames but no video), settings.
    """
    settings = dict(DEFAULTS)
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; known: {sorted(settings)}")
    settings.update({k: v for k, v in options.items() if v is not None})
    n = int(num_clips)
    scenes = tuple(settings["scenes"])
    if n < 2:
        raise ValueError(f"num_clips must be >= 2 (one clip per split), got {n}")
    if not scenes or any(s not in SCENES for s in scenes):
        raise ValueError(f"scenes must be among FERV39k's 22 ({', '.join(SCENES)}), got {scenes}")
    if not 8 <= settings["min_frames"] <= 15 or settings["max_frames"] < 16:
        raise ValueError("min_frames must be 8..15 and max_frames >= 16")
    for name in ("test_frac", "missing_frac", "short_frac", "no_video_frac"):
        if not 0.0 <= settings[name] < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {settings[name]}")
    rng = np.random.default_rng([int(seed), 0xF39, 0])
    sizes = {"test": min(n - 1, max(1, int(round(settings["test_frac"] * n))))}
    sizes["train"] = n - sizes["test"]
    clips = []  # (split, emotion, scene)
    for split in ("train", "test"):
        counts = _largest_remainder(sizes[split], settings["class_probs"], floor=1)
        clips += [(split, e) for e, c in zip(EMOTIONS, counts) for _ in range(c)]
    scene_of = [scenes[i % len(scenes)] for i in rng.permutation(n)]  # every scene used when n allows
    order = rng.permutation(n)
    numbering: dict[str, int] = {}
    labels, splits, scene_ids = {}, {}, {}
    for i in order:
        split, emotion = clips[i]
        folder = f"{scene_of[i]}/{emotion}"
        number = numbering.get(folder, 0)
        numbering[folder] = number + 1
        clip_id = f"{folder}/{number:04d}"
        labels[clip_id], splits[clip_id], scene_ids[clip_id] = emotion, split, scene_of[i]
    ids = sorted(labels)
    # Listed clips without frames: never the last clip with frames of its split and class.
    left = {(s, e): sum(1 for c in ids if splits[c] == s and labels[c] == e) for s in sizes for e in EMOTIONS}
    missing = []
    for i in rng.permutation(n):
        if len(missing) >= _some(n, settings["missing_frac"], 1 if n >= 20 else 0):
            break
        key = (splits[ids[i]], labels[ids[i]])
        if left[key] > 1:
            left[key] -= 1
            missing.append(ids[i])
    drawn = [c for c in ids if c not in set(missing)]
    short, silent = set(), set()
    for split in ("train", "test"):
        mine = [c for c in drawn if splits[c] == split]
        short |= {mine[i] for i in rng.permutation(len(mine))[:_some(len(mine), settings["short_frac"], 1)]}
        silent |= {mine[i] for i in rng.permutation(len(mine))[:_some(len(mine), settings["no_video_frac"],
                                                                        1 if len(mine) >= 5 else 0)]}
    lengths = {}
    for c in drawn:
        if c in short:
            lengths[c] = int(rng.integers(settings["min_frames"], 16))
        else:  # skewed towards short clips, as the real ones (mean 28 of 8..47)
            lengths[c] = int(16 + np.floor((settings["max_frames"] - 15) * rng.uniform() ** 1.3))
    return {"ids": ids, "labels": labels, "splits": splits, "scenes": scene_ids, "num_frames": lengths,
            "missing": sorted(missing), "short": sorted(short), "silent": sorted(silent), "settings": settings}


def write_split_lists(out_dir: str, rows: dict[str, Sequence[tuple[str, str]]], *, eol: str = "\r\n") -> dict:
    """Writes `4_setups/All_scenes/{train_All,test_All}.csv` from {split: [(clip id, Emotion)]}; returns the paths."""
    folder = os.path.join(out_dir, SETUP_DIR)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split, name in SPLIT_FILES.items():
        paths[split] = os.path.join(folder, name)
        with open(paths[split], "w", encoding="utf-8", newline="") as f:
            f.write("".join(f"{clip_id} {emotion}{eol}" for clip_id, emotion in rows.get(split, ())))
    return paths


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_clip(task: tuple) -> int:
    """Draws one clip, writes its face crops (`<n>.jpg`, n = 1..T) and (video) its raw clip with sound."""
    face_root, video_root, clip_id, emotion, number, length, seed, frame_size, quality = task
    index = dfew_index(emotion)
    frames, _, _ = synthetic_draw.draw_clip(synthetic_draw.clip_rng(seed, number, FRAME_STREAM), index, length,
                                            frame_size)
    folder = os.path.join(face_root, *clip_id.split("/"))
    os.makedirs(folder)
    for k, frame in enumerate(frames, start=1):
        with open(os.path.join(folder, f"{k}.jpg"), "wb") as f:
            f.write(_jpeg(frame, quality))
    if video_root is not None:
        sound = synthetic_audio.speech(synthetic_draw.clip_rng(seed, number, AUDIO_STREAM), index, length / FPS)
        *parents, name = clip_id.split("/")
        os.makedirs(os.path.join(video_root, *parents), exist_ok=True)
        synthetic_audio.write_original(os.path.join(video_root, *parents, f"{name}.mp4"), frames, sound, fps=FPS)
    return length


def generate(out_dir: str | os.PathLike, num_clips: int = 80, seed: int = 0, frame_size: int = 64, *,
             audio: bool = True, workers: int = 1, overwrite: bool = False, nested: bool = False,
             **options) -> dict:
    """Writes a synthetic FERV39k release under out_dir (module docstring) and returns its summary.

    Args:
      num_clips: clips listed in the two split lists (those without frames included).
      frame_size: S of the S x S face crops (the real ones are 224).
      audio: write `0_7_LabelClips/.../<NNNN>.mp4` (frames at 25 fps + sound) for the drawn clips
        except the `silent` ones.
      workers: processes drawing clips (1: in this process).
      nested: put the scene folders under the zip's doubled `2_ClipsforFaceCrop/2_ClipsforFaceCrop/`.
      options: scenes (default DEFAULT_SCENES), test_frac 0.2, missing_frac 0.05 (>= 1 clip from 20
        clips on), short_frac 0.25 (>= 1 per split), no_video_frac 0.1, min_frames 8, max_frames 40,
        class_probs (7, Emotion order; default the official mix; each class >= 1 per split from 7
        clips a split on), scene_images (a `3_ClipsforScenImages/` stub), jpeg_quality 90.
    Returns a dict: out_dir, seed, frame_size, nested, ids, labels {id: Emotion}, splits {id: split},
    scenes {id: scene}, num_frames {id: T}, split_counts {split: n}, class_counts {split: {Emotion: n}}
    (listed), drawn_class_counts (with frames), scene_counts {split: {scene: n}} (with frames),
    missing_ids, short_ids, silent_ids (frames, no video), video_ids, split_paths, frames_written, seconds.
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    if not 32 <= int(frame_size) <= 1024:
        raise ValueError(f"frame_size must be 32..1024 px, got {frame_size}")
    the_plan = plan(num_clips, seed, **options)
    settings = the_plan["settings"]
    synthetic_draw.prepare_out_dir(out_dir, overwrite, _OWNED)
    ids, labels, splits = the_plan["ids"], the_plan["labels"], the_plan["splits"]
    paths = write_split_lists(out_dir, {s: [(c, labels[c]) for c in ids if splits[c] == s] for s in SPLIT_FILES})
    face_root = os.path.join(out_dir, FACE_DIR, *((FACE_DIR,) if nested else ()))
    video_root = os.path.join(out_dir, VIDEO_DIR)
    os.makedirs(face_root, exist_ok=True)
    if settings["scene_images"]:
        os.makedirs(os.path.join(out_dir, SCENE_IMAGE_DIR), exist_ok=True)
        with open(os.path.join(out_dir, SCENE_IMAGE_DIR, "README.txt"), "w") as f:
            f.write("A stub: the scene images of the release are not part of the synthetic tree.\n")
    silent = set(the_plan["silent"])
    tasks = [(face_root, video_root if audio and c not in silent else None, c, labels[c], k,
              the_plan["num_frames"][c], int(seed), int(frame_size), int(settings["jpeg_quality"]))
             for k, c in enumerate(ids) if c in the_plan["num_frames"]]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_clip, tasks, chunksize=4))
    else:
        written = sum(_write_clip(t) for t in tasks)
    drawn = [c for c in ids if c in the_plan["num_frames"]]

    def per_class(clips, split):
        return {e: sum(1 for c in clips if splits[c] == split and labels[c] == e) for e in EMOTIONS}

    return {
        "out_dir": out_dir, "seed": int(seed), "frame_size": int(frame_size), "nested": bool(nested),
        "ids": ids, "labels": dict(labels), "splits": dict(splits), "scenes": dict(the_plan["scenes"]),
        "num_frames": dict(the_plan["num_frames"]),
        "split_counts": {s: sum(1 for c in ids if splits[c] == s) for s in SPLIT_FILES},
        "class_counts": {s: per_class(ids, s) for s in SPLIT_FILES},
        "drawn_class_counts": {s: per_class(drawn, s) for s in SPLIT_FILES},
        "scene_counts": {s: {sc: sum(1 for c in drawn if splits[c] == s and the_plan["scenes"][c] == sc)
                             for sc in settings["scenes"]} for s in SPLIT_FILES},
        "missing_ids": the_plan["missing"], "short_ids": the_plan["short"],
        "silent_ids": sorted(silent) if audio else list(drawn),
        "video_ids": [c for c in drawn if c not in silent] if audio else [],
        "split_paths": paths, "frames_written": int(written), "seconds": time.perf_counter() - start,
    }


def write_official_lists(out_dir: str | os.PathLike, seed: int = 0, *, frames: bool = True, nested: bool = False,
                         overwrite: bool = False) -> dict:
    """Split lists with the official counts of FERV39K.md over the 22 scenes, and (frames) one 1-frame folder a clip.

    Each frame folder holds `1.jpg`, a hard link to one 16x16 JPEG (renewed every LINKS_PER_SOURCE
    links; copied where the file system has no hard links). Returns a dict: out_dir, split_counts,
    class_counts {split: {Emotion: n}}, scene_counts {split: {scene: n}}, ids {split: [clip ids]}, seconds.
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    synthetic_draw.prepare_out_dir(out_dir, overwrite, _OWNED)
    rng = np.random.default_rng([int(seed), 0xF39, 1])
    clips = [(split, emotion, SCENES[int(s)]) for split, counts in OFFICIAL_COUNTS.items()
             for emotion, n in counts.items() for s in rng.integers(len(SCENES), size=n)]
    numbering: dict[str, int] = {}
    rows: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLIT_FILES}
    scene_counts = {s: dict.fromkeys(SCENES, 0) for s in SPLIT_FILES}
    for i in rng.permutation(len(clips)):
        split, emotion, scene = clips[i]
        folder = f"{scene}/{emotion}"
        numbering[folder] = numbering.get(folder, -1) + 1
        rows[split].append((f"{folder}/{numbering[folder]:04d}", emotion))
        scene_counts[split][scene] += 1
    for split in rows:
        rows[split].sort()
    write_split_lists(out_dir, rows)
    if frames:
        _link_frames(out_dir, [c for r in rows.values() for c, _ in r], nested)
    return {"out_dir": out_dir, "split_counts": {s: len(r) for s, r in rows.items()},
            "class_counts": {s: dict(c) for s, c in OFFICIAL_COUNTS.items()}, "scene_counts": scene_counts,
            "ids": {s: [c for c, _ in r] for s, r in rows.items()}, "seconds": time.perf_counter() - start}


def _link_frames(out_dir: str, clip_ids: Sequence[str], nested: bool) -> None:
    face_root = os.path.join(out_dir, FACE_DIR, *((FACE_DIR,) if nested else ()))
    data = _jpeg(np.full((16, 16, 3), 128, np.uint8), 90)
    source, on_source, can_link, made = os.path.join(out_dir, ".frame_source.jpg"), LINKS_PER_SOURCE, True, set()
    for clip_id in clip_ids:
        folder = os.path.join(face_root, *clip_id.split("/"))
        parent = os.path.dirname(folder)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.mkdir(folder)
        target = os.path.join(folder, "1.jpg")
        if can_link and on_source >= LINKS_PER_SOURCE:  # a fresh source before ext4's 65,000-link limit
            if os.path.exists(source):
                os.remove(source)
            with open(source, "wb") as f:
                f.write(data)
            on_source = 0
        try:
            if not can_link:
                raise OSError("no hard links")
            os.link(source, target)
            on_source += 1
        except OSError:  # a file system without hard links: a copy of a few hundred bytes
            can_link = False
            with open(target, "wb") as f:
                f.write(data)
    if os.path.exists(source):
        os.remove(source)


def format_summary(summary: dict) -> str:
    """One screen of text describing a `generate` summary."""
    lines = [f"synthetic FERV39k tree at {summary['out_dir']} (seed {summary['seed']}, {summary['frame_size']} px"
             + (f", face crops under {FACE_DIR}/{FACE_DIR}/" if summary["nested"] else "") + ")"]
    lines.append("  split   clips  " + " ".join(f"{e[:7]:>8}" for e in EMOTIONS))
    for split in SPLIT_FILES:
        counts = summary["class_counts"][split]
        per = " ".join(f"{counts[e]:>8}" for e in EMOTIONS)
        lines.append(f"  {split:<6}{summary['split_counts'][split]:>7}  {per}")
    for split in SPLIT_FILES:
        scenes = ", ".join(f"{k} {v}" for k, v in summary["scene_counts"][split].items())
        lines.append(f"  {split} clips with frames per scene: {scenes}")
    missing = summary["missing_ids"]
    lines += [
        f"  listed without frames: {len(missing)} (first: {', '.join(missing[:3]) or '-'})",
        f"  shorter than 16 frames: {len(summary['short_ids'])}; frames written: {summary['frames_written']}",
        f"  videos with sound ({VIDEO_DIR}): {len(summary['video_ids'])}; clips with frames but no video: "
        f"{len(summary['silent_ids'])}",
        f"  took {summary['seconds']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfds_dfew.synthetic_ferv39k",
        description="Write a synthetic FERV39k-layout tree (drawn face crops, split lists, raw clips with sound) "
                    "for demos and tests.",
        epilog="example: python -m tfds_dfew.synthetic_ferv39k --out data/synthetic_ferv39k --clips 200 --nested")
    parser.add_argument("--out", required=True, help="output directory (empty or new)")
    parser.add_argument("--clips", type=int, default=80, help="clips listed in the split lists, e.g. 200")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same tree")
    parser.add_argument("--frame_size", type=int, default=64, help="face crop size in px, e.g. 112")
    parser.add_argument("--no_audio", action="store_true", help=f"skip {VIDEO_DIR}/ (the raw clips with sound)")
    parser.add_argument("--nested", action="store_true",
                        help=f"put the face crops under {FACE_DIR}/{FACE_DIR}/, as the release's zip unpacks")
    parser.add_argument("--workers", type=int, default=1, help="drawing processes, e.g. 2")
    parser.add_argument("--overwrite", action="store_true", help=f"replace {', '.join(_OWNED)} in a non-empty --out")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.clips, args.seed, args.frame_size, audio=not args.no_audio,
                           workers=args.workers, overwrite=args.overwrite, nested=args.nested)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
