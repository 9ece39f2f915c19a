"""The TFDS builder for MAFW: one record per clip, splits fold1..fold5 (+ unlabelled), captions and votes.

MAFW (Liu et al., ACM MM 2022; MAFW.md): 10,045 movie and TV clips with sound, 11 single-label
emotions (paper order: anger, disgust, fear, happiness, neutral, sadness, surprise, contempt,
anxiety, helplessness, disappointment) and 32 compound classes, Chinese and English captions,
5 folds. The release is read by `tfds_dfew.mafw_release` (which source wins where, and why).

Each stored split `fold<k>` is fold k's official test set; the training set of fold k is the other
four (`DESCRIPTION.scheme.splits(k)`), so every clip is stored once. Per clip, besides the frames,
label, clip id, `num_frames` (the clip's own frame count) and `fold` of every clip builder:
- `caption_zh`, `caption_en` (Text, UTF-8): the clip's descriptive captions, '' when it has none
  (MAFW's neutral clips: the empty string is the mask); metadata `clips_with_captions`;
- `votes` int32[11]: the annotators' votes per class in paper order from Labels/annotation.xlsx
  (zeros for a clip without a row, or when the release has no annotation.xlsx; `votes_source`).
Clips of annotation.xlsx without a label of the view that have frames go to split `unlabelled`
(label -1, fold 0), for self-supervised pretraining.

Configs `frames<size>[_pose][_audio][_compound][_t<n>]`:
- the single-label 11-class protocol by default; `_compound` (e.g. `frames112_compound`) is the
  compound view: 43 classes read from the release's compound split lists, the 11 singles first in
  paper order, then the compounds ordered by their paper-order index tuples (`anger_disgust` <
  `anger_disgust_contempt` < `anger_fear`); a compound class maps to no basic emotion. Its class
  names come from the release, so constructing it needs `manual_dir` (or an existing build);
- `_audio`: each clip's whole sound track from `data/clips/<id>.mp4` (int16 mono 16 kHz; a clip
  without usable sound, 16 in MAFW, is kept with audio_length 0 and reported);
- `_pose`: OpenPose keypoints read from `<manual_dir>/OpenPose/<id>/` (or --openpose_dir). MAFW
  ships none: run OpenPose over the clips first; a clip without output is stored masked.

    python -m tfds_dfew.build --dataset mafw --manual_dir ~/MAFW --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import clip_builder, datasets, description, mafw_layout, mafw_release
from tfds_dfew.errors import ReleaseError
from tfds_dfew.plan import Plan

_CITATION = """\
@inproceedings{liu2022mafw,
  title={MAFW: A Large-scale, Multi-modal, Compound Affective Database for Dynamic Facial Expression
         Recognition in the Wild},
  author={Liu, Yuanyuan and Dai, Wei and Feng, Chuanxu and Wang, Wenbin and Yin, Guanghao and Zeng, Jiabei
          and Shan, Shiguang},
  booktitle={ACM International Conference on Multimedia},
  year={2022}
}
"""

COMPOUND = "compound"  # the config view of the compound labels

DESCRIPTION = description.register(description.DatasetDescription(
    name="mafw",
    title="MAFW",
    class_names=mafw_layout.CLASS_NAMES,
    basic_emotions=mafw_layout.BASIC_EMOTIONS,
    scheme=description.SplitScheme.k_folds(mafw_layout.NUM_FOLDS),
    clip_id="5-digit zero-padded number, 00019..20098, not contiguous (lists write 03747.mp4)",
    frame_sources=(mafw_layout.FRAMES_DIR.replace(os.sep, "/"),),
    modalities=("pose", "audio", "captions"),
    num_frames=clip_builder.DEFAULT_NUM_FRAMES,
    fields=("votes", "caption_en", "caption_zh"),
    homepage="https://mafw-database.github.io/MAFW/",
))


@datasets.register_builder
class Mafw(clip_builder.ClipBuilder):
    """MAFW clips as 16 frames each (or `_t<n>`), with single or compound labels, folds, captions and votes."""

    DESCRIPTION = DESCRIPTION
    CITATION = _CITATION
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frames, label (11 single or 43 compound classes), clip id, frame count, test fold, "
                              "captions (caption_zh, caption_en), votes int32[11]; splits fold1..fold5 and "
                              "unlabelled; _audio and _pose configs."}
    BUILDER_CONFIGS = clip_builder.ClipBuilder.grid(views=("", COMPOUND))
    DEFAULT_CONFIG_NAME = "frames112"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MAFW is licence-restricted and is never downloaded by this builder. Request it from the MAFW
authors (https://mafw-database.github.io/MAFW/), unpack it, and pass the folder that holds
`data/frames/`, `data/clips/` (the videos with sound, for the _audio configs), `Labels/` and
`{mafw_layout.SPLIT_DIR}/` as the manual dir (quote it: the folder name has spaces and an '&').

    python -m tfds_dfew.build --dataset mafw --manual_dir /path/to/MAFW --data_dir ~/tensorflow_datasets
"""

    def __init__(self, *, caption_priority: str = "lists", **kwargs):
        """caption_priority: which caption is stored where a with_caption list and descriptive_text.xlsx both
        hold one for a clip and they differ: 'lists' (default) or 'spreadsheet'. Other options: `ClipBuilder`;
        `strict` also stops on listed clips without a frame folder and on labels that differ between the
        split lists and the workbooks.
        """
        if caption_priority not in ("lists", "spreadsheet"):
            raise ReleaseError(f"caption_priority must be 'lists' or 'spreadsheet', got {caption_priority!r}")
        self._caption_priority = caption_priority
        self._compound_names: tuple[str, ...] | None = None
        self.release: mafw_release.MafwRelease | None = None
        super().__init__(**kwargs)

    @classmethod
    def check_release(cls, root: str) -> None:
        mafw_layout.check_root(root)

    @property
    def view(self) -> str:
        return "compound" if self.builder_config.view == COMPOUND else "single"

    # -- Classes of the view -------------------------------------------------------------------------

    def _class_names(self) -> tuple[str, ...]:
        if self.view == "single":
            return tuple(self.DESCRIPTION.class_names)
        if self._compound_names is None:
            self._compound_names = self._read_compound_names()
        return self._compound_names

    def _read_compound_names(self) -> tuple[str, ...]:
        """From the release's compound lists (manual_dir), else from an existing build's metadata."""
        if self._manual_dir_hint:
            mafw_layout.check_root(self._manual_dir_hint)
            return mafw_release.compound_class_names(self._manual_dir_hint)
        stored = os.path.join(os.fspath(self._data_dir), "metadata.json") if getattr(self, "_data_dir", None) else ""
        if stored and os.path.isfile(stored):
            with open(stored) as f:
                return tuple(json.load(f)["dataset"]["class_names"])
        raise ReleaseError(f"mafw/{self.builder_config.name}: the compound view's classes (43 in MAFW) are read from "
                           "the release's compound split lists; pass manual_dir=<the MAFW folder> (python -m "
                           "tfds_dfew.build --dataset mafw --manual_dir ... --config frames112_compound), or open an "
                           "existing build with tfds_dfew.datasets.open_built.")

    def _basic_emotions(self) -> tuple[str | None, ...]:
        return tuple(mafw_layout.basic_emotion(n) for n in self._class_names())

    def _extra_features(self) -> dict:
        return {"votes": tfds.features.Tensor(shape=(mafw_layout.NUM_CLASSES,), dtype=np.int32),
                "caption_en": tfds.features.Text(), "caption_zh": tfds.features.Text()}

    def _default_audio_dir(self, root: str) -> str:
        return os.path.join(root, mafw_layout.CLIPS_DIR)

    # -- The release -----------------------------------------------------------------------------------

    def _plan(self, root: str) -> Plan:
        release = mafw_release.read_release(root, self.view, strict=self._strict,
                                            caption_priority=self._caption_priority)
        if release.class_names != self._class_names():
            raise ReleaseError(f"{root}: the compound split lists name other classes ({len(release.class_names)}) "
                               f"than this builder was made with ({len(self._class_names())}); make the builder "
                               "with manual_dir set to this release.")
        self.release = release
        plan = release.plan()
        meta = plan.metadata
        if not self._unlabelled:
            meta["unlabelled_source"] = "left out"
        meta["report"] = list(meta.get("report", []))
        if release.unlabelled_missing:
            meta["report"].append(f"clips without a {self.view} label and without a frame folder (left out): "
                                  + mafw_release.describe_ids(release.unlabelled_missing, 8))
        return plan

    def _options(self) -> dict:
        return {**super()._options(), "caption_priority": self._caption_priority}
