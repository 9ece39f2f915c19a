"""Synthetic MAFW-layout generator: drawn face clips with sound, bilingual captions, split lists and label workbooks.

Writes a tree laid out like the MAFW release (MAFW.md), small enough for tests in seconds:

    DIR/data/frames/<id>/<n>.png            n = 1..T unpadded (so only a numeric sort orders them), T 8..40
    DIR/data/clips/<id>.mp4                 the frames at 25 fps + a speech-like AAC track; some have no
                                            audio stream (`silent_ids`)
    DIR/Train & Test Set/single/no_caption/set_k/{train,test}.txt     ASCII, CRLF: `<id>.mp4 <label>`
    DIR/Train & Test Set/single/with_caption/...   GBK, CRLF, TAB: id, label, Chinese, English (no neutral)
    DIR/Train & Test Set/compound/{no_caption,with_caption}/...       labels joined by '_' in paper order
    DIR/Labels/single-set.xlsx (or single_set.xlsx), multi-set.xlsx, annotation.xlsx, descriptive_text.xlsx

Clips: `num_clips` single-labelled clips (a few listed without a frame folder: `missing_ids`) and
`unlabelled` ones (in annotation.xlsx, no single label, a compound label, frames). Class counts
follow MAFW's skew (Table 3) mixed half and half with uniform, so every class has clips; folds
are stratified by class. Each MAFW class is drawn with `synthetic_draw.draw_clip` from 7-class
blend weights (`BLENDS`: contempt = angry + disgust, anxiety = fear + sad, helplessness = sad +
neutral, disappointment = sad + surprise; a compound class the mean of its parts), and its sound
(`synthetic_audio.speech`) from the same weights, so a model can learn them. A quarter of the
single-labelled, non-neutral clips carry a compound label (their class and another) in the
compound view. Captions (Chinese and English, from templates per class) go with every clip but the
neutral ones, in the with_caption lists and descriptive_text.xlsx alike.

Clip k's frames come from `clip_rng(seed, k, 0)`, its votes from stream 2, its sound from stream
4; the plan (ids, classes, folds, roles) from the seed alone: the tree is byte-identical for the
same arguments (workbooks are written with fixed times).

`official_count_tree` writes split lists with MAFW's official counts (no images drawn: one PNG
hard-linked into every frame folder) so a reader can be checked against them.

CLI: python -m tfds_dfew.synthetic_mafw --out DIR [--clips N] [--seed S] [--frame_size PX] [--no_audio]
"""

from __future__ import annotations

import argparse
import datetime
import io
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence

import numpy as np
import openpyxl
from openpyxl.writer.excel import ExcelWriter
from PIL import Image

from tfds_dfew import synthetic_audio
from tfds_dfew.mafw_layout import (CLASS_NAMES, CLIPS_DIR, FRAMES_DIR, LABELS_DIR, NUM_CLASSES, NUM_FOLDS,
                                   SPLIT_DIR, class_order, split_list_path)
from tfds_dfew import synthetic_draw
from tfds_dfew.synthetic_draw import CLASS_NAMES as DRAW_CLASSES, clip_rng, draw_clip

FPS = 25
AUDIO_STREAM = 4
NUM_ANNOTATORS = 11
# MAFW's single-label class counts (paper order, Table 3) and the official fold sizes (MAFW.md).
OFFICIAL_CLASS_COUNTS = (1390, 639, 625, 1242, 1138, 1470, 1072, 236, 916, 262, 182)
OFFICIAL_TEST_SIZES = (1839, 1837, 1833, 1832, 1831)
OFFICIAL_SET1_TEST = (278, 128, 125, 249, 228, 294, 215, 48, 184, 53, 37)
OFFICIAL_CAPTION_TEST_SIZES = (1611, 1609, 1605, 1605, 1604)  # with_caption = no_caption minus neutral
OFFICIAL_COMPOUND_TEST_SIZES = (1818, 1809, 1798, 1788, 1783)
OFFICIAL_NUM_CLIPS = 10045
# The 7 drawn classes each MAFW class is a blend of.
BLENDS = {"anger": {"angry": 1}, "disgust": {"disgust": 1}, "fear": {"fear": 1}, "happiness": {"happy": 1},
          "neutral": {"neutral": 1}, "sadness": {"sad": 1}, "surprise": {"surprise": 1},
          "contempt": {"angry": .5, "disgust": .5}, "anxiety": {"fear": .5, "sad": .5},
          "helplessness": {"sad": .5, "neutral": .5}, "disappointment": {"sad": .5, "surprise": .5}}
# 32 compound classes (made up: the real 32 are whatever the release's lists name).
COMPOUNDS = tuple("_".join(p) for p in (
    ("anger", "disgust"), ("anger", "sadness"), ("anger", "surprise"), ("anger", "contempt"), ("anger", "anxiety"),
    ("anger", "disappointment"), ("disgust", "sadness"), ("disgust", "surprise"), ("disgust", "contempt"),
    ("disgust", "disappointment"), ("fear", "sadness"), ("fear", "surprise"), ("fear", "anxiety"),
    ("fear", "helplessness"), ("happiness", "surprise"), ("happiness", "contempt"), ("happiness", "anxiety"),
    ("sadness", "surprise"), ("sadness", "contempt"), ("sadness", "anxiety"), ("sadness", "helplessness"),
    ("sadness", "disappointment"), ("surprise", "anxiety"), ("surprise", "disappointment"),
    ("contempt", "disappointment"), ("anxiety", "helplessness"), ("anxiety", "disappointment"),
    ("helplessness", "disappointment"), ("anger", "disgust", "contempt"), ("fear", "sadness", "anxiety"),
    ("sadness", "anxiety", "helplessness"), ("sadness", "helplessness", "disappointment")))
SUBJECTS = (("一个男人", "A man"), ("一个女人", "A woman"), ("一位老人", "An old man"), ("一个女孩", "A girl"),
            ("一个男孩", "A boy"), ("一位母亲", "A mother"))
ACTIONS = {"anger": ("愤怒地对着对面的人大喊", "shouts angrily at the person opposite"),
           "disgust": ("皱着眉头厌恶地看着眼前的东西", "frowns in disgust at something in front of them"),
           "fear": ("惊恐地向后退", "backs away in fear"), "happiness": ("开心地笑着", "laughs happily"),
           "neutral": ("平静地说话", "speaks calmly"), "sadness": ("低着头伤心地哭泣", "lowers the head and cries"),
           "surprise": ("睁大眼睛惊讶地张开嘴", "opens the eyes wide in surprise"),
           "contempt": ("轻蔑地撇了撇嘴", "curls the lip in contempt"),
           "anxiety": ("焦虑地来回踱步", "paces back and forth anxiously"),
           "helplessness": ("无助地摊开双手", "spreads the hands helplessly"),
           "disappointment": ("失望地叹了口气", "sighs in disappointment")}
_OWNED = ("data", LABELS_DIR, SPLIT_DIR)
_STAMP = datetime.datetime(2022, 10, 10)


def blend(label: str) -> np.ndarray:
    """float[7] drawing weights (synthetic_draw order) of a MAFW class or compound name."""
    parts = label.split("_")
    w = np.zeros(len(DRAW_CLASSES))
    for p in parts:
        for name, share in BLENDS[p].items():
            w[DRAW_CLASSES.index(name)] += share / len(parts)
    return w


def caption(rng: np.random.Generator, label: str) -> tuple[str, str]:
    """A (Chinese, English) caption of a clip showing `label` (a class or compound name)."""
    zh, en = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    acts = [ACTIONS[p] for p in label.split("_")]
    return zh + "，又".join(a[0] for a in acts) + "。", en + " " + ", then ".join(a[1] for a in acts) + "."


# -- Writing the files ---------------------------------------------------------------------------------------

def _write_lines(path: str, lines: Sequence[str], encoding: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write("".join(line + "\r\n" for line in lines).encode(encoding))


def write_split_lists(root: str, view: str, captions_kind: str, rows: dict, folds: dict,
                      captions: dict | None = None, *, train: bool = True) -> None:
    """Writes `<view>/<captions_kind>/set_k/{test,train}.txt`: rows {id: label name}, folds {id: 1..5};
    with_caption lists are GBK with TAB-separated captions ({id: (zh, en)}), no_caption ASCII; CRLF;
    lines sorted by class then id; train_k = every other clip (unless not train)."""
    order = sorted(rows, key=lambda c: (class_order(rows[c]), c))
    for k in range(1, NUM_FOLDS + 1):
        for part in ("test", "train") if train else ("test",):
            ids = [c for c in order if (folds[c] == k) == (part == "test")]
            if captions_kind == "with_caption":
                lines = [f"{c}.mp4\t{rows[c]}\t{captions[c][0]}\t{captions[c][1]}" for c in ids]
                _write_lines(split_list_path(root, view, captions_kind, k, part), lines, "gbk")
            else:
                _write_lines(split_list_path(root, view, captions_kind, k, part), [f"{c}.mp4 {rows[c]}" for c in ids],
                             "ascii")


def save_xlsx(path: str, rows: Sequence[Sequence], *, title: str | None = None) -> str:
    """Writes one sheet of rows (a title row first when given) as .xlsx whose bytes do not depend on the clock."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    if title:
        sheet.append([title])
    for row in rows:
        sheet.append(list(row))
    book.properties.created = book.properties.modified = _STAMP
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(book, archive).write_data()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(packed) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():  # the same members, stamped with a fixed time
            dst.writestr(zipfile.ZipInfo(member.filename, date_time=(1980, 1, 1, 0, 0, 0)), src.read(member),
                         compress_type=zipfile.ZIP_DEFLATED)
    return path


def _deal(items: Sequence[str], sizes: Sequence[int]) -> list[int]:
    """Folds (1-based) for items in order: each goes to the fold with the most room left (relative to its
    size), so a list sorted by class is stratified and fold k gets exactly sizes[k-1] items."""
    left = [int(s) for s in sizes]
    out = []
    for _ in items:
        k = max(range(len(left)), key=lambda j: (left[j] / max(sizes[j], 1), -j))
        left[k] -= 1
        out.append(k + 1)
    return out


def _largest_remainder(total: int, probs: np.ndarray) -> np.ndarray:
    raw = np.asarray(probs, np.float64) / np.sum(probs) * total
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


def _at_least_one(frac: float, n: int) -> int:
    count = int(round(frac * n))
    return max(count, 1) if frac > 0 and n >= 20 else count


def _write_clip(task: tuple) -> int:
    """Draws one clip and writes data/frames/<id>/<n>.png and data/clips/<id>.mp4. Returns its frames."""
    out_dir, clip_id, label, length, seed, size, sound = task
    weights = blend(label)
    frames, _, _ = draw_clip(clip_rng(seed, clip_id, 0), weights, length, size)
    folder = os.path.join(out_dir, FRAMES_DIR, clip_id)
    os.makedirs(folder)
    for n, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(folder, f"{n}.png"))
    if sound is not None:  # 'sound' or 'silent'
        track = (synthetic_audio.speech(clip_rng(seed, clip_id, AUDIO_STREAM), weights, length / FPS)
                 if sound == "sound" else None)
        os.makedirs(os.path.join(out_dir, CLIPS_DIR), exist_ok=True)
        synthetic_audio.write_original(os.path.join(out_dir, CLIPS_DIR, f"{clip_id}.mp4"), frames, track, fps=FPS)
    return length


def _link_frames(out_dir: str, lengths: dict) -> int:
    """data/frames/<id>/1..T.png as hard links of one grey 16x16 PNG (a copy where links are refused)."""
    frames = os.path.join(out_dir, FRAMES_DIR)
    os.makedirs(frames, exist_ok=True)
    first = os.path.join(frames, "grey.png")
    Image.new("RGB", (16, 16), (128, 128, 128)).save(first)
    for clip_id, length in lengths.items():
        os.makedirs(os.path.join(frames, clip_id))
        for n in range(1, length + 1):
            target = os.path.join(frames, clip_id, f"{n}.png")
            try:
                os.link(first, target)
            except OSError:  # a file system without hard links
                shutil.copyfile(first, target)
    os.remove(first)
    return sum(lengths.values())


# -- The tree ----------------------------------------------------------------------------------------------

def plan(num_clips: int = 80, seed: int = 0, *, unlabelled_frac: float = 0.1, missing_frac: float = 0.05,
         silent_frac: float = 0.1, compound_frac: float = 0.25, min_frames: int = 8, max_frames: int = 40) -> dict:
    """Everything decided before drawing (ids, roles, labels, folds, lengths, captions): a function of the seed."""
    if num_clips < 2 * NUM_CLASSES:
        raise ValueError(f"num_clips must be at least {2 * NUM_CLASSES} (every class in the lists), got {num_clips}")
    if not 1 <= min_frames <= max_frames:
        raise ValueError(f"frame counts must satisfy 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    rng = np.random.default_rng([int(seed), 0x3AF])
    num_unlabelled = _at_least_one(unlabelled_frac, num_clips)
    numbers, n = [], 19
    while len(numbers) < num_clips + num_unlabelled:
        numbers.append(n)
        n += 1 + (int(rng.integers(1, 40)) if rng.uniform() < 0.3 else 0)
    ids = [f"{k:05d}" for k in numbers]
    order = rng.permutation(len(ids))
    singles, unlabelled = sorted(ids[i] for i in order[:num_clips]), sorted(ids[i] for i in order[num_clips:])
    probs = 0.5 * np.asarray(OFFICIAL_CLASS_COUNTS) / sum(OFFICIAL_CLASS_COUNTS) + 0.5 / NUM_CLASSES
    drawn_classes = rng.permutation(np.repeat(np.arange(NUM_CLASSES), _largest_remainder(num_clips, probs)))
    labels = {c: CLASS_NAMES[k] for c, k in zip(singles, drawn_classes)}
    by_class = sorted(singles, key=lambda c: (CLASS_NAMES.index(labels[c]), rng.uniform()))
    folds = dict(zip(by_class, _deal(by_class, [len(by_class) // NUM_FOLDS + (k < len(by_class) % NUM_FOLDS)
                                                for k in range(NUM_FOLDS)])))
    compound = {c: COMPOUNDS[int(rng.integers(len(COMPOUNDS)))] for c in unlabelled}
    for c in singles:
        with_it = [x for x in COMPOUNDS if labels[c] in x.split("_")]
        compound[c] = with_it[int(rng.integers(len(with_it)))] if with_it and rng.uniform() < compound_frac \
            else labels[c]
    in_compound = sorted(compound, key=lambda c: (class_order(compound[c]), rng.uniform()))
    compound_folds = dict(zip(in_compound, _deal(in_compound, [len(in_compound) // NUM_FOLDS +
                                                               (k < len(in_compound) % NUM_FOLDS)
                                                               for k in range(NUM_FOLDS)])))
    missing = sorted(singles[i] for i in rng.permutation(num_clips)[:_at_least_one(missing_frac, num_clips)])
    drawn = sorted(set(ids) - set(missing))
    silent = sorted(drawn[i] for i in rng.permutation(len(drawn))[:_at_least_one(silent_frac, len(drawn))])
    lengths = {c: int(rng.integers(min_frames, max_frames + 1)) for c in ids}
    captions = {}
    for c in ids:  # one draw per clip, whatever its role
        text = caption(np.random.default_rng([int(seed), int(c), 7]), labels.get(c, compound[c]))
        if labels.get(c) != "neutral":
            captions[c] = text
    return {"ids": ids, "singles": singles, "unlabelled": unlabelled, "labels": labels, "folds": folds,
            "compound_labels": compound, "compound_folds": compound_folds, "missing": missing, "drawn": drawn,
            "silent": silent, "lengths": lengths, "captions": captions}


def _votes(seed: int, clip_id: str, label: str) -> list[int]:
    """11 annotators' votes (paper order): a clear majority for a single class, shared over a compound's parts."""
    rng = clip_rng(seed, clip_id, 2)
    parts = [CLASS_NAMES.index(p) for p in label.split("_")]
    votes = np.zeros(NUM_CLASSES, int)
    if len(parts) == 1:
        votes[parts[0]] = int(rng.integers(7, NUM_ANNOTATORS + 1))
        others = [k for k in range(NUM_CLASSES) if k != parts[0]]
        np.add.at(votes, rng.choice(others, NUM_ANNOTATORS - votes[parts[0]]), 1)
    else:
        np.add.at(votes, rng.choice(parts, NUM_ANNOTATORS), 1)
    return votes.tolist()


def generate(out_dir, num_clips: int = 80, seed: int = 0, frame_size: int = 64, *, audio: bool = True,
             workers: int = 1, overwrite: bool = False, **options) -> dict:
    """Writes a synthetic MAFW release under out_dir and returns its summary.

    Args:
      num_clips: single-labelled clips in the single lists (the ones without frames included).
      audio: write data/clips/<id>.mp4 for every clip with frames (some without an audio stream).
      workers: processes drawing clips (1: in this process).
      overwrite: replace data/, Labels/ and 'Train & Test Set/' of a non-empty out_dir.
      options: `plan`'s (unlabelled_frac 0.1, missing_frac 0.05, silent_frac 0.1, compound_frac 0.25,
        min_frames 8, max_frames 40) and the layout's: draw (True; False: no faces drawn and no
        videos written, each frame is one grey PNG hard-linked T times: a tree for reader tests in
        milliseconds), title_row (False: a title row above the headers of single-set, multi-set and
        annotation), single_set_name ('single-set.xlsx' or 'single_set.xlsx'), train_lists (True),
        with_caption (True), compound_lists (True), workbooks (True).

    Returns a dict: out_dir, seed, frame_size, ids (all, sorted), labels {id: single class name},
    folds {id: 1..5}, compound_labels / compound_folds (the compound view), compound_class_names,
    unlabelled_ids, missing_ids, silent_ids, captioned_ids, captions {id: (zh, en)}, num_frames
    {id: T}, votes {id: [11]}, class_counts {name: n}, fold_counts {k: {'train', 'test'}},
    fold_class_counts {k: [11 test clips per class]}, fold_drawn_class_counts (those with frames),
    frames_written, seconds.
    """
    start = time.perf_counter()
    layout = {"draw": True, "title_row": False, "single_set_name": "single-set.xlsx", "train_lists": True,
              "with_caption": True, "compound_lists": True, "workbooks": True}
    unknown = sorted(set(options) - set(layout) - {"unlabelled_frac", "missing_frac", "silent_frac",
                                                     "compound_frac", "min_frames", "max_frames"})
    if unknown:
        raise TypeError(f"generate() got unknown options {unknown}")
    layout.update({k: options.pop(k) for k in list(options) if k in layout})
    out_dir = os.fspath(out_dir)
    p = plan(num_clips, seed, **options)
    synthetic_draw.prepare_out_dir(out_dir, overwrite, _OWNED)
    labels, compound, captions = p["labels"], p["compound_labels"], p["captions"]
    write_split_lists(out_dir, "single", "no_caption", labels, p["folds"], train=layout["train_lists"])
    texts = {c: labels[c] for c in p["singles"] if c in captions}
    if layout["with_caption"]:
        write_split_lists(out_dir, "single", "with_caption", texts, p["folds"], captions, train=layout["train_lists"])
    if layout["compound_lists"]:
        write_split_lists(out_dir, "compound", "no_caption", compound, p["compound_folds"],
                          train=layout["train_lists"])
        if layout["with_caption"]:
            write_split_lists(out_dir, "compound", "with_caption", {c: compound[c] for c in compound if c in captions},
                              p["compound_folds"], captions, train=layout["train_lists"])
    votes = {c: _votes(seed, c, labels.get(c, compound[c])) for c in p["ids"]}
    if layout["workbooks"]:
        title = "MAFW {}" if layout["title_row"] else None
        labels_dir = os.path.join(out_dir, LABELS_DIR)
        save_xlsx(os.path.join(labels_dir, layout["single_set_name"]),
                  [("clip", "single_label")] + [(f"{c}.mp4", CLASS_NAMES.index(labels[c]) + 1) for c in p["singles"]],
                  title=title and title.format("single-label set"))
        multi = [c for c in p["ids"] if "_" in compound[c]]
        save_xlsx(os.path.join(labels_dir, "multi-set.xlsx"), [("clip", "multi_label")] + [
            (f"{c}.mp4", ",".join(str(CLASS_NAMES.index(x) + 1) for x in compound[c].split("_"))) for c in multi],
            title=title and title.format("multi-label set"))
        flagged = p["unlabelled"][:1] if len(p["unlabelled"]) >= 2 else []
        save_xlsx(os.path.join(labels_dir, "annotation.xlsx"), [("clip", "invalid") + CLASS_NAMES] + [
            (int(c), int(c in flagged), *votes[c]) for c in p["ids"]], title=title and title.format("annotation"))
        save_xlsx(os.path.join(labels_dir, "descriptive_text.xlsx"), [(c, *captions[c]) for c in sorted(captions)])
    audio = bool(audio and layout["draw"])
    silent = set(p["silent"])
    tasks = [(out_dir, c, labels.get(c, compound[c]), p["lengths"][c], int(seed), int(frame_size),
              None if not audio else ("silent" if c in silent else "sound")) for c in p["drawn"]]
    os.makedirs(os.path.join(out_dir, FRAMES_DIR), exist_ok=True)
    if not layout["draw"]:
        written = _link_frames(out_dir, {c: p["lengths"][c] for c in p["drawn"]})
    elif workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_clip, tasks, chunksize=4))
    else:
        written = sum(_write_clip(t) for t in tasks)
    missing = set(p["missing"])
    fold_counts, fold_class, fold_drawn = {}, {}, {}
    for k in range(1, NUM_FOLDS + 1):
        test = [c for c in p["singles"] if p["folds"][c] == k]
        fold_counts[k] = {"train": num_clips - len(test), "test": len(test)}
        fold_class[k] = [sum(labels[c] == name for c in test) for name in CLASS_NAMES]
        fold_drawn[k] = [sum(labels[c] == name and c not in missing for c in test) for name in CLASS_NAMES]
    return {
        "out_dir": out_dir, "seed": int(seed), "frame_size": int(frame_size), "ids": p["ids"], "labels": labels,
        "folds": p["folds"], "compound_labels": compound, "compound_folds": p["compound_folds"],
        "compound_class_names": sorted(set(CLASS_NAMES) | set(compound.values()), key=class_order),
        "unlabelled_ids": p["unlabelled"], "missing_ids": p["missing"], "silent_ids": p["silent"] if audio else [],
        "captioned_ids": sorted(captions), "captions": captions, "num_frames": {c: p["lengths"][c] for c in p["drawn"]},
        "votes": votes, "class_counts": {n: sum(v == n for v in labels.values()) for n in CLASS_NAMES},
        "fold_counts": fold_counts, "fold_class_counts": fold_class, "fold_drawn_class_counts": fold_drawn,
        "audio": bool(audio), "options": layout, "frames_written": int(written), "seconds": time.perf_counter() - start,
    }


def format_summary(summary: dict) -> str:
    """One screen of text describing a `generate` summary."""
    ids = summary["ids"]
    lines = [
        f"synthetic MAFW tree at {summary['out_dir']} (seed {summary['seed']}, {summary['frame_size']} px)",
        f"  clips: {len(ids)} ids {ids[0]}..{ids[-1]}; {len(summary['labels'])} single-labelled, "
        f"{len(summary['unlabelled_ids'])} without a single label (annotation.xlsx only)",
        f"  no frame folder: {len(summary['missing_ids'])} ({', '.join(summary['missing_ids'][:5]) or '-'})",
        f"  captions: {len(summary['captioned_ids'])} clips (none for the neutral ones)",
        f"  compound view: {len(summary['compound_labels'])} clips, {len(summary['compound_class_names'])} classes",
        (f"  sound ({CLIPS_DIR}): {len(summary['num_frames']) - len(summary['silent_ids'])} clips, "
         f"{len(summary['silent_ids'])} without an audio stream") if summary["audio"] else "  sound: not written",
        "  class counts: " + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items()),
        "  fold   train  test   test per class (" + " ".join(n[:3] for n in CLASS_NAMES) + ")",
    ]
    for k, c in summary["fold_counts"].items():
        lines.append(f"  {k:4d} {c['train']:7d} {c['test']:5d}   "
                     + " ".join(f"{v:3d}" for v in summary["fold_class_counts"][k]))
    lines.append(f"  {summary['frames_written']} frames written in {summary['seconds']:.1f} s")
    return "\n".join(lines)


# -- The official counts -------------------------------------------------------------------------------------

def official_fold_class_counts() -> np.ndarray:
    """int[5, 11] test clips per fold and class: set_1 as published, folds 2..5 dealt from the class totals so
    that each has its official size and its official with_caption size (its neutral clips fixed)."""
    counts = np.zeros((NUM_FOLDS, NUM_CLASSES), int)
    counts[0] = OFFICIAL_SET1_TEST
    neutral = CLASS_NAMES.index("neutral")
    counts[1:, neutral] = np.subtract(OFFICIAL_TEST_SIZES, OFFICIAL_CAPTION_TEST_SIZES)[1:]
    rest = [name for k, name in enumerate(CLASS_NAMES) if k != neutral
            for _ in range(OFFICIAL_CLASS_COUNTS[k] - OFFICIAL_SET1_TEST[k])]
    for name, k in zip(rest, _deal(rest, np.asarray(OFFICIAL_TEST_SIZES[1:]) - counts[1:, neutral])):
        counts[k, CLASS_NAMES.index(name)] += 1  # k is 1..4 here: folds 2..5
    return counts


def official_count_tree(out_dir, *, seed: int = 0, compound: bool = True) -> dict:
    """Writes single/{no,with}_caption (and compound/no_caption) lists with MAFW's official counts and one tiny
    frame folder per clip (10,045 ids in 00019..20098; one PNG hard-linked into each). No workbooks.

    Returns the expected counts: class_counts [11], test_sizes [5], set1_test [11], caption_test_sizes [5],
    compound_test_sizes [5], num_clips (frame folders), unlabelled (folders no single list holds).
    """
    out_dir = os.fspath(out_dir)
    rng = np.random.default_rng([int(seed), 0xC0])
    ids = [f"{k:05d}" for k in sorted({19, 20098} | set(rng.choice(np.arange(20, 20098), OFFICIAL_NUM_CLIPS - 2,
                                                                    replace=False).tolist()))]
    order = rng.permutation(len(ids))
    singles = [ids[i] for i in order[:sum(OFFICIAL_CLASS_COUNTS)]]
    others = [ids[i] for i in order[sum(OFFICIAL_CLASS_COUNTS):]]
    table = official_fold_class_counts()
    labels, folds = {}, {}
    cells = [(k + 1, name) for k in range(NUM_FOLDS) for j, name in enumerate(CLASS_NAMES) for _ in range(table[k, j])]
    for c, (k, name) in zip(singles, cells):
        labels[c], folds[c] = name, k
    write_split_lists(out_dir, "single", "no_caption", labels, folds)
    texts = {c: (f"字幕{c}", f"caption {c}") for c in labels if labels[c] != "neutral"}
    write_split_lists(out_dir, "single", "with_caption", {c: labels[c] for c in texts}, folds, texts)
    if compound:
        keep = [c for c in singles if labels[c] != "neutral"][:3185] + others  # 4,058 multi-labelled clips
        multi = {c: COMPOUNDS[i % len(COMPOUNDS)] for i, c in enumerate(keep)}
        rest = [c for c in singles if c not in multi][:sum(OFFICIAL_COMPOUND_TEST_SIZES) - len(multi)]
        rows = {**multi, **{c: labels[c] for c in rest}}
        ordered = sorted(rows, key=lambda c: (class_order(rows[c]), c))
        write_split_lists(out_dir, "compound", "no_caption", rows,
                          dict(zip(ordered, _deal(ordered, OFFICIAL_COMPOUND_TEST_SIZES))))
    _link_frames(out_dir, dict.fromkeys(ids, 1))
    return {"class_counts": list(OFFICIAL_CLASS_COUNTS), "test_sizes": list(OFFICIAL_TEST_SIZES),
            "set1_test": list(OFFICIAL_SET1_TEST), "caption_test_sizes": list(OFFICIAL_CAPTION_TEST_SIZES),
            "compound_test_sizes": list(OFFICIAL_COMPOUND_TEST_SIZES), "num_clips": len(ids),
            "unlabelled": len(others), "fold_class_counts": table.tolist()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfds_dfew.synthetic_mafw", description=__doc__.splitlines()[0],
        epilog="example: python -m tfds_dfew.synthetic_mafw --out data/synthetic_mafw --clips 200 --frame_size 112")
    parser.add_argument("--out", required=True, help="output directory (empty or new), e.g. data/synthetic_mafw")
    parser.add_argument("--clips", type=int, default=80, help="single-labelled clips in the split lists (default 80)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same tree")
    parser.add_argument("--frame_size", type=int, default=64, help="frame size in px (default 64), e.g. 112")
    parser.add_argument("--no_audio", action="store_true", help=f"skip {CLIPS_DIR}/<id>.mp4 (the clips with sound)")
    parser.add_argument("--workers", type=int, default=1, help="drawing processes (default 1), e.g. 2")
    parser.add_argument("--overwrite", action="store_true", help=f"replace {', '.join(_OWNED)} in a non-empty --out")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.clips, args.seed, args.frame_size, audio=not args.no_audio,
                           workers=args.workers, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
