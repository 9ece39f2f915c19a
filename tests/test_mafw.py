"""MAFW: the release reader on edge cases and on the official counts, the synthetic tree, and `mafw` builds."""

import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_dfew import build, datasets, mafw_layout, mafw_release, mafw_sheets, synthetic_mafw
from tfds_dfew.errors import ReleaseError

LISTS = mafw_layout.SPLIT_DIR


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A drawn synthetic release: 30 single-labelled clips at 48 px with sound, 8..16 frames each."""
    root = tmp_path_factory.mktemp("mafw") / "MAFW"
    summary = synthetic_mafw.generate(root, 30, seed=5, frame_size=48, max_frames=16)
    return str(root), summary


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    """mafw/frames48_audio built from `tree`: (data_dir, builder)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, build.build(tree[0], data_dir, dataset="mafw", config="frames48_audio", num_workers=2)


@pytest.fixture(scope="module")
def built_compound(tree, built):
    data_dir = built[0]
    return data_dir, build.build(tree[0], data_dir, dataset="mafw", config="frames48_compound", num_workers=2)


def quick_tree(path, **options):
    """A tree with nothing drawn (one grey PNG linked per frame, no videos): milliseconds."""
    return str(path), synthetic_mafw.generate(path, 30, seed=1, draw=False, **options)


def list_path(root, fold, part="test", view="single", captions="no_caption"):
    return mafw_layout.split_list_path(root, view, captions, fold, part)


def read_lines(path, encoding="ascii"):
    with open(path, "rb") as f:
        return f.read().decode(encoding).split("\r\n")[:-1]


def write_lines(path, lines, encoding="ascii", end="\r\n"):
    with open(path, "wb") as f:
        f.write("".join(line + end for line in lines).encode(encoding))


def test_no_tensorflow_needed():
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None


# -- The files as written ----------------------------------------------------------------------------

def test_lists_are_crlf_ascii_and_gbk_with_tabs(tree):
    root, summary = tree
    plain = open(list_path(root, 1), "rb").read()
    assert plain.isascii() and plain.count(b"\r\n") == plain.count(b"\n") > 0
    assert plain.split(b"\r\n")[0].endswith(tuple(b" " + n.encode() for n in mafw_layout.CLASS_NAMES))
    gbk = open(list_path(root, 1, captions="with_caption"), "rb").read()
    with pytest.raises(UnicodeDecodeError):
        gbk.decode("utf-8")
    first = gbk.decode("gbk").split("\r\n")[0].split("\t")
    clip_id = first[0].removesuffix(".mp4")
    assert len(first) == 4 and tuple(first[2:]) == summary["captions"][clip_id]
    assert gbk.count(b"\r\n") == gbk.count(b"\n")
    compound = [line.split(" ")[1] for k in range(1, 6) for line in read_lines(list_path(root, k, view="compound"))]
    assert any("_" in label for label in compound) and set(compound) <= set(summary["compound_class_names"])


def test_reader_gives_the_tree_and_gbk_captions_round_trip(tree):
    root, summary = tree
    release = mafw_release.read_release(root)
    assert release.class_names == mafw_layout.CLASS_NAMES
    by_id = {c.clip_id: c for c in release.clips}
    assert sorted(by_id) == sorted(set(summary["labels"]) - set(summary["missing_ids"]))
    assert release.missing == summary["missing_ids"]
    assert [c.clip_id for c in release.unlabelled] == summary["unlabelled_ids"]
    for clip_id, c in by_id.items():
        assert mafw_layout.CLASS_NAMES[c.label] == summary["labels"][clip_id]
        assert c.fold == summary["folds"][clip_id]
        assert c.fields["votes"].tolist() == summary["votes"][clip_id]
        zh, en = summary["captions"].get(clip_id, ("", ""))
        assert (c.fields["caption_zh"], c.fields["caption_en"]) == (zh, en)
        assert bool(zh) == (summary["labels"][clip_id] != "neutral")
    chinese = next(c.fields["caption_zh"] for c in release.clips if c.fields["caption_zh"])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese) and chinese.endswith("。")
    assert release.metadata["split_lists"]["single/with_caption"]["encoding"] == "gbk"
    assert release.metadata["unlabelled_invalid"] == summary["unlabelled_ids"][:1]


def test_bom_blank_lines_stray_spaces_unpadded_ids_and_mixed_line_ends(tmp_path):
    root, _ = quick_tree(tmp_path / "MAFW", compound_lists=False, workbooks=False)  # captions: single lists only
    before = mafw_release.read_release(root)
    path = list_path(root, 2)
    lines = read_lines(path)
    ragged = ["  " + lines[0].replace(".mp4 ", ".mp4   ") + " \t"] + lines[1:]
    ragged[-1] = ragged[-1].lstrip("0")  # '00123.mp4 x' -> '123.mp4 x'
    raw = "\ufeff" + "".join(line + ("\n" if i % 2 else "\r\n") for i, line in enumerate(ragged)) + "\r\n\r\n  \n"
    with open(path, "wb") as f:
        f.write(raw.encode("utf-8"))
    gbk = list_path(root, 2, captions="with_caption")
    with open(gbk, "rb") as f:
        data = f.read()
    with open(gbk, "wb") as f:
        f.write(b"\xef\xbb\xbf" + data.decode("gbk").replace("\r\n", "\n", 2).encode("utf-8") + b"\n\n")
    gbk = list_path(root, 3, captions="with_caption")  # still GBK, with LF lines and trailing blanks
    with open(gbk, "rb") as f:
        data = f.read()
    with open(gbk, "wb") as f:
        f.write(data.replace(b"\r\n", b"\n", 3).replace(b"\t", b" \t ", 2) + b"\r\n \r\n")
    after = mafw_release.read_release(root)
    assert [(c.clip_id, c.label, c.fold, dict(c.fields, votes=None)) for c in after.clips] == \
        [(c.clip_id, c.label, c.fold, dict(c.fields, votes=None)) for c in before.clips]
    assert sum(bool(c.fields["caption_zh"]) for c in after.clips if c.fold in (2, 3)) > 0


def test_title_rows_and_the_other_workbook_names(tmp_path):
    root, summary = quick_tree(tmp_path / "MAFW", title_row=True, single_set_name="single_set.xlsx")
    assert mafw_sheets.find_sheet(root, "singleset").endswith("single_set.xlsx")
    labels = mafw_sheets.read_single_set(mafw_sheets.find_sheet(root, "singleset"))
    assert {c: mafw_layout.CLASS_NAMES[i] for c, i in labels.items()} == summary["labels"]
    multi = mafw_sheets.read_multi_set(mafw_sheets.find_sheet(root, "multiset"))
    assert multi == {c: n for c, n in summary["compound_labels"].items() if "_" in n}
    votes = mafw_sheets.read_annotation(mafw_sheets.find_sheet(root, "annotation"))
    assert {c: v.tolist() for c, (v, _) in votes.items()} == summary["votes"]
    release = mafw_release.read_release(root)
    assert [c.clip_id for c in release.unlabelled] == summary["unlabelled_ids"]
    assert not release.metadata["list_label_conflicts"]


def test_headerless_index_column_and_positional_workbooks(tmp_path):
    labels = tmp_path / "MAFW" / "Labels"
    synthetic_mafw.save_xlsx(str(labels / "Single Set.xlsx"), [(None, "Clip", "Single_Label"), (0, "00019.mp4", 3),
                                                               (1, 20.0, "sadness")], title="MAFW")
    assert mafw_sheets.read_single_set(mafw_sheets.find_sheet(str(tmp_path / "MAFW"), "singleset")) == \
        {"00019": 2, "00020": 5}
    synthetic_mafw.save_xlsx(str(labels / "annotation.xlsx"), [(19, 0, *range(11)), ("00020", 1, *([1] * 11))],
                             title="votes of 11 annotators")
    votes = mafw_sheets.read_annotation(str(labels / "annotation.xlsx"))
    assert votes["00019"][0].tolist() == list(range(11)) and votes["00020"][1] == 1
    synthetic_mafw.save_xlsx(str(labels / "descriptive_text.xlsx"), [("00019", "他笑了。", "He laughs.")])
    assert mafw_sheets.read_descriptive_text(str(labels / "descriptive_text.xlsx")) == {"00019": ("他笑了。", "He laughs.")}
    synthetic_mafw.save_xlsx(str(labels / "multi-set.xlsx"), [("clip", "multi_label"), ("00019", "1,2"),
                                                              ("00019", "3")])
    with pytest.raises(ReleaseError, match=r"multi-set\.xlsx, sheet 'Sheet1', row 3: clip 00019 is on two rows"):
        mafw_sheets.read_multi_set(str(labels / "multi-set.xlsx"))


def test_workbook_label_conflicts_are_reported_or_stop_strict(tmp_path):
    root, summary = quick_tree(tmp_path / "MAFW")
    clip_id = sorted(summary["labels"])[0]
    other = 1 if summary["labels"][clip_id] != "disgust" else 3
    rows = [("clip", "single_label")] + [(c, other if c == clip_id else mafw_layout.CLASS_NAMES.index(n) + 1)
                                         for c, n in sorted(summary["labels"].items())]
    synthetic_mafw.save_xlsx(os.path.join(root, "Labels", "single-set.xlsx"), rows)
    release = mafw_release.read_release(root)
    assert release.metadata["list_label_conflicts"] == [clip_id]
    assert any(f"{clip_id}: {summary['labels'][clip_id]} in " in line and "label is kept" in line
               for line in release.metadata["report"])
    if clip_id not in summary["missing_ids"]:
        stored = next(c for c in release.clips if c.clip_id == clip_id)
        assert mafw_layout.CLASS_NAMES[stored.label] == summary["labels"][clip_id]
    with pytest.raises(ReleaseError, match=rf"1 clips have another label than in single/no_caption \(first: {clip_id}"):
        mafw_release.read_release(root, strict=True)


def test_captions_from_the_workbook_and_which_source_wins(tmp_path):
    root, summary = quick_tree(tmp_path / "MAFW")
    clip_id = next(c for c in sorted(summary["labels"]) if c in summary["captions"] and c not in summary["missing_ids"])
    rows = [(c, *summary["captions"][c]) for c in sorted(summary["captions"])]
    rows = [(c, "另一个说法。", "Another text.") if c == clip_id else (c, zh, en) for c, zh, en in rows]
    synthetic_mafw.save_xlsx(os.path.join(root, "Labels", "descriptive_text.xlsx"), rows)
    stored = {c.clip_id: c.fields["caption_zh"] for c in mafw_release.read_release(root).clips}
    assert stored[clip_id] == summary["captions"][clip_id][0]
    release = mafw_release.read_release(root, caption_priority="spreadsheet")
    assert {c.clip_id: c.fields["caption_zh"] for c in release.clips}[clip_id] == "另一个说法。"
    assert release.metadata["caption_conflicts"] == [clip_id]
    assert any("captions differ" in line and clip_id in line for line in release.metadata["report"])
    for view in ("single", "compound"):  # without with_caption lists, every caption comes from the workbook
        shutil.rmtree(os.path.join(root, LISTS, view, "with_caption"))
    stored = {c.clip_id: c.fields["caption_en"] for c in mafw_release.read_release(root).clips}
    assert stored[clip_id] == "Another text."
    assert all(stored[c] == summary["captions"].get(c, ("", ""))[1] for c in stored if c != clip_id)


# -- Bad lists: one message naming file and line ---------------------------------------------------------

def _edit(root, fold, part, change):
    path = list_path(root, fold, part)
    lines = read_lines(path)
    write_lines(path, change(lines, read_lines(list_path(root, 1))))
    return path


@pytest.mark.parametrize("fold,part,change,message", [
    (2, "test", lambda lines, first: lines + [lines[0]], r"test\.txt, line {n}: clip {id} is listed twice"),
    (3, "test", lambda lines, first: lines + [first[0]], r"set_3.test\.txt, line {n}: clip {id} is also in the "
                                                         r"test set of fold 1 \(.*set_1.test\.txt, line 1\)"),
    (1, "train", lambda lines, first: lines + [first[0]], r"set_1.train\.txt, line {n}: clip {id} is also in the "
                                                          r"test set of fold 1"),
    (2, "test", lambda lines, first: lines + [first[0].split()[0].replace("0", "9", 1) + " joy"],
     r"test\.txt, line {n} \(clip 9\d+\): label 'joy' is not a MAFW label"),
    (2, "test", lambda lines, first: lines + ["abc.mp4 anger"], r"test\.txt, line {n}: clip id 'abc.mp4'"),
    (2, "test", lambda lines, first: lines + ["00001.mp4 anger sadness"], r"line {n}: expected '<id>.mp4 <label>'"),
    (4, "train", lambda lines, first: lines[1:], r"set_4.train\.txt: train set 4 lacks 1 \("),
])
def test_bad_lists_name_file_and_line(tmp_path, fold, part, change, message):
    root, _ = quick_tree(tmp_path / "MAFW", with_caption=False, compound_lists=False)
    path = _edit(root, fold, part, change)
    lines = read_lines(path)
    clip_id = mafw_layout.normalize_clip_id(lines[-1].split()[0]) if lines[-1].split()[0][0].isdigit() else ""
    with pytest.raises(ReleaseError, match=message.format(n=len(lines), id=clip_id)) as info:
        mafw_release.read_release(root)
    assert "\n" not in str(info.value) and path in str(info.value)


def test_compound_labels_canonical_and_ordered(tmp_path):
    assert mafw_layout.label_name(" Disgust_ANGER", compound=True, where="x") == "anger_disgust"
    for bad in ("anger_anger", "anger_joy", ""):
        with pytest.raises(ReleaseError, match="x: label"):
            mafw_layout.label_name(bad, compound=True, where="x")
    with pytest.raises(ReleaseError, match="not a MAFW label"):
        mafw_layout.label_name("anger_disgust", compound=False, where="x")
    names = ["anger_fear", "surprise", "anger_disgust_contempt", "anger", "anger_disgust", "fear_sadness_anxiety"]
    assert sorted(names, key=mafw_layout.class_order) == [
        "anger", "surprise", "anger_disgust", "anger_disgust_contempt", "anger_fear", "fear_sadness_anxiety"]


def test_listed_clip_without_frames_is_reported_or_stops_strict(tmp_path):
    root, summary = quick_tree(tmp_path / "MAFW")
    assert summary["missing_ids"]
    release = mafw_release.read_release(root)
    assert release.missing == summary["missing_ids"] and release.plan().missing == summary["missing_ids"]
    with pytest.raises(ReleaseError, match=rf"{summary['missing_ids'][0]}.*no frame folder.*line \d+\)\. Restore"):
        mafw_release.read_release(root, strict=True)


def test_check_release_says_what_is_missing(tmp_path):
    root, _ = quick_tree(tmp_path / "MAFW")
    datasets.builder_class("mafw").check_release(root)
    with pytest.raises(ReleaseError, match=r"It is in .*MAFW: pass that folder"):
        datasets.builder_class("mafw").check_release(str(tmp_path))
    os.rename(os.path.join(root, LISTS), os.path.join(root, "lists"))
    with pytest.raises(ReleaseError, match=r"no 'Train & Test Set' folder \(MAFW's split lists\)"):
        build.build(root, str(tmp_path / "tfds"), dataset="mafw", config="frames48")
    os.rename(os.path.join(root, "data"), os.path.join(root, "video"))
    with pytest.raises(ReleaseError, match=r"no 'data/frames' folder"):
        mafw_release.read_release(root)


# -- The official counts (plan only) -----------------------------------------------------------------------

def test_official_counts(tmp_path):
    expected = synthetic_mafw.official_count_tree(tmp_path / "MAFW")
    root = str(tmp_path / "MAFW")
    release = mafw_release.read_release(root)
    assert [len(release.by_fold(k)) for k in range(1, 6)] == expected["test_sizes"] == [1839, 1837, 1833, 1832, 1831]
    assert len(release.clips) == 9172 and not release.missing
    assert np.bincount([c.label for c in release.clips], minlength=11).tolist() == expected["class_counts"]
    assert np.bincount([c.label for c in release.by_fold(1)], minlength=11).tolist() == \
        [278, 128, 125, 249, 228, 294, 215, 48, 184, 53, 37]
    assert len(release.unlabelled) == 873 and release.metadata["clips_with_captions"] == 8034
    captioned = mafw_release.read_view(root, "single", "with_caption")
    assert [sum(f == k for f in captioned.fold_of.values()) for k in range(1, 6)] == [1611, 1609, 1605, 1605, 1604]
    assert captioned.train_checked == [1, 2, 3, 4, 5]
    compound = mafw_release.read_release(root, "compound")
    assert len(compound.class_names) == 43 and compound.class_names[:11] == mafw_layout.CLASS_NAMES
    assert [len(compound.by_fold(k)) for k in range(1, 6)] == [1818, 1809, 1798, 1788, 1783]
    shutil.rmtree(root)  # 10,045 folders: not left for pytest to keep


# -- Builds --------------------------------------------------------------------------------------------------

def _records(data_dir, name, split):
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return [source[i] for i in range(len(source))]


def test_build_single_view_with_sound_captions_and_unlabelled(tree, built):
    root, summary = tree
    data_dir, builder = built
    info = builder.info
    assert info.features["label"].names == list(mafw_layout.CLASS_NAMES)
    assert set(info.splits) == {"fold1", "fold2", "fold3", "fold4", "fold5", "unlabelled"}
    silent, seen = set(summary["silent_ids"]), {}
    for split in info.splits:
        for r in _records(data_dir, "mafw/frames48_audio", split):
            clip_id = r["clip_id"].decode()
            seen[clip_id] = split
            assert len(r["frames"]) == 16 and r["frames"][0].shape == (48, 48, 3)
            assert r["num_frames"] == summary["num_frames"][clip_id]
            assert r["votes"].tolist() == summary["votes"][clip_id]
            zh, en = summary["captions"].get(clip_id, ("", ""))
            assert (r["caption_zh"].decode("utf-8"), r["caption_en"].decode("utf-8")) == (zh, en)
            assert (r["audio_length"] == 0) == (clip_id in silent) and r["audio"].shape == (r["audio_length"],)
            if split == "unlabelled":
                assert r["label"] == -1 and r["fold"] == 0
            else:
                assert info.features["label"].names[r["label"]] == summary["labels"][clip_id]
                assert split == f"fold{r['fold']}" and r["fold"] == summary["folds"][clip_id]
                assert (zh == "") == (summary["labels"][clip_id] == "neutral")
    stored = set(summary["num_frames"])
    assert set(seen) == stored and {c for c, s in seen.items() if s == "unlabelled"} == set(summary["unlabelled_ids"])
    meta = info.metadata
    assert set(meta["clips_without_audio"]) == silent & stored
    assert meta["missing_clips"] == summary["missing_ids"]
    assert meta["clips_with_captions"] == sum(1 for c in summary["labels"] if c in stored and c in summary["captions"])
    description = datasets.description_of(builder)
    assert description.name == "mafw" and description.class_names == mafw_layout.CLASS_NAMES
    assert description.basic_emotions == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
                                          None, None, None, None)
    assert description.scheme.splits(2) == ("fold1+fold3+fold4+fold5", "fold2")
    assert description.modalities == ("audio", "captions") and "caption_zh" in description.fields
    text = build.summary(builder)
    labelled = len(stored) - len(summary["unlabelled_ids"])
    assert next(line.split() for line in text.splitlines() if line.startswith("all "))[1] == str(labelled)
    assert "happines" in text.splitlines()[1]
    assert f"unlabelled: {len(summary['unlabelled_ids'])} clips without a single label" in text
    assert f"no sound (audio_length 0): {len(silent & stored)}" in text
    assert f"left out, no frame folder: {len(summary['missing_ids'])}" in text
    assert "captions (caption_zh, caption_en):" in text and "votes: Labels/annotation.xlsx" in text


def test_build_compound_view(tree, built_compound):
    root, summary = tree
    data_dir, builder = built_compound
    names = builder.info.features["label"].names
    assert names == summary["compound_class_names"] and names[:11] == list(mafw_layout.CLASS_NAMES)
    assert "unlabelled" not in builder.info.splits  # every clip of the tree has a compound label
    for k in range(1, 6):
        for r in _records(data_dir, "mafw/frames48_compound", f"fold{k}"):
            clip_id = r["clip_id"].decode()
            assert names[r["label"]] == summary["compound_labels"][clip_id]
            assert r["fold"] == k == summary["compound_folds"][clip_id]
    description = datasets.description_of(builder)
    assert description.class_names == tuple(names)
    assert all(b is None for n, b in zip(names, description.basic_emotions) if "_" in n)
    assert description.basic_emotions[3] == "happy"
    reopened = datasets.open_built(data_dir, "mafw/frames48_compound")
    assert reopened.info.features["label"].names == names
    with pytest.raises(ReleaseError, match="pass manual_dir=<the MAFW folder>"):
        datasets.builder_class("mafw")(config="frames48_compound", data_dir=str(root) + "_nothing_built").info


# -- The generator ------------------------------------------------------------------------------------------

def test_generator_is_deterministic_and_has_a_cli(tmp_path, capsys):
    a = synthetic_mafw.generate(tmp_path / "a", 22, seed=4, frame_size=32, max_frames=9, audio=False)
    b = synthetic_mafw.generate(tmp_path / "b", 22, seed=4, frame_size=32, max_frames=9, audio=False)
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "a") for d, _, fs in os.walk(tmp_path / "a")
                   for f in fs)
    assert files == sorted(os.path.relpath(os.path.join(d, f), tmp_path / "b") for d, _, fs in os.walk(tmp_path / "b")
                           for f in fs)
    for f in files:
        assert open(tmp_path / "a" / f, "rb").read() == open(tmp_path / "b" / f, "rb").read(), f
    assert {k: v for k, v in a.items() if k not in ("out_dir", "seconds")} == \
        {k: v for k, v in b.items() if k not in ("out_dir", "seconds")}
    assert sum(a["fold_drawn_class_counts"][k][i] for k in range(1, 6) for i in range(11)) == \
        len(a["labels"]) - len(a["missing_ids"])
    assert "synthetic MAFW tree" in synthetic_mafw.format_summary(a)
    assert synthetic_mafw.main(["--out", str(tmp_path / "a"), "--clips", "22"]) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
