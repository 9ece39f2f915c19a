"""The TFDS builder for DFEW: one record per clip, splits fold1..fold5 (+ unlabelled), on `ClipBuilder`.

Each stored fold split is one official test set; the training set of fold k is the other four
(`release.fold_splits(k)`), so every single-labelled clip is stored once. Clips without a single label
(multi-labelled: label 0 in Annotation/annotation.xlsx) go to the split `unlabelled` with label
-1 and fold 0, for self-supervised use; every record carries the clip's 7 annotator vote counts
(`votes`, zeros when the release has no annotation). Frames are JPEG bytes encoded with Pillow
and records are written as array_record: neither building nor reading needs TensorFlow.

The `_audio` configs (`frames{112,64,224}_audio`, `frames{112,64,224}_pose_audio`) add each clip's
whole sound track from `Clip/original/<id>.mp4`, int16 mono 16 kHz (`audio`, `audio_length`; a
clip without usable sound is stored with audio_length 0 and reported, see tfds_dfew/audio.py).
The `_pose` configs store OpenPose keypoints as `pose` (builds before 1.2.0 called it `keypoints`).
A `_t<n>` config (e.g. `frames112_t32`) stores n frames per clip, sampled from the variable-length
`clip_224x224` folders (the 16-frame folder cannot give more than 16).

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import clip_builder, datasets, layout, release
from tfds_dfew.frames import encode_jpeg  # noqa: F401  (re-exported: dfew.encode_jpeg)
from tfds_dfew.plan import Plan

log = logging.getLogger(__name__)

_CITATION = """\
@inproceedings{jiang2020dfew,
  title={DFEW: A Large-Scale Database for Recognizing Dynamic Facial Expressions in the Wild},
  author={Jiang, Xingxun and Zong, Yuan and Zheng, Wenming and Tang, Chuangao and Xia, Wanchuang
          and Lu, Cheng and Liu, Jiateng},
  booktitle={ACM International Conference on Multimedia},
  year={2020}
}
"""

JPEG_QUALITY = 95
DfewConfig = clip_builder.ClipConfig  # the name earlier code used


@datasets.register_builder
class Dfew(clip_builder.ClipBuilder):
    """DFEW clips as 16 frames each (or `_t<n>`), with labels, official folds and annotator votes."""

    DESCRIPTION = layout.DESCRIPTION
    CITATION = _CITATION
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Frames, label, clip id, original frame count, test fold.",
        "1.1.0": "Feature `votes` (int32[7] annotator votes from Annotation/annotation.xlsx, zeros without it); "
                 "split `unlabelled` (multi-labelled clips, label -1, fold 0); metadata `has_votes`, "
                 "`unlabelled_clips`, `label_conflicts`; `class_counts` counts labelled clips only.",
        "1.2.0": "OpenPose keypoints stored as `pose` (was `keypoints`); metadata `dataset` (the dataset's "
                 "description: classes, split scheme, frames per clip) and `build` (the build's fingerprint); "
                 "`_t<n>` configs with n frames per clip.",
    }
    # The audio configs come after the original six, which stay as they were.
    BUILDER_CONFIGS = clip_builder.ClipBuilder.grid()
    DEFAULT_CONFIG_NAME = "frames112"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
DFEW is licence-restricted and is never downloaded by this builder. Request it from the DFEW
authors (https://dfew-dataset.github.io), unpack it, and pass the folder that contains
`EmoLabel_DataSplit/` and `Clip/` (with `clip_224x224_16f/` and/or `clip_224x224/`) as the
manual dir. Keep `Annotation/annotation.xlsx` there too: it supplies the vote counts and tells
which clips have no single label. The `_audio` configs also read the original videos with their
sound, `Clip/original/<id>.mp4` (or pass another folder as --audio_dir).

    python -m tfds_dfew.build --manual_dir /path/to/DFEW --data_dir ~/tensorflow_datasets
"""

    def __init__(self, *, frame_source: str = "auto", **kwargs):
        """frame_source: 'auto' (the 16-frame folder when a clip has one and 16 frames are stored, else sample
        the variable-length folder), 'clip_224x224_16f' or 'clip_224x224'. Other options: `ClipBuilder`;
        `strict` also stops on listed clips without a frame folder and on CSV labels that differ from the
        annotation's (real DFEW lacks frames for 362 listed clips).
        """
        self._frame_source = frame_source
        super().__init__(**kwargs)

    @classmethod
    def check_release(cls, root: str) -> None:
        release.check_root(root)

    def _extra_features(self) -> dict:
        return {"votes": tfds.features.Tensor(shape=(len(layout.CLASS_NAMES),), dtype=np.int32)}

    def _default_audio_dir(self, root: str) -> str:
        return os.path.join(root, "Clip", "original")

    def _original_count(self, entry, counted: int) -> int:
        if entry.source != "clip_224x224":
            return release.original_frame_count(entry, self.release_plan.root)
        return counted

    def _frame_source_for(self, root: str) -> str:
        """The frame folder to read: a build of other than 16 frames samples the variable-length folders."""
        wanted = int(self.builder_config.num_frames)
        if self._frame_source != "auto" or wanted == layout.NUM_FRAMES:
            return self._frame_source
        if os.path.isdir(os.path.join(root, "Clip", "clip_224x224")):
            return "clip_224x224"
        log.warning("%s: no Clip/clip_224x224 (variable-length frames); the %d frames per clip are sampled from the "
                    "16-frame folders, repeating frames.", root, wanted)
        return "clip_224x224_16f"

    def _plan(self, root: str) -> Plan:
        frame_source = self._frame_source_for(root)
        plan = release.plan_release(root, frame_source=frame_source)
        if plan.missing:
            message = release.describe_missing(plan.missing)
            if self._strict:
                raise release.ReleaseError(
                    f"{root}: {message}. Restore their folders under Clip/, or build without --strict to "
                    "leave them out (real DFEW lacks 362 single-labelled clips with no detected face)."
                )
            log.warning("%s; they are left out of the dataset.", message)
        if plan.label_conflicts and self._strict:
            first = ", ".join(f"{c} (CSV {a}, annotation {b})" for c, a, b in plan.label_conflicts[:5])
            raise release.ReleaseError(
                f"{plan.annotation_path}: {len(plan.label_conflicts)} clips have another label in the split CSVs "
                f"than here (first: {first}). Restore the original files, or build without --strict to keep the "
                "CSV labels."
            )
        if plan.unlabelled_missing:
            log.info("%s clips without a single label have no frame folder; they are left out.",
                     release.describe_ids(plan.unlabelled_missing))

        def with_votes(entry):
            return clip_builder.ClipEntry(entry.clip_id, entry.label, entry.fold, entry.frame_dir, entry.source,
                                          fields={"votes": plan.votes_of(entry.clip_id)})

        splits = {f"fold{k}": [with_votes(e) for e in plan.by_fold(k)] for k in range(1, layout.NUM_FOLDS + 1)}
        if plan.unlabelled:  # no empty split when the release has none
            splits["unlabelled"] = [with_votes(e) for e in plan.unlabelled]
        self.release_plan = plan
        metadata = {
            "frame_source": frame_source,
            "has_votes": plan.has_votes,
            "label_conflicts": [c for c, _, _ in plan.label_conflicts],
            "unannotated_clips": list(plan.unannotated),
            "left_out_clips": [c for c, _ in plan.left_out],
            "unlabelled_source": plan.unlabelled_source if self._unlabelled else "left out",
            "unlabelled_without_frames": list(plan.unlabelled_missing),
            "unlabelled_available": len(plan.unlabelled),
        }
        return Plan(splits=splits, metadata=metadata, missing=[c.clip_id for c in plan.missing])

    def _options(self) -> dict:
        return {**super()._options(), "frame_source": self._frame_source}
