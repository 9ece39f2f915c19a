"""Reading a MAFW release as users unpack it: split lists, label workbooks, captions, frame folders -> a Plan.

Plain Python + numpy + openpyxl (no TFDS, no JAX), so the same code plans a build, checks a user's
copy, and is tested on generated trees. The layout and its odd details are in MAFW.md::

    <root>/data/frames/<id>/*.png|*.jpg    one folder per clip, variable length (sorted by last integer)
    <root>/data/clips/<id>.mp4             the clip with its sound (the `_audio` configs)
    <root>/Labels/single-set.xlsx (or single_set.xlsx), multi-set.xlsx, annotation.xlsx, descriptive_text.xlsx
    <root>/Train & Test Set/{single,compound}/{no_caption,with_caption}/set_{1..5}/{train,test}.txt

What decides what (`read_release`, for the label view 'single' or 'compound'):
- labels and folds: the view's `no_caption` lists (`with_caption` where a copy lacks them). Each
  fold's test.txt is a stored split; the five must be disjoint; a train.txt, where present, must be
  every other clip of the view with the same labels. The lists win over the workbooks: a label that
  differs in a with_caption list or in single-set.xlsx / multi-set.xlsx is reported (an error
  under strict), and a clip a workbook labels but no list holds is left out and reported.
- captions (`caption_zh`, `caption_en`; '' = none, as for MAFW's neutral clips): the
  `with_caption` lists (GBK, TAB-separated; single then compound: the view's own checked like its
  labels, the other view's read for their captions alone), then descriptive_text.xlsx for the
  clips the lists lack. Where both hold a clip's caption and the texts differ (compared with
  runs of white space collapsed), `caption_priority` ('lists' by default) says which is stored,
  and the clash is reported.
- votes int32[11] (paper order; zeros for a clip without a row) and the clips without a label of
  the view (split `unlabelled`, label -1, fold 0, when they have frames): Labels/annotation.xlsx;
  without it, the frame folders that no list or workbook labels.
- a listed clip without a frame folder is reported and left out (an error under strict).

Text lists may carry a BOM, CRLF or LF line ends (mixed), stray spaces and trailing blank lines;
ids may drop their zeros or keep `.mp4`. The encoding is a BOM's, else UTF-8 when the bytes are
valid UTF-8 (so ASCII too), else GBK (decoded as its superset gb18030).
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
import os
import re

import numpy as np

from tfds_dfew import mafw_sheets
from tfds_dfew.errors import ReleaseError
from tfds_dfew.mafw_layout import (  # noqa: F401  (re-exported: mafw_release.CLASS_NAMES etc.)
    CLASS_NAMES,
    CLIPS_DIR,
    FRAMES_DIR,
    LABELS_DIR,
    NEUTRAL,
    NUM_CLASSES,
    NUM_FOLDS,
    RESTORE,
    SPLIT_DIR,
    UNLABELLED,
    UNLABELLED_FOLD,
    VIEWS,
    check_root,
    class_order,
    label_name,
    normalize_clip_id,
    split_list_path,
)
from tfds_dfew.plan import ClipEntry, Plan, describe_ids

log = logging.getLogger(__name__)


# -- Split lists -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Listed:
    """One line of a split list: clip id, canonical label name, captions ('' without) and where it stands."""

    clip_id: str
    label: str
    caption_zh: str
    caption_en: str
    where: str  # '<path>, line <n>'


def decode_text(path: str) -> tuple[str, str]:
    """(text, encoding) of a list: a BOM's encoding, else UTF-8 (ASCII included), else GBK (as gb18030)."""
    with open(path, "rb") as f:
        raw = f.read()
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                      (codecs.BOM_UTF16_BE, "utf-16-be")):
        if raw.startswith(bom):
            raw, tries = raw[len(bom):], (name,)
            break
    else:
        tries = ("utf-8", "gb18030")
    for encoding in tries:
        try:
            return raw.decode(encoding), ("ascii" if raw.isascii() else encoding.replace("gb18030", "gbk"))
        except UnicodeDecodeError as e:
            error = e
    line = raw[:error.start].count(b"\n") + 1
    raise ReleaseError(f"{path}, line {line}: bytes that are neither UTF-8 nor GBK text ({error.reason}). {RESTORE}")


def read_split_list(path: str, *, compound: bool = False, captions: bool = False) -> tuple[list[Listed], str]:
    """The clips of one split list, in file order, and the file's encoding.

    Lines are `<id>.mp4 <label>` (no_caption) or `<id>.mp4<TAB><label><TAB><Chinese><TAB><English>`
    (with_caption; GBK). Raises ReleaseError naming file and line for a missing or empty file, a
    malformed line, an unknown label or a clip listed twice.
    """
    if not os.path.isfile(path):
        raise ReleaseError(f"{path}: split list not found. Point --manual_dir at the unpacked MAFW release (the "
                           f"folder holding '{SPLIT_DIR}' and data/), or restore the file.")
    text, encoding = decode_text(path)
    out, first, names = [], {}, {}
    for line_no, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = line.replace("\ufeff", "").strip()
        if not line:
            continue
        where = f"{path}, line {line_no}"
        if "\t" in line:
            fields = [f.strip() for f in line.split("\t")]
            while fields and not fields[-1]:
                fields.pop()
        else:
            fields = line.split(None, 3) if captions else line.split()
        if len(fields) < 2 or (not captions and len(fields) > 2):
            shape = "<id>.mp4<TAB><label><TAB><Chinese caption><TAB><English caption>" if captions \
                else "<id>.mp4 <label>"
            raise ReleaseError(f"{where}: expected '{shape}', got {line[:80]!r}. {RESTORE}")
        clip_id = normalize_clip_id(fields[0], where=where)
        label = names.get(fields[1])
        if label is None:  # a label spelling not met before in this file
            label = names[fields[1]] = label_name(fields[1], compound=compound, where=f"{where} (clip {clip_id})")
        if clip_id in first:
            raise ReleaseError(f"{where}: clip {clip_id} is listed twice in this file (also on line "
                               f"{first[clip_id]}). {RESTORE}")
        first[clip_id] = line_no
        zh = fields[2] if len(fields) > 2 else ""
        out.append(Listed(clip_id, label, zh, " ".join(fields[3:]), where))
    if not out:
        raise ReleaseError(f"{path}: the split list holds no clip. {RESTORE}")
    return out, encoding


@dataclasses.dataclass
class ViewLists:
    """One folder of split lists (e.g. single/no_caption): every clip of the view with its test fold."""

    folder: str  # 'single/no_caption'
    clips: dict[str, Listed]  # clip id -> its line in its test list
    fold_of: dict[str, int]
    train_checked: list[int]  # folds whose train.txt was read and checked
    encodings: list[str]


def read_view(root: str, view: str, captions: str = "no_caption", *, check: bool = True) -> ViewLists:
    """Reads and checks the 5 folds of `<view>/<captions>`: disjoint test sets, train_k = all - test_k.

    check=False reads the test lists only, without the fold checks (a clip's first line wins): the
    other view's with_caption lists, read for their captions alone.
    """
    compound, with_text = view == "compound", captions == "with_caption"
    clips, fold_of, encodings = {}, {}, []
    for k in range(1, NUM_FOLDS + 1):
        rows, encoding = read_split_list(split_list_path(root, view, captions, k, "test"), compound=compound,
                                         captions=with_text)
        encodings.append(encoding)
        for r in rows:
            if r.clip_id in clips and not check:
                continue
            if r.clip_id in clips:
                raise ReleaseError(f"{r.where}: clip {r.clip_id} is also in the test set of fold {fold_of[r.clip_id]} "
                                   f"({clips[r.clip_id].where}); MAFW's five test sets are disjoint. {RESTORE}")
            clips[r.clip_id], fold_of[r.clip_id] = r, k
    checked = []
    for k in range(1, NUM_FOLDS + 1 if check else 1):
        path = split_list_path(root, view, captions, k, "train")
        if not os.path.exists(path):
            continue  # train_k is the other test sets; the file is only a cross-check
        rows, _ = read_split_list(path, compound=compound, captions=with_text)
        for r in rows:
            if fold_of.get(r.clip_id) == k:
                raise ReleaseError(f"{r.where}: clip {r.clip_id} is also in the test set of fold {k} "
                                   f"({clips[r.clip_id].where}): it would leak test data. {RESTORE}")
            if r.clip_id not in clips:
                raise ReleaseError(f"{r.where}: clip {r.clip_id} is in no test set; train set {k} must be the other "
                                   f"four test sets. {RESTORE}")
            if r.label != clips[r.clip_id].label:
                raise ReleaseError(f"{r.where}: clip {r.clip_id} is labelled {r.label} here but "
                                   f"{clips[r.clip_id].label} in {clips[r.clip_id].where}. {RESTORE}")
        lost = sorted(set(c for c, f in fold_of.items() if f != k) - {r.clip_id for r in rows})
        if lost:
            raise ReleaseError(f"{path}: train set {k} lacks {describe_ids(lost, 5)} of the other four test sets "
                               f"(train_k = all - test_k). {RESTORE}")
        checked.append(k)
    return ViewLists(f"{view}/{captions}", clips, fold_of, checked, sorted(set(encodings)))


def _lists_exist(root: str, view: str, captions: str) -> bool:
    return os.path.isfile(split_list_path(root, view, captions, 1, "test"))


def compound_class_names(root: str) -> tuple[str, ...]:
    """The compound view's classes: the 11 singles in paper order, then every compound its test lists name,
    sorted by paper-order index tuples (43 in MAFW)."""
    captions = "no_caption" if _lists_exist(root, "compound", "no_caption") else "with_caption"
    found = set(CLASS_NAMES)
    for k in range(1, NUM_FOLDS + 1):
        rows, _ = read_split_list(split_list_path(root, "compound", captions, k, "test"), compound=True,
                                  captions=captions == "with_caption")
        found.update(r.label for r in rows)
    return tuple(sorted(found, key=class_order))


# -- The release ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MafwRelease:
    """What a build of one label view stores and what reading the release found."""

    root: str
    view: str
    class_names: tuple[str, ...]
    clips: list[ClipEntry]  # listed, with frames; fields votes, caption_en, caption_zh
    missing: list[str]  # listed without a frame folder (left out)
    unlabelled: list[ClipEntry]  # label -1, fold 0, with frames
    unlabelled_missing: list[str] = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)  # JSON-able findings (+ 'report' lines)

    def by_fold(self, k: int) -> list[ClipEntry]:
        return [c for c in self.clips if c.fold == k]

    def plan(self) -> Plan:
        splits = {f"fold{k}": self.by_fold(k) for k in range(1, NUM_FOLDS + 1)}
        if self.unlabelled:
            splits["unlabelled"] = list(self.unlabelled)
        return Plan(splits=splits, metadata=dict(self.metadata), missing=list(self.missing))


def read_release(root: str, view: str = "single", *, strict: bool = False,
                 caption_priority: str = "lists") -> MafwRelease:
    """Reads the release under `root` for the label view 'single' (11 classes) or 'compound' (43).

    caption_priority: 'lists' (the with_caption lists win over descriptive_text.xlsx where both hold a
    clip's caption and differ) or 'spreadsheet'. strict: listed clips without frames, and labels that
    differ between the lists and the workbooks, stop with a ReleaseError instead of being reported.
    """
    if view not in VIEWS or caption_priority not in ("lists", "spreadsheet"):
        raise ValueError(f"view must be one of {VIEWS} and caption_priority 'lists' or 'spreadsheet'")
    check_root(root)
    report, meta = [], {"view": view}
    main, lists_read = _read_lists(root, view, report)
    names = CLASS_NAMES if view == "single" else tuple(
        sorted(set(CLASS_NAMES) | {r.label for r in main.clips.values()}, key=class_order))
    meta["split_lists"] = {vl.folder: {"clips": len(vl.clips), "encoding": "/".join(vl.encodings),
                                       "train_lists_checked": vl.train_checked} for vl in lists_read}
    sheet_labels = _check_labels(root, view, main, lists_read, strict, report, meta)
    annotation_path = mafw_sheets.find_sheet(root, "annotation")
    annotation = mafw_sheets.read_annotation(annotation_path) if annotation_path else {}
    captions = _captions(root, lists_read, caption_priority, report, meta)
    folders = frame_folders(root)
    zeros = np.zeros(NUM_CLASSES, np.int32)

    def entry(clip_id, label, fold):
        zh, en = captions.get(clip_id, ("", ""))
        votes = annotation[clip_id][0] if clip_id in annotation else zeros
        return ClipEntry(clip_id, label, fold, folders[clip_id], FRAMES_DIR,
                         fields={"votes": votes.copy(), "caption_en": en, "caption_zh": zh})

    index = {n: i for i, n in enumerate(names)}
    clips = [entry(c, index[main.clips[c].label], main.fold_of[c]) for c in sorted(main.clips) if c in folders]
    missing = sorted(c for c in main.clips if c not in folders)
    if missing:
        message = (f"{describe_ids(missing)} listed clips have no frame folder in {os.path.join(root, FRAMES_DIR)} "
                   f"(first listed at {main.clips[missing[0]].where})")
        if strict:
            raise ReleaseError(f"{message}. Restore their folders, or build without --strict to leave them out "
                               "(reported).")
        log.warning("%s; they are left out.", message)

    # The clips without a label of this view: in annotation.xlsx (else frame folders), in no list or workbook.
    labelled = set(main.clips) | set(sheet_labels)
    pool = sorted(set(annotation or folders) - labelled)
    unlabelled = [entry(c, UNLABELLED, UNLABELLED_FOLD) for c in pool if c in folders]
    where = f"in {LABELS_DIR}/annotation.xlsx" if annotation else "frame folders"
    meta.update(
        unlabelled_source=f"{where}, no {view} label" if unlabelled else "none",
        unlabelled_available=len(unlabelled), unlabelled_without_frames=[c for c in pool if c not in folders],
        unlabelled_invalid=[c for c in pool if c in folders and annotation.get(c, (0, 0))[1]],
        votes_source=f"{LABELS_DIR}/{os.path.basename(annotation_path)}" if annotation_path else "",
        unannotated_clips=[c.clip_id for c in clips if annotation and c.clip_id not in annotation])
    if meta["unlabelled_invalid"]:
        report.append("unlabelled clips flagged invalid in annotation.xlsx (kept): "
                      + describe_ids(meta["unlabelled_invalid"], 8))
    report.append(f"votes: {meta['votes_source']} (int32[11] per clip, paper order)" if annotation_path
                  else f"votes: none (no {LABELS_DIR}/annotation.xlsx; stored as zeros)")
    uncaptioned = [c for c in clips if not (c.fields["caption_en"] or c.fields["caption_zh"])]
    with_text, neutral = len(clips) - len(uncaptioned), sum(c.label == NEUTRAL for c in uncaptioned)  # 4 in both views
    meta.update(clips_with_captions=with_text, clips_without_captions=len(clips) - with_text)
    report.append(f"captions (caption_zh, caption_en): {with_text} of {len(clips)} labelled clips; "
                  f"{len(uncaptioned)} without" + (f" ({neutral} of them neutral)" if neutral else ""))
    meta["report"] = report
    return MafwRelease(root, view, tuple(names), clips, missing, unlabelled, meta["unlabelled_without_frames"], meta)


plan_release = read_release  # the name of the DFEW reader's same call (tfds_dfew.release.plan_release)


def frame_folders(root: str) -> dict[str, str]:
    """{5-digit clip id: its folder} of <root>/data/frames (folder names with or without zero padding)."""
    folders = {}
    with os.scandir(os.path.join(root, FRAMES_DIR)) as entries:
        for e in sorted(entries, key=lambda e: e.name):
            if e.name.isdigit() and 1 <= int(e.name) <= 99999 and e.is_dir():
                folders.setdefault(f"{int(e.name):05d}", e.path)
    return folders


def _read_lists(root: str, view: str, report: list) -> tuple[ViewLists, list[ViewLists]]:
    """The view's label lists (no_caption, else with_caption) and every list folder read (for captions): the
    view's own with_caption lists checked as its labels are, the other view's read for their captions alone."""
    kind = "no_caption" if _lists_exist(root, view, "no_caption") else "with_caption"
    main = read_view(root, view, kind)
    if kind == "with_caption":
        report.append(f"no {view}/no_caption lists: labels from {view}/with_caption (it lacks the neutral clips)")
    read = [main] + [read_view(root, v, "with_caption", check=v == view) for v in VIEWS
                     if (v, "with_caption") != (view, kind) and _lists_exist(root, v, "with_caption")]
    return main, read


def _check_labels(root, view, main: ViewLists, lists_read, strict: bool, report: list, meta: dict) -> dict:
    """Compares the labels of main with the view's other lists and its workbook; returns the workbook's labels."""
    conflicts = [f"{c}: {r.label} in {r.where}, {main.clips[c].label} in {main.clips[c].where}"
                 for vl in lists_read[1:] if vl.folder.startswith(view + "/")
                 for c, r in vl.clips.items() if c in main.clips and r.label != main.clips[c].label]
    path = mafw_sheets.find_sheet(root, "singleset" if view == "single" else "multiset")
    labels = {}
    if path:
        labels = ({c: CLASS_NAMES[i] for c, i in mafw_sheets.read_single_set(path).items()} if view == "single"
                  else mafw_sheets.read_multi_set(path))
        conflicts += [f"{c}: {main.clips[c].label} in {main.clips[c].where}, {label} in {os.path.basename(path)}"
                      for c, label in sorted(labels.items())
                      if c in main.clips and main.clips[c].label != label and (view == "single" or "_" in label)]
    if conflicts:
        message = f"{len(conflicts)} clips have another label than in {main.folder} (first: {conflicts[0]})"
        if strict:
            raise ReleaseError(f"{root}: {message}. Restore the original files, or build without --strict to keep "
                               f"the {main.folder} labels.")
        report.append(f"{message}; the {main.folder} label is kept")
    meta["list_label_conflicts"] = sorted({c.split(":", 1)[0] for c in conflicts})
    unlisted = sorted(set(labels) - set(main.clips))
    if unlisted:
        report.append(f"labelled in {os.path.basename(path)} but in no {main.folder} list (left out): "
                      + describe_ids(unlisted, 8))
    meta["unlisted_labelled_clips"] = unlisted
    return labels


def _captions(root: str, lists_read, priority: str, report: list, meta: dict) -> dict[str, tuple[str, str]]:
    """{clip id: (Chinese, English)} from the with_caption lists and descriptive_text.xlsx (module docstring)."""
    listed = {}
    for vl in lists_read:
        for c, r in vl.clips.items():
            if (r.caption_zh or r.caption_en) and c not in listed:
                listed[c] = (r.caption_zh, r.caption_en)
    path = mafw_sheets.find_sheet(root, "descriptivetext")
    sheet = {c: t for c, t in (mafw_sheets.read_descriptive_text(path) if path else {}).items() if any(t)}

    def same(a, b):
        return [" ".join(x.split()) for x in a] == [" ".join(x.split()) for x in b]

    clashes = sorted(c for c in set(listed) & set(sheet) if not same(listed[c], sheet[c]))
    if clashes:
        report.append(f"captions differ between the with_caption lists and {os.path.basename(path)} for "
                      f"{describe_ids(clashes, 8)}; stored: the {'lists' if priority == 'lists' else 'workbook'}'s")
    meta["caption_conflicts"] = clashes
    meta["captions_source"] = {"lists": [vl.folder for vl in lists_read if vl.folder.endswith("with_caption")],
                               "spreadsheet": os.path.basename(path) if path else "", "priority": priority}
    first, second = (listed, sheet) if priority == "lists" else (sheet, listed)
    return {**second, **first}
