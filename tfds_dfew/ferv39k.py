"""The TFDS builder for FERV39k: face-crop clips with labels, scenes and the official train/test split.

Stored splits `train` (31,088 clips in the official lists) and `test` (7,847), fold 0; one record
per clip with frames (tfds_dfew.clip_builder gives the features every clip dataset shares):

    frames        num_frames JPEGs uint8[S, S, 3], sampled uniformly over the clip's face crops
                  (a clip of fewer frames, 3,257 train and 813 test clips below 16, repeats frames)
    label         ClassLabel: angry, disgust, fear, happy, neutral, sad, surprise (the Emotion
                  folders in alphabetical order; each is the basic emotion of the same name)
    scene         ClassLabel over the 22 scenes (Action .. War), for per-scene UAR / WAR
    clip_id       'Scene/Emotion/NNNN' (the number alone repeats across folders)
    num_frames    the clip's own frame count (8..47 in the real data)
    fold          0 (one train/test split)
    pose, audio   `_pose`: OpenPose keypoints from <manual_dir>/OpenPose/<Scene>/<Emotion>/<NNNN>/;
                  `_audio`: the sound of 0_7_LabelClips/<Scene>/<Emotion>/<NNNN>.mp4 (int16 mono
                  16 kHz; a clip without a video is stored with audio_length 0 and reported)

Metadata besides the shared keys: `scene_counts` {split: {scene: clips}} (as written),
`listed_counts` and `official_counts` {split: [7]}, `missing_by_split`, `short_clips`,
`face_crop_dir`, and `report` (the reader's findings, printed by `tfds_dfew.build.summary`).

    python -m tfds_dfew.build --dataset ferv39k --manual_dir ~/FERV39k --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from tfds_dfew import audio, clip_builder, datasets, description, ferv39k_release
from tfds_dfew.ferv39k_release import CLASS_NAMES, SCENES
from tfds_dfew.plan import Plan

_CITATION = """\
@inproceedings{wang2022ferv39k,
  title={FERV39k: A Large-Scale Multi-Scene Dataset for Facial Expression Recognition in Videos},
  author={Wang, Yan and Sun, Yixuan and Huang, Yiwen and Liu, Zhongying and Gao, Shuyong and Zhang, Wei
          and Ge, Weifeng and Zhang, Wenqiang},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}
"""

DESCRIPTION = description.DatasetDescription(
    name="ferv39k",
    title="FERV39k",
    class_names=CLASS_NAMES,
    basic_emotions=CLASS_NAMES,  # one-to-one by name
    scheme=description.SplitScheme.train_test(),
    clip_id="the clip's path Scene/Emotion/NNNN, e.g. Crime/Angry/0063 (the 4-digit number restarts at 0000 "
            "in each of the 154 Scene/Emotion folders)",
    frame_sources=(ferv39k_release.FACE_DIR,),
    modalities=("pose", "audio"),
    num_frames=clip_builder.DEFAULT_NUM_FRAMES,
    fields=("scene",),
    group_by="scene",
    homepage="https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html",
)


@datasets.register_builder
class Ferv39k(clip_builder.ClipBuilder):
    """FERV39k clips as 16 face frames each (or `_t<n>`), with label, scene and the official train/test split."""

    DESCRIPTION = DESCRIPTION
    CITATION = _CITATION
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frames, label, scene, clip id (Scene/Emotion/NNNN), own frame count; splits train and "
                              "test; optional OpenPose keypoints and sound."}
    BUILDER_CONFIGS = clip_builder.ClipBuilder.grid()
    DEFAULT_CONFIG_NAME = "frames112"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
FERV39k is distributed by its authors on request and is never downloaded by this builder. Ask for it
(https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html), unpack it, and pass the folder that holds
`4_setups/All_scenes/{train_All,test_All}.csv` and `2_ClipsforFaceCrop/` as the manual dir (a doubled
`2_ClipsforFaceCrop/2_ClipsforFaceCrop/`, as the zip unpacks, is fine). The `_audio` configs also read
the raw clips with their sound, `0_7_LabelClips/<Scene>/<Emotion>/<NNNN>.mp4` (or pass --audio_dir).
`3_ClipsforScenImages/` is not needed.

    python -m tfds_dfew.build --dataset ferv39k --manual_dir /path/to/FERV39k --data_dir ~/tensorflow_datasets
"""

    @classmethod
    def check_release(cls, root: str) -> None:
        ferv39k_release.check_root(root)

    def _plan(self, root: str) -> Plan:
        return ferv39k_release.plan_release(root, strict=self._strict,
                                            num_frames=int(self.builder_config.num_frames))

    def _extra_features(self) -> dict:
        return {"scene": tfds.features.ClassLabel(names=list(SCENES))}

    def _default_audio_dir(self, root: str) -> str:
        return ferv39k_release.video_dir(root)

    def _audio_path(self, entry) -> str | None:
        """`<audio_dir>/<Scene>/<Emotion>/<NNNN>.mp4`, below the level of audio_dir that holds the scene folders."""
        if entry.audio_path:
            return entry.audio_path
        if getattr(self, "_video_level", None) is None:
            self._video_level = ferv39k_release.scene_level(self._audio_dir) or self._audio_dir
        return ferv39k_release.find_video(self._video_level, entry.clip_id)

    def _split_generators(self, dl_manager):
        splits = super()._split_generators(dl_manager)
        self.info.metadata["scene_counts"] = {}  # counted again as the clips are written
        if self.builder_config.audio and os.path.isdir(self._audio_dir):
            self.info.metadata["report"] = list(self.info.metadata.get("report", [])) + [
                f"sound read from {self._audio_dir} (int16 mono, {audio.SAMPLE_RATE} Hz)"]
        return splits

    def _collect(self, split: str, results):
        counts = self.info.metadata["scene_counts"].setdefault(split, dict.fromkeys(SCENES, 0))
        for key, example in super()._collect(split, results):
            counts[example["scene"]] += 1
            yield key, example
