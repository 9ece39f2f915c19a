"""Reading DFEW's Annotation/annotation.xlsx: each clip's 7 vote counts and its single label (0 = multi-labelled)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import openpyxl

from tfds_dfew.layout import (ANNOTATION_COLUMNS, ANNOTATION_DIR, ANNOTATION_FILE, CLASS_NAMES, ReleaseError,
                              normalize_clip_id)


def annotation_path(root: str) -> str:
    """Where the release keeps its vote annotation: <root>/Annotation/annotation.xlsx."""
    return os.path.join(root, ANNOTATION_DIR, ANNOTATION_FILE)


# Header names, compared after lower-casing and dropping everything but letters ('1happy' -> 'happy').
_VOTE_NAMES = (
    ("happy", "happiness", "joy"),
    ("sad", "sadness"),
    ("neutral",),
    ("angry", "anger"),
    ("surprise", "surprised"),
    ("disgust", "disgusted"),
    ("fear", "fearful"),
)
_ID_NAMES = ("order", "videoname", "clipid", "clipname", "clip", "video", "videoid", "name", "id")
_LABEL_NAMES = ("label", "singlelabel", "annotation")
_HEADER_SEARCH_ROWS = 10
_EXPECTED_HEADER = ", ".join(ANNOTATION_COLUMNS)


def _header_key(cell) -> str:
    return re.sub(r"[^a-z]", "", str(cell).lower()) if cell is not None else ""


def _find_header(row: Sequence) -> dict[str, list[int]] | None:
    """Column indices per role ('vote0'..'vote6', 'id', 'label') in a header row; None if it is not one."""
    keys = [_header_key(c) for c in row]
    votes = {}
    for col, key in enumerate(keys):
        for k, names in enumerate(_VOTE_NAMES):
            if key in names:
                votes.setdefault(k, []).append(col)
    if len(votes) < 3:  # not a header row (or only a stray word)
        return None
    roles = {f"vote{k}": cols for k, cols in votes.items()}
    for role, names in (("id", _ID_NAMES), ("label", _LABEL_NAMES)):
        for name in names:  # the first name in priority order that is present wins
            cols = [col for col, key in enumerate(keys) if key == name]
            if cols:
                roles[role] = cols
                break
    return roles


def _cell_int(value, *, where: str, what: str) -> int:
    """A whole number from a workbook cell (int, integral float, or text such as '3' or '3.0')."""
    if isinstance(value, bool):
        raise ReleaseError(f"{where}: {what} is {value!r}, not a whole number.")
    if isinstance(value, int):
        return value
    number = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str) and value.strip():
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or number != number or number != int(number):
        shown = "empty" if value is None or (isinstance(value, str) and not value.strip()) else repr(value)
        raise ReleaseError(f"{where}: {what} is {shown}, not a whole number.")
    return int(number)


def read_annotation(path: str) -> dict[str, tuple[np.ndarray, int]]:
    """Reads DFEW's Annotation/annotation.xlsx into {clip_id (5 digits): (votes int32[7], label 0..7)}.

    votes are the annotators' counts per class in training order (happy, sad, neutral, angry,
    surprise, disgust, fear); label is the official single label 1..7, or 0 for a clip without one.
    The header row is found by name among the first rows of each sheet (the first sheet that has
    one is read): the 7 emotion columns ('1happy'..'7fear', 'Happy', 'anger', ... any case), the
    clip id ('order', 'video_name', 'clip_id', ...; ids with or without zero padding) and the
    label ('label'). Other columns and empty rows are ignored.

    Raises:
      ReleaseError: naming the file and row, for an unreadable workbook, missing columns, a vote
        that is not a whole number >= 0, a label outside 0..7, or a clip listed twice.
    """
    if not os.path.isfile(path):
        raise ReleaseError(f"{path}: annotation file not found.")
    restore = (
        "Restore Annotation/annotation.xlsx from the DFEW release, or move it out of the release folder to "
        "build without votes (clips no split CSV lists then count as unlabelled)."
    )
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zip, XML and its own errors for damaged files
        raise ReleaseError(
            f"{path}: cannot be read as an .xlsx workbook ({type(e).__name__}: {e}). {restore}"
        ) from None
    try:
        found = None
        for sheet in book.worksheets:
            sheet.reset_dimensions()  # do not trust a stale <dimension> tag: read every stored row
            rows = sheet.iter_rows(values_only=True)
            for row_no, row in enumerate(rows, start=1):
                if row_no > _HEADER_SEARCH_ROWS:
                    break
                roles = _find_header(row)
                if roles is not None:
                    found = (sheet, row_no, roles, rows)
                    break
            if found:
                break
        if found is None:
            raise ReleaseError(
                f"{path}: no header row with the emotion vote columns in the first {_HEADER_SEARCH_ROWS} rows of "
                f"any sheet; expected the columns {_EXPECTED_HEADER}. {restore}"
            )
        sheet, header_row, roles, rows = found
        where_header = f"{path}, sheet {sheet.title!r}, row {header_row}"
        needed = [f"vote{k}" for k in range(len(CLASS_NAMES))] + ["id", "label"]
        shown = {f"vote{k}": ANNOTATION_COLUMNS[k] for k in range(len(CLASS_NAMES))}
        shown.update(id=f"{ANNOTATION_COLUMNS[7]} (clip id)", label=ANNOTATION_COLUMNS[8])
        absent = [shown[r] for r in needed if r not in roles]
        if absent:
            raise ReleaseError(
                f"{where_header}: the header has no column for {', '.join(absent)}; expected the columns "
                f"{_EXPECTED_HEADER}. {restore}"
            )
        doubled = [shown[r] for r in needed if len(roles[r]) > 1]
        if doubled:
            raise ReleaseError(
                f"{where_header}: more than one column could be {', '.join(doubled)}; keep one of each. {restore}"
            )
        columns = {r: roles[r][0] for r in needed}
        out: dict[str, tuple[np.ndarray, int]] = {}
        first_row: dict[str, int] = {}
        for row_no, row in enumerate(rows, start=header_row + 1):
            if not any(c is not None and str(c).strip() for c in row):
                continue
            where = f"{path}, sheet {sheet.title!r}, row {row_no}"

            def cell(role, row=row):
                col = columns[role]
                return row[col] if col < len(row) else None

            raw_id = cell("id")
            if raw_id is None or not str(raw_id).strip():
                raise ReleaseError(f"{where}: no clip id in column {ANNOTATION_COLUMNS[7]!r}. {restore}")
            if isinstance(raw_id, float) and raw_id.is_integer():
                raw_id = int(raw_id)
            clip_id = normalize_clip_id(raw_id, where=where)
            if clip_id in out:
                raise ReleaseError(
                    f"{where}: clip {clip_id} is listed twice (also in row {first_row[clip_id]}). {restore}"
                )
            votes = np.zeros(len(CLASS_NAMES), np.int32)
            for k, name in enumerate(CLASS_NAMES):
                value = _cell_int(cell(f"vote{k}"), where=where, what=f"the {name} vote count of clip {clip_id}")
                if value < 0:
                    raise ReleaseError(
                        f"{where}: the {name} vote count of clip {clip_id} is {value}; votes are >= 0. {restore}"
                    )
                votes[k] = value
            label = _cell_int(cell("label"), where=where, what=f"the label of clip {clip_id}")
            if not 0 <= label <= len(CLASS_NAMES):
                raise ReleaseError(
                    f"{where}: the label of clip {clip_id} is {label}, outside 0..7 (0 = no single label; 1 Happy, "
                    f"2 Sad, 3 Neutral, 4 Angry, 5 Surprise, 6 Disgust, 7 Fear). {restore}"
                )
            out[clip_id] = (votes, label)
            first_row[clip_id] = row_no
        if not out:
            raise ReleaseError(f"{where_header}: the annotation has a header but no clips. {restore}")
        return out
    finally:
        book.close()
