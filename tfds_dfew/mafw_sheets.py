"""Reading MAFW's label workbooks (Labels/*.xlsx): single and multi labels, annotator votes, captions.

    single-set.xlsx / single_set.xlsx   clip ..., single_label 1..11 (last column)  -> read_single_set
    multi-set.xlsx                      clip ..., multi_label like "1,2" (last)     -> read_multi_set
    annotation.xlsx                     clip, invalid, 11 vote columns              -> read_annotation
    descriptive_text.xlsx               clip, Chinese text, English text (no header) -> read_descriptive_text

Copies differ in spelling and in their first rows, so nothing is taken on trust: a file is found
whatever its '-' / '_' / case (`find_sheet`); the header is the first of the first rows that names a
known column (the clip column or two others, in English or Chinese, compared on letters only:
'1anger', 'Anger ', 'single_label'), so a title row above it is skipped; a sheet without such a
row has no header and its data start at the first row led by a clip id. Columns are found by name,
else by the position MAFW.md gives. Every error names the file, sheet and row.
"""

from __future__ import annotations

import os
import re

import numpy as np
import openpyxl

from tfds_dfew.errors import ReleaseError
from tfds_dfew.mafw_layout import (CLASS_NAMES, LABELS_DIR, NUM_CLASSES, RESTORE, is_clip_id, label_name,
                                   normalize_clip_id)

HEADER_ROWS = 10  # a workbook's header (or first data row) is among its first rows
ID_NAMES = ("clip", "clips", "clipid", "clipname", "video", "videoid", "videoname", "name", "id", "file",
            "filename", "视频", "视频名", "编号")
EMOTION_NAMES = (("anger", "angry", "愤怒", "生气"), ("disgust", "disgusted", "厌恶"),
                 ("fear", "fearful", "afraid", "恐惧", "害怕"), ("happiness", "happy", "joy", "高兴", "快乐", "开心"),
                 ("neutral", "中性", "平静"), ("sadness", "sad", "悲伤", "伤心"), ("surprise", "surprised", "惊讶"),
                 ("contempt", "contemptuous", "轻蔑", "蔑视"), ("anxiety", "anxious", "焦虑"),
                 ("helplessness", "helpless", "无助"), ("disappointment", "disappointed", "失望"))
# stem (the file name without '-', '_', spaces, case) -> {column role: header names}
SHEETS = {
    "singleset": {"label": ("singlelabel", "label", "emotion", "class", "单标签", "标签")},
    "multiset": {"label": ("multilabel", "multilabels", "label", "labels", "emotions", "多标签", "标签")},
    "annotation": {"invalid": ("invalid", "isinvalid", "无效"),
                   **{f"vote{k}": names for k, names in enumerate(EMOTION_NAMES)}},
    "descriptivetext": {"zh": ("chinese", "zh", "cn", "chinesetext", "chinesecaption", "中文", "中文描述"),
                        "en": ("english", "en", "englishtext", "englishcaption", "英文", "英文描述")},
}


def header_key(cell) -> str:
    """A header cell by its letters only, lower case ('1Anger ' -> 'anger', 'single_label' -> 'singlelabel')."""
    return "".join(ch for ch in str(cell).lower() if ch.isalpha()) if cell is not None else ""


def find_sheet(root: str, stem: str) -> str | None:
    """<root>/Labels/<stem>.xlsx whatever its spelling ('single-set', 'single_set', 'Single Set'); None if absent."""
    if not os.path.isdir(root):
        return None
    folder = next((os.path.join(root, n) for n in sorted(os.listdir(root))
                   if n.lower() == LABELS_DIR.lower() and os.path.isdir(os.path.join(root, n))), None)
    if folder is None:
        return None
    for name in sorted(os.listdir(folder)):
        base, ext = os.path.splitext(name)
        if re.sub(r"[-_ ]", "", base.lower()) == stem and ext.lower() in (".xlsx", ".xls"):
            if ext.lower() == ".xls":
                raise ReleaseError(f"{os.path.join(folder, name)}: an old-style .xls workbook; save it as .xlsx.")
            return os.path.join(folder, name)
    return None


def read_sheet(path: str, stem: str) -> list[tuple[str, dict]]:
    """The data rows of a label workbook as [(where, {role: cell})]: role 'id' plus the stem's (`SHEETS`).

    Reads the first sheet that holds rows. Positions without a header name (MAFW.md): the id first;
    single/multi label last; annotation: invalid second, then the 11 votes in paper order;
    descriptive text: Chinese second, English third.
    """
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zip, XML and its own errors for damaged files
        raise ReleaseError(f"{path}: cannot be read as an .xlsx workbook ({type(e).__name__}: {e}). "
                           f"{RESTORE}") from None
    try:
        for sheet in book.worksheets:
            sheet.reset_dimensions()  # a stale <dimension> tag would hide rows
            rows = [(n, r) for n, r in enumerate(sheet.iter_rows(values_only=True), start=1)
                    if any(c is not None and str(c).strip() for c in r)]
            if rows:
                return _table(path, sheet.title, rows, stem)
    finally:
        book.close()
    raise ReleaseError(f"{path}: the workbook holds no rows. {RESTORE}")


def _table(path: str, title: str, rows: list, stem: str) -> list[tuple[str, dict]]:
    where_sheet = f"{path}, sheet {title!r}"
    roles = {"id": ID_NAMES, **SHEETS[stem]}
    start, columns = None, {}
    for i, (_, row) in enumerate(rows[:HEADER_ROWS]):
        keys = [header_key(c) for c in row]
        found = {role: next((col for col, k in enumerate(keys) if k in names), None) for role, names in roles.items()}
        found = {role: col for role, col in found.items() if col is not None}
        if "id" in found or len(found) >= 2:
            start, columns = i + 1, found
            break
    if start is None:  # no header: the data start at the first row led by a clip id (rows above are titles)
        first = [next((c for c in row if c is not None and str(c).strip()), None) for _, row in rows[:HEADER_ROWS]]
        start = next((i for i, c in enumerate(first) if is_clip_id(c)), None)
        if start is None:
            raise ReleaseError(f"{where_sheet}: neither a header row nor a row led by a clip id in the first "
                               f"{HEADER_ROWS} rows. {RESTORE}")
    width = max(len(r) for _, r in rows)
    columns.setdefault("id", 0)
    if stem == "annotation":
        votes = [f"vote{k}" for k in range(NUM_CLASSES)]
        named = [v for v in votes if v in columns]
        if named and len(named) < NUM_CLASSES:
            lacking = [CLASS_NAMES[k] for k, v in enumerate(votes) if v not in columns]
            raise ReleaseError(f"{where_sheet}: the header names vote columns but none for {', '.join(lacking)}; "
                               f"expected clip, invalid and the 11 emotions ({', '.join(CLASS_NAMES)}). {RESTORE}")
        if not named:
            if width < 2 + NUM_CLASSES:
                raise ReleaseError(f"{where_sheet}: {width} columns; expected clip, invalid and 11 vote columns "
                                   f"({', '.join(CLASS_NAMES)}). {RESTORE}")
            columns.update({v: 2 + k for k, v in enumerate(votes)})
            columns.setdefault("invalid", 1)
    elif stem in ("singleset", "multiset"):
        columns.setdefault("label", width - 1)
    else:
        columns.setdefault("zh", 1)
        columns.setdefault("en", 2)
    out = []
    for row_no, row in rows[start:]:
        cells = {role: (row[col] if col < len(row) else None) for role, col in columns.items()}
        if cells["id"] is not None and str(cells["id"]).strip():
            out.append((f"{where_sheet}, row {row_no}", cells))
    return out


def _whole(value, *, where: str, what: str) -> int:
    """A whole number from a cell (int, integral float, or text such as '3')."""
    try:
        number = float(str(value).strip()) if value is not None and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not number.is_integer():
        raise ReleaseError(f"{where}: {what} is {value!r}, not a whole number. {RESTORE}")
    return int(number)


def _by_clip(rows: list, parse) -> dict:
    """{clip id: parse(cells, where, clip id)}; a clip on two rows is an error naming both."""
    out, first = {}, {}
    for where, cells in rows:
        clip_id = normalize_clip_id(cells["id"], where=where)
        if clip_id in out:
            raise ReleaseError(f"{where}: clip {clip_id} is on two rows (also {first[clip_id].rsplit(', ', 1)[-1]}). "
                               f"{RESTORE}")
        out[clip_id], first[clip_id] = parse(cells, where, clip_id), where
    return out


def read_single_set(path: str) -> dict[str, int]:
    """single-set.xlsx -> {clip id: class index 0..10} (the workbook writes 1..11, or a class name)."""
    def parse(cells, where, clip_id):
        value = cells["label"]
        if isinstance(value, str) and header_key(value) in CLASS_NAMES:
            return CLASS_NAMES.index(header_key(value))
        label = _whole(value, where=where, what=f"the single label of clip {clip_id}")
        if not 1 <= label <= NUM_CLASSES:
            raise ReleaseError(f"{where}: the single label of clip {clip_id} is {label}, outside 1..11. {RESTORE}")
        return label - 1
    return _by_clip(read_sheet(path, "singleset"), parse)


def read_multi_set(path: str) -> dict[str, str]:
    """multi-set.xlsx -> {clip id: compound class name} ('1,2' -> 'anger_disgust'; names also accepted)."""
    def parse(cells, where, clip_id):
        value = cells["label"]
        text = str(int(value) if isinstance(value, float) and value.is_integer() else value or "").strip()
        if re.search(r"[A-Za-z]", text):
            return label_name(text, compound=True, where=where)
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        if not numbers or not all(1 <= n <= NUM_CLASSES for n in numbers):
            raise ReleaseError(f"{where}: the multi label of clip {clip_id} is {text!r}; expected class numbers "
                               f"1..11 like '1,2'. {RESTORE}")
        return label_name("_".join(CLASS_NAMES[n - 1] for n in numbers), compound=True, where=where)
    return _by_clip(read_sheet(path, "multiset"), parse)


def read_annotation(path: str) -> dict[str, tuple[np.ndarray, int]]:
    """annotation.xlsx -> {clip id: (votes int32[11] in paper order, invalid flag as written; 0 = valid)}.

    An empty vote cell counts 0; a vote that is not a whole number >= 0 is an error naming the row.
    """
    def parse(cells, where, clip_id):
        votes = np.zeros(NUM_CLASSES, np.int32)
        for k, name in enumerate(CLASS_NAMES):
            value = cells[f"vote{k}"]
            if value is not None and str(value).strip():
                votes[k] = _whole(value, where=where, what=f"the {name} vote count of clip {clip_id}")
        if (votes < 0).any():
            raise ReleaseError(f"{where}: clip {clip_id} has a negative vote count. {RESTORE}")
        invalid = cells.get("invalid")
        flag = 0 if invalid is None or not str(invalid).strip() else _whole(
            invalid, where=where, what=f"the invalid flag of clip {clip_id}")
        return votes, flag
    return _by_clip(read_sheet(path, "annotation"), parse)


def read_descriptive_text(path: str) -> dict[str, tuple[str, str]]:
    """descriptive_text.xlsx -> {clip id: (Chinese caption, English caption)}, '' for an empty cell."""
    def text(value):
        return "" if value is None else " ".join(str(value).split())
    return _by_clip(read_sheet(path, "descriptivetext"), lambda c, w, i: (text(c["zh"]), text(c["en"])))
