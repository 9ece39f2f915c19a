"""FERV39k: the release reader on edge cases, the official counts, the synthetic tree, and the `ferv39k` builder."""

import hashlib
import io
import os
import re
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_dfew import build, datasets, description, ferv39k_release as fr, frames, synthetic_ferv39k
from tfds_dfew.errors import ReleaseError

TRAIN_CSV = os.path.join("4_setups", "All_scenes", "train_All.csv")
TEST_CSV = os.path.join("4_setups", "All_scenes", "test_All.csv")
CLASS_NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def _jpeg(value: int = 128, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_tree(root, train, test, folders=None, *, eol="\r\n", bom=False, nested=False, num_frames=3):
    """A hand-made release: split lists from raw lines, and a frame folder of num_frames JPEGs for each of
    `folders` (default: the id of every line that has one)."""
    root = str(root)
    os.makedirs(os.path.join(root, "4_setups", "All_scenes"))
    for name, lines in ((TRAIN_CSV, train), (TEST_CSV, test)):
        with open(os.path.join(root, name), "wb") as f:
            f.write((b"\xef\xbb\xbf" if bom else b"") + "".join(line + eol for line in lines).encode())
    face = os.path.join(root, "2_ClipsforFaceCrop", *(["2_ClipsforFaceCrop"] if nested else []))
    os.makedirs(face)
    if folders is None:
        folders = dict.fromkeys(line.split()[0] for line in list(train) + list(test) if line.strip() and "/" in line)
    data = _jpeg()
    for clip_id in folders:
        d = os.path.join(face, *clip_id.split("/"))
        os.makedirs(d)
        for k in range(1, num_frames + 1):
            with open(os.path.join(d, f"{k}.jpg"), "wb") as f:
                f.write(data)
    return root


# -- The reader -------------------------------------------------------------------------------------------


def test_lines_split_on_the_last_space_with_crlf_bom_and_blank_lines(tmp_path):
    train = ["Crime/Angry/0063 Angry", "", "  Interview/Happy/0118   Happy  ", "Crime/Angry/0000\tAngry", "   "]
    root = make_tree(tmp_path, train, ["Interview/Sad/0000 Sad"], bom=True)
    release = fr.read_release(root)
    clips = {c.clip_id: c for c in release.listed["train"]}
    assert sorted(clips) == ["Crime/Angry/0000", "Crime/Angry/0063", "Interview/Happy/0118"]
    assert clips["Interview/Happy/0118"].line == 3 and clips["Crime/Angry/0000"].line == 4
    plan = release.to_plan()
    assert [e.clip_id for e in plan.splits["train"]] == ["Crime/Angry/0000", "Crime/Angry/0063",
                                                        "Interview/Happy/0118"]
    entry = plan.splits["test"][0]
    assert (entry.clip_id, entry.label, entry.fold, entry.split, dict(entry.fields)) == \
        ("Interview/Sad/0000", CLASS_NAMES.index("sad"), 0, "test", {"scene": "Interview"})
    assert plan.metadata["listed_counts"]["train"] == [2, 0, 0, 1, 0, 0, 0]
    assert plan.metadata["scene_counts"]["train"]["Crime"] == 2 and plan.missing == []


def test_lf_endings_and_a_header_line(tmp_path):
    root = make_tree(tmp_path, ["path label", "War/Fear/0001 Fear"], ["War/Fear/0002 Fear"], eol="\n")
    release = fr.read_release(root)
    assert [c.clip_id for c in release.listed["train"]] == ["War/Fear/0001"]
    assert release.listed["train"][0].line == 2


def test_ids_are_whole_paths_and_repeat_across_folders(tmp_path):
    lines = ["Crime/Angry/0000 Angry", "Crime/Happy/0000 Happy", "Speech/Angry/0000 Angry"]
    root = make_tree(tmp_path, lines, ["Talkshow/Angry/0000 Angry"])
    plan = fr.plan_release(root)
    assert [e.clip_id for e in plan.splits["train"]] == ["Crime/Angry/0000", "Crime/Happy/0000",
                                                        "Speech/Angry/0000"]
    assert len({e.frame_dir for e in plan.splits["train"]}) == 3


def test_the_doubled_face_crop_folder_is_found(tmp_path):
    root = make_tree(tmp_path, ["Crime/Angry/0063 Angry"], ["Crime/Sad/0001 Sad"], nested=True)
    release = fr.read_release(root)
    assert release.face_level == os.path.join(root, "2_ClipsforFaceCrop", "2_ClipsforFaceCrop")
    assert len(release.frame_dirs) == 2
    assert any("2_ClipsforFaceCrop/2_ClipsforFaceCrop" in line for line in release.report())


@pytest.mark.parametrize("line, expected", [
    ("Crime/Angry/0063 Happy", "label 'Happy' of clip Crime/Angry/0063 is not its Emotion folder 'Angry'"),
    ("Crime/angry/0063 angry", "emotion folder 'angry' (did you mean Angry?)"),
    ("Crime/Joy/0063 Joy", "emotion folder 'Joy'"),
    ("Cooking/Angry/0063 Angry", "scene 'Cooking'"),
    ("Dailylife/Angry/0063 Angry", "(did you mean DailyLife?)"),
    ("Crime/Angry/0063", "is not 'Scene/Emotion/NNNN Emotion'"),
    ("Crime/0063 Angry", "clip id 'Crime/0063' is not Scene/Emotion/NNNN"),
    ("Crime/Angry/63a Angry", "is not Scene/Emotion/NNNN"),
])
def test_a_bad_line_names_file_and_line(tmp_path, line, expected):
    root = make_tree(tmp_path, ["Crime/Angry/0001 Angry", line], ["Crime/Sad/0001 Sad"], folders=[])
    with pytest.raises(ReleaseError) as info:
        fr.read_release(root)
    message = str(info.value)
    assert f"{os.path.join(root, TRAIN_CSV)}, line 2:" in message and expected in message
    assert "\n" not in message


def test_a_clip_in_both_splits(tmp_path):
    root = make_tree(tmp_path, ["Crime/Angry/0001 Angry", "Crime/Angry/0002 Angry"],
                     ["Crime/Sad/0001 Sad", "Crime/Angry/0002 Angry"])
    with pytest.raises(ReleaseError) as info:
        fr.read_release(root)
    message = str(info.value)
    assert message.startswith(f"{os.path.join(root, TEST_CSV)}, line 2: clip Crime/Angry/0002 is also in "
                              f"{os.path.join(root, TRAIN_CSV)}, line 2")
    assert "do not overlap" in message


def test_a_clip_listed_twice(tmp_path):
    root = make_tree(tmp_path, ["Crime/Angry/0001 Angry", "Crime/Sad/0001 Sad", "Crime/Angry/0001 Angry"],
                     ["Crime/Sad/0002 Sad"])
    with pytest.raises(ReleaseError, match=r"train_All.csv, line 3: clip Crime/Angry/0001 is listed twice in this "
                                           r"file \(first at line 1\)"):
        fr.read_release(root)


def test_a_listed_clip_without_frames_is_left_out_or_stops_a_strict_reading(tmp_path):
    lines = ["Crime/Angry/0001 Angry", "Crime/Angry/0002 Angry", "Crime/Angry/0003 Angry"]
    root = make_tree(tmp_path, lines, ["Crime/Sad/0001 Sad"],
                     folders=["Crime/Angry/0001", "Crime/Sad/0001"])
    os.makedirs(os.path.join(root, "2_ClipsforFaceCrop", "Crime", "Angry", "0003"))  # a folder without images
    plan = fr.plan_release(root)
    assert [e.clip_id for e in plan.splits["train"]] == ["Crime/Angry/0001"]
    assert plan.missing == ["Crime/Angry/0002", "Crime/Angry/0003"]
    assert plan.metadata["missing_by_split"] == {"train": ["Crime/Angry/0002", "Crime/Angry/0003"], "test": []}
    assert any("listed without frames" in line for line in plan.metadata["report"])
    with pytest.raises(ReleaseError) as info:
        fr.plan_release(root, strict=True)
    assert str(info.value).startswith(f"{os.path.join(root, TRAIN_CSV)}, line 2: clip Crime/Angry/0002 has no frame "
                                      "folder")
    assert "without --strict" in str(info.value)


def test_frames_are_read_in_numeric_order(tmp_path):
    root = make_tree(tmp_path, ["Crime/Angry/0001 Angry"], ["Crime/Sad/0001 Sad"], folders=["Crime/Sad/0001"])
    folder = os.path.join(root, "2_ClipsforFaceCrop", "Crime", "Angry", "0001")
    os.makedirs(folder)
    for k in range(1, 13):  # 1.jpg, 10.jpg, 11.jpg, 12.jpg, 2.jpg, ... lexically
        with open(os.path.join(folder, f"frame_{k}.jpg"), "wb") as f:
            f.write(_jpeg(20 * k))
    entry = fr.plan_release(root).splits["train"][0]
    clip, idx, count = frames.load_frames(entry.frame_dir, 8, 12, clip_id=entry.clip_id)
    assert count == 12 and list(idx) == list(range(12))
    assert np.all(np.diff(clip.reshape(12, -1).mean(axis=1)) > 10)


def test_check_release_says_what_is_missing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "2_ClipsforFaceCrop").mkdir()
    with pytest.raises(ReleaseError, match=r"no 4_setups/All_scenes/ folder"):
        build.build(str(tmp_path / "a"), str(tmp_path / "tfds"), dataset="ferv39k", config="frames48")
    root = make_tree(tmp_path / "b", ["Crime/Angry/0001 Angry"], ["Crime/Sad/0001 Sad"], folders=[])
    os.rmdir(os.path.join(root, "2_ClipsforFaceCrop"))
    with pytest.raises(ReleaseError, match=r"no 2_ClipsforFaceCrop/ folder \(the face crops\)"):
        build.build(root, str(tmp_path / "tfds"), dataset="ferv39k", config="frames48")
    os.makedirs(os.path.join(root, "2_ClipsforFaceCrop", "stuff"))
    with pytest.raises(ReleaseError, match="no scene folders"):
        fr.read_release(root)


def test_the_official_counts_on_full_size_lists(tmp_path):
    written = synthetic_ferv39k.write_official_lists(tmp_path / "official", nested=True)
    release = fr.read_release(str(tmp_path / "official"))
    plan = release.to_plan()
    assert {s: len(v) for s, v in plan.splits.items()} == {"train": 31088, "test": 7847} and plan.missing == []
    assert release.class_counts("train") == [5906, 1833, 1680, 5854, 7790, 5523, 2502]
    assert release.class_counts("test") == [1487, 467, 431, 1473, 1958, 1393, 638]
    for split in ("train", "test"):
        assert plan.metadata["scene_counts"][split] == written["scene_counts"][split]
        assert all(plan.metadata["scene_counts"][split].values())  # all 22 scenes hold clips
    assert "the official counts" in plan.metadata["report"][0]
    ids = [e.clip_id for s in plan.splits.values() for e in s]
    assert len(set(ids)) == 38935 and sum(i.endswith("/0000") for i in ids) == 154


# -- The synthetic tree -----------------------------------------------------------------------------------


def _digest(root, skip=()) -> str:
    paths = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [n for n in dirs if n not in skip]
        paths += [os.path.join(d, n) for n in names]
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(os.path.relpath(p, root).encode())
        h.update(open(p, "rb").read())
    return h.hexdigest()


def test_synthetic_tree_layout_and_determinism(tmp_path):
    a = synthetic_ferv39k.generate(tmp_path / "a", 24, seed=5, frame_size=32, audio=False, scene_images=True)
    assert synthetic_ferv39k.main(["--out", str(tmp_path / "b"), "--clips", "24", "--seed", "5", "--frame_size",
                                   "32", "--no_audio"]) == 0
    assert os.path.isfile(tmp_path / "a" / "3_ClipsforScenImages" / "README.txt")
    assert not os.path.exists(tmp_path / "b" / "3_ClipsforScenImages")
    assert _digest(tmp_path / "a", skip=("3_ClipsforScenImages",)) == _digest(tmp_path / "b")
    raw = open(tmp_path / "a" / TRAIN_CSV, "rb").read()
    assert raw.count(b"\r\n") == a["split_counts"]["train"] and b"\n" not in raw.replace(b"\r\n", b"")
    by_folder = {}
    for clip_id in a["ids"]:
        folder, number = clip_id.rsplit("/", 1)
        by_folder.setdefault(folder, []).append(int(number))
    assert all(sorted(v) == list(range(len(v))) for v in by_folder.values())
    assert a["missing_ids"] and a["short_ids"] and not os.path.exists(tmp_path / "a" / "0_7_LabelClips")
    clip = a["short_ids"][0]
    names = os.listdir(os.path.join(tmp_path, "a", "2_ClipsforFaceCrop", *clip.split("/")))
    assert sorted(names, key=lambda n: int(n[:-4])) == [f"{k}.jpg" for k in range(1, a["num_frames"][clip] + 1)]
    assert all(8 <= t <= 40 for t in a["num_frames"].values()) and min(a["num_frames"].values()) < 16
    assert "synthetic FERV39k tree" in synthetic_ferv39k.format_summary(a)


# -- The builder --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ferv39k(tmp_path_factory):
    """A synthetic release (36 clips, 48 px, doubled face folder, videos with sound), built as frames48_audio."""
    root = tmp_path_factory.mktemp("ferv39k") / "FERV39k"
    summary = synthetic_ferv39k.generate(root, 36, seed=1, frame_size=48, nested=True)
    data_dir = str(tmp_path_factory.mktemp("tfds_ferv39k"))
    builder = build.build(str(root), data_dir, dataset="ferv39k", config="frames48_audio", num_workers=2)
    return str(root), summary, data_dir, builder


def _records(data_dir, name, split):
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return {r["clip_id"].decode(): r for r in (source[i] for i in range(len(source)))}


def test_no_tensorflow_needed(tiny_ferv39k):
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None


def test_build_splits_classes_and_scenes(tiny_ferv39k):
    _, summary, data_dir, builder = tiny_ferv39k
    info = builder.info
    assert sorted(info.splits) == ["test", "train"]
    assert info.features["label"].names == CLASS_NAMES
    assert info.features["scene"].names == list(fr.SCENES)
    for split in ("train", "test"):
        records = _records(data_dir, "ferv39k/frames48_audio", split)
        expected = [c for c in summary["ids"] if summary["splits"][c] == split and c not in summary["missing_ids"]]
        assert sorted(records) == sorted(expected)
        for clip_id, r in records.items():
            assert CLASS_NAMES[r["label"]] == summary["labels"][clip_id].lower() and r["fold"] == 0
            assert fr.SCENES[r["scene"]] == summary["scenes"][clip_id]
            assert r["num_frames"] == summary["num_frames"][clip_id]
            assert len(r["frames"]) == 16 and r["frames"][0].shape == (48, 48, 3)
        assert info.metadata["scene_counts"][split] == {s: summary["scene_counts"][split].get(s, 0) for s in fr.SCENES}
        assert info.metadata["class_counts"][split] == [summary["drawn_class_counts"][split][e] for e in fr.EMOTIONS]
    assert info.metadata["missing_clips"] == summary["missing_ids"]


def test_short_clips_repeat_frames(tiny_ferv39k):
    _, summary, data_dir, _ = tiny_ferv39k
    records = {**_records(data_dir, "ferv39k/frames48_audio", "train"), **_records(data_dir, "ferv39k/frames48_audio",
                                                                                 "test")}
    short = [c for c in summary["short_ids"] if c in records]
    assert short
    for clip_id in short:
        stack = np.stack(records[clip_id]["frames"])
        assert stack.shape[0] == 16 and records[clip_id]["num_frames"] < 16
        assert any(np.array_equal(stack[i], stack[i + 1]) for i in range(15))


def test_sound_is_masked_and_reported_for_clips_without_a_video(tiny_ferv39k):
    _, summary, data_dir, builder = tiny_ferv39k
    records = {**_records(data_dir, "ferv39k/frames48_audio", "train"), **_records(data_dir, "ferv39k/frames48_audio",
                                                                                 "test")}
    silent = set(summary["silent_ids"])
    assert silent and set(builder.info.metadata["clips_without_audio"]) == silent
    for clip_id, r in records.items():
        if clip_id in silent:
            assert r["audio_length"] == 0 and len(r["audio"]) == 0
        else:
            expected = summary["num_frames"][clip_id] / 25 * 16000
            assert abs(int(r["audio_length"]) - expected) < 0.1 * expected and len(r["audio"]) == r["audio_length"]


def test_description_and_summary(tiny_ferv39k):
    _, summary, _, builder = tiny_ferv39k
    d = datasets.description_of(builder)
    assert (d.name, d.scheme.kind, d.group_by, d.fields, d.modalities, d.num_frames) == \
        ("ferv39k", "train_test", "scene", ("scene",), ("audio",), 16)
    assert d.class_names == tuple(CLASS_NAMES) and d.basic_emotions == tuple(CLASS_NAMES)
    assert d.scheme.splits(1) == ("train", "test")
    assert description.registered("ferv39k").group_by == "scene"
    assert datasets.builder_class("ferv39k") is type(builder)
    text = build.summary(builder)
    stored = summary["split_counts"]["train"] - sum(summary["splits"][c] == "train" for c in summary["missing_ids"])
    assert re.search(rf"^train\s+{stored}\s", text, re.M) and re.search(r"^test\s+\d+\s", text, re.M)
    assert f"left out, no frame folder: {len(summary['missing_ids'])}" in text
    assert f"no sound (audio_length 0): {len(summary['silent_ids'])}" in text
    assert "face crops read from 2_ClipsforFaceCrop/2_ClipsforFaceCrop" in text
    assert "clips with fewer than 16 frames (frames repeated)" in text


def test_a_t32_build_stores_32_frames(tiny_ferv39k):
    root, summary, data_dir, _ = tiny_ferv39k
    builder = build.build(root, data_dir, dataset="ferv39k", config="frames48_t32", num_workers=2)
    assert datasets.description_of(builder).num_frames == 32 and datasets.description_of(builder).modalities == ()
    records = _records(data_dir, "ferv39k/frames48_t32", "test")
    assert records and all(len(r["frames"]) == 32 for r in records.values())
    assert all(r["num_frames"] == summary["num_frames"][c] for c, r in records.items())
    assert "audio" not in builder.info.features
