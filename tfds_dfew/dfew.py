"""The TFDS builder for DFEW: one record per clip, splits fold1..fold5 (+ unlabelled).

Each stored fold split is one official test set; the training set of fold k is the other four
(`release.fold_splits(k)`), so every single-labelled clip is stored once. Clips without a single label
(multi-labelled: label 0 in Annotation/annotation.xlsx) go to the split `unlabelled` with label
-1 and fold 0, for self-supervised use; every record carries the clip's 7 annotator vote counts
(`votes`, zeros when the release has no annotation). Frames are JPEG bytes encoded with Pillow
and records are written as array_record: neither building nor reading needs TensorFlow.

The `_audio` configs (`frames{112,64,224}_audio`, `frames{112,64,224}_pose_audio`) add each clip's
whole sound track from `Clip/original/<id>.mp4`, int16 mono 16 kHz (`audio`, `audio_length`; a
clip without usable sound is stored with audio_length 0 and reported, see tfds_dfew/audio.py).

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tfds_dfew import audio, openpose, release

log = logging.getLogger(__name__)

_DESCRIPTION = """\
DFEW (Dynamic Facial Expression in-the-Wild): 16,372 movie clips, 11,697 of them with a single
label among 7 basic emotions (happy, sad, neutral, angry, surprise, disgust, fear). Each record
holds 16 face-aligned frames of one clip, its label, id, original frame count, test fold and the
7 annotator vote counts per class (int32[7], training order; all zero when the release has no
Annotation/annotation.xlsx). Splits fold1..fold5 are the official five test sets; fold k's
training set is the union of the other four. Split `unlabelled` holds the clips without a single
label (multi-labelled), with label -1 and fold 0; it is absent when the release has none.
"""

_AUDIO_DESCRIPTION = """\
Audio configs (`*_audio`): each record also holds the clip's whole sound track from
Clip/original/<id>.mp4 as `audio` (int16 mono at 16 kHz, variable length; the 16 frames span the
whole clip) and `audio_length` (int32, the number of samples; 0 = no usable sound, then `audio`
is empty). Metadata `clips_without_audio` maps each such clip id to the reason.
"""

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


@dataclasses.dataclass
class DfewConfig(tfds.core.BuilderConfig):
    """Stored frame size (pixels, square) of a build, and whether OpenPose keypoints and the sound are stored."""

    frame_size: int = 112
    pose: bool = False
    audio: bool = False


def _frame_config(size: int, pose: bool = False, with_audio: bool = False) -> DfewConfig:
    description = (f"16 face frames per clip at {size}x{size} px, JPEG-encoded"
                   + (", with OpenPose keypoints float32[16, 137, 3] of the same frames." if pose else "."))
    if with_audio:
        description += f" With the clip's whole sound track, int16 mono at {audio.SAMPLE_RATE} Hz."
    return DfewConfig(
        name=f"frames{size}" + ("_pose" if pose else "") + ("_audio" if with_audio else ""),
        description=description,
        frame_size=size,
        pose=pose,
        audio=with_audio,
    )


class _StrictAudioError(release.ReleaseError):
    """A clip without usable sound under strict: stops the build even with skip_bad_clips."""


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8[H, W, 3] -> JPEG bytes (Pillow, 4:4:4 chroma so small faces keep their colour edges)."""

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


class Dfew(tfds.core.GeneratorBasedBuilder):
    """DFEW clips as 16 frames each, with labels and official folds."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Frames, label, clip id, original frame count, test fold.",
        "1.1.0": "Feature `votes` (int32[7] annotator votes from Annotation/annotation.xlsx, zeros without it); "
                 "split `unlabelled` (multi-labelled clips, label -1, fold 0); metadata `has_votes`, "
                 "`unlabelled_clips`, `label_conflicts`; `class_counts` counts labelled clips only.",
    }
    # The audio configs come after the original six, which stay as they were.
    BUILDER_CONFIGS = ([_frame_config(s, pose) for pose in (False, True) for s in (112, 64, 224)]
                       + [_frame_config(s, pose, True) for pose in (False, True) for s in (112, 64, 224)])
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

    def __init__(
        self,
        *,
        frame_source: str = "auto",
        skip_bad_clips: bool = False,
        strict: bool = False,
        num_workers: int | None = None,
        openpose_dir: str | None = None,
        unlabelled: bool = True,
        audio_dir: str | None = None,
        **kwargs,
    ):
        """Extra options (besides TFDS's own):

        Args:
          frame_source: 'auto' (16-frame folder when a clip has one, else sample the
            variable-length folder), 'clip_224x224_16f' or 'clip_224x224'.
          skip_bad_clips: leave out (and report) clips whose frames cannot be read, instead of
            stopping the build with an error naming the file.
          strict: clips listed in a CSV without a frame folder, and clips whose CSV label differs
            from the annotation's, stop the build instead of being reported (and left out, or
            kept with the CSV label). Real DFEW lacks frames for 362 listed clips.
          num_workers: threads that decode and encode frames (default: CPU count).
          openpose_dir: OpenPose output, one folder of `*_keypoints.json` per clip id (`_pose`
            configs only; default `<manual_dir>/OpenPose`). Keypoints are read for the same 16
            frames as the images; a clip without a folder gets all-missing keypoints (reported).
          unlabelled: store the clips without a single label as split `unlabelled` (default).
            False leaves them out (metadata `unlabelled_clips` is then 0). The option is not part
            of the dataset's name: build into another data_dir to keep both variants.
          audio_dir: the clips' original videos with sound, `<id>.mp4` (`_audio` configs only;
            default `<manual_dir>/Clip/original`). A clip without a video, without an audio
            stream, with undecodable or empty sound is stored with audio_length 0 and reported
            (metadata `clips_without_audio`); with strict it stops the build. A missing folder
            stops a strict build; otherwise every clip is stored without sound (all reported).
        """
        self._openpose_dir = openpose_dir
        self._audio_dir = audio_dir
        self._audio_dir_exists = False
        self.no_audio: dict[str, str] = {}  # clip id -> why it is stored without sound
        self.no_pose: list[str] = []  # clips without OpenPose output
        self._frame_source = frame_source
        self._skip_bad_clips = skip_bad_clips
        self._strict = strict
        self._unlabelled = unlabelled
        self._num_workers = num_workers or os.cpu_count() or 1
        self.skipped: list[tuple[str, str]] = []  # (clip id, reason) of left-out clips
        self.plan: release.ReleasePlan | None = None
        super().__init__(**kwargs)

    def _log_download_bytes(self) -> None:
        # TFDS prints "Downloading and preparing dataset ... (download: Unknown size)" here; a DFEW build
        # reads the user's own copy of the release and downloads nothing, so it says that instead.
        print(f"Building dfew/{self.builder_config.name} from the DFEW release in {self._manual_dir_for_log()} into "
              f"{self.data_dir} (nothing is downloaded)...", flush=True)

    def _log_download_done(self) -> None:
        print(f"dfew/{self.builder_config.name} built in {self.data_dir}; later builds reuse it.", flush=True)

    def _manual_dir_for_log(self) -> str:
        return str(getattr(self, "_manual_dir_hint", "") or "the manual_dir")

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.frame_size
        return self.dataset_info_from_configs(
            description=_DESCRIPTION + (_AUDIO_DESCRIPTION if self.builder_config.audio else ""),
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Sequence(
                        tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
                        length=release.NUM_FRAMES,
                    ),
                    "label": tfds.features.ClassLabel(names=list(release.CLASS_NAMES)),
                    "clip_id": tfds.features.Text(),
                    "num_frames": np.int32,
                    "fold": np.int32,
                    "votes": tfds.features.Tensor(shape=(len(release.CLASS_NAMES),), dtype=np.int32),
                    **({"keypoints": tfds.features.Tensor(
                        shape=(release.NUM_FRAMES, 137, 3), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)}
                       if self.builder_config.pose else {}),
                    **({"audio": tfds.features.Tensor(
                        shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.ZLIB),
                        "audio_length": np.int32}
                       if self.builder_config.audio else {}),
                }
            ),
            supervised_keys=("frames", "label"),
            homepage="https://dfew-dataset.github.io",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        plan = release.plan_release(root, frame_source=self._frame_source)
        self.plan = plan
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
        if self.builder_config.pose:
            self._openpose_dir = self._openpose_dir or os.path.join(root, "OpenPose")
            if not os.path.isdir(self._openpose_dir):
                raise release.ReleaseError(
                    f"{self._openpose_dir}: no OpenPose output folder. Run OpenPose over the clips (one folder of "
                    "*_keypoints.json per clip id) and pass it as --openpose_dir, or build a config without _pose.")
        if self.builder_config.audio:
            self._check_audio_dir(root)
        self.info.metadata["missing_clips"] = [c.clip_id for c in plan.missing]
        self.info.metadata["frame_source"] = self._frame_source
        self.info.metadata["has_votes"] = plan.has_votes
        self.info.metadata["label_conflicts"] = [c for c, _, _ in plan.label_conflicts]
        self.info.metadata["unannotated_clips"] = list(plan.unannotated)
        self.info.metadata["left_out_clips"] = [c for c, _ in plan.left_out]
        self.info.metadata["unlabelled_source"] = plan.unlabelled_source if self._unlabelled else "left out"
        self.info.metadata["unlabelled_without_frames"] = list(plan.unlabelled_missing)
        self.info.metadata["unlabelled_clips"] = 0  # counted as they are written
        self.info.metadata["unlabelled_available"] = len(plan.unlabelled)
        splits = {
            f"fold{k}": self._generate_examples(plan.by_fold(k))
            for k in range(1, release.NUM_FOLDS + 1)
        }
        if self._unlabelled and plan.unlabelled:  # no empty split when the release has none
            splits["unlabelled"] = self._generate_examples(plan.unlabelled)
        return splits

    def _check_audio_dir(self, root: str) -> None:
        """Resolves the folder of original videos; a missing one stops a strict build, else is reported."""
        self._audio_dir = self._audio_dir or os.path.join(root, "Clip", "original")
        self._audio_dir_exists = os.path.isdir(self._audio_dir)
        if not self._audio_dir_exists:
            if self._strict:
                raise release.ReleaseError(
                    f"{self._audio_dir}: no folder of original videos (<clip id>.mp4 with sound). Unpack Clip/original "
                    "from the DFEW release there or pass its folder as --audio_dir; build without --strict to store "
                    "every clip without sound (audio_length 0), or build a config without _audio.")
            log.warning("%s: no folder of original videos; every clip is stored without sound (audio_length 0). "
                        "Pass --audio_dir, or unpack Clip/original from the DFEW release.", self._audio_dir)
        self.info.metadata["audio_dir"] = self._audio_dir
        self.info.metadata["audio_sample_rate"] = audio.SAMPLE_RATE
        self.info.metadata["clips_without_audio"] = {}

    def _clip_audio(self, clip_id: str) -> np.ndarray:
        """The clip's sound, int16 mono at 16 kHz; empty (and the reason kept) when it has none usable."""
        path = audio.find_original(self._audio_dir, clip_id) if self._audio_dir_exists else None
        samples, reason = audio.clip_audio(path)
        if reason:
            where = path or os.path.join(self._audio_dir, f"{clip_id}.mp4")
            if self._strict:
                raise _StrictAudioError(
                    f"clip {clip_id}: {reason} ({where}). Restore the clip's original video, or build without "
                    "--strict to store it without sound (audio_length 0, reported in clips_without_audio).")
            self.no_audio[clip_id] = reason
            if self._audio_dir_exists:
                log.warning("Clip %s has no usable sound (%s: %s); stored with audio_length 0.", clip_id, where, reason)
        return samples

    def _encode_clip(self, entry: release.ClipEntry):
        size = self.builder_config.frame_size
        frames, _, num_frames = release.load_clip(entry, size)
        if entry.source != "clip_224x224":
            num_frames = release.original_frame_count(entry, self.plan.root)
        example = {
            "frames": [encode_jpeg(f) for f in frames],
            "label": entry.label,
            "clip_id": entry.clip_id,
            "num_frames": num_frames,
            "fold": entry.fold,
            "votes": self.plan.votes_of(entry.clip_id),
        }
        if self.builder_config.pose:
            example["keypoints"] = self._keypoints(entry, num_frames)
        if self.builder_config.audio:
            samples = self._clip_audio(entry.clip_id)
            example["audio"] = samples
            example["audio_length"] = np.int32(samples.shape[0])
        return example

    def _keypoints(self, entry: release.ClipEntry, num_frames: int) -> np.ndarray:
        """OpenPose points float32[16, 137, 3] for the frames the images were sampled from."""

        folder = os.path.join(self._openpose_dir, entry.clip_id)
        if not os.path.isdir(folder):
            self.no_pose.append(entry.clip_id)
            return np.zeros((release.NUM_FRAMES, openpose.NUM_KEYPOINTS, 3), np.float32)
        frames = openpose.list_frames(folder)
        length = max(num_frames, len(frames)) if frames else num_frames
        first = frames[0][0] if frames else 0  # 0-based (OpenPose on a video) or 1-based (on images)
        try:
            clip = openpose.read_clip(folder, frame_indices=release.sample_indices(length), first_frame=min(first, 1))
        except openpose.OpenPoseError as e:
            raise release.ReleaseError(f"clip {entry.clip_id}: {e}") from None
        return clip.points

    def _generate_examples(self, entries):
        def work(entry):
            try:
                return entry, self._encode_clip(entry), None
            except _StrictAudioError:
                raise
            except release.ReleaseError as e:
                if not self._skip_bad_clips:
                    raise
                return entry, None, str(e)

        with concurrent.futures.ThreadPoolExecutor(self._num_workers) as pool:
            try:
                yield from self._collect(pool.map(work, entries))
            except BaseException:  # an error (or the consumer stopping) ends the build: drop the queued clips
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _collect(self, results):
        """Yields (key, example) of the encoded clips in order and keeps the counts and reports."""
        for entry, example, error in results:
            if example is None:
                log.warning("Leaving out clip %s: %s", entry.clip_id, error)
                self.skipped.append((entry.clip_id, error))
                self.info.metadata.setdefault("skipped_clips", []).append(entry.clip_id)
                continue
            if self.no_pose:
                self.info.metadata["clips_without_openpose"] = sorted(set(self.no_pose))
            if entry.clip_id in self.no_audio:
                self.info.metadata["clips_without_audio"] = dict(sorted(self.no_audio.items()))
            if entry.label == release.UNLABELLED:
                self.info.metadata["unlabelled_clips"] = self.info.metadata.get("unlabelled_clips", 0) + 1
            else:  # class counts of the labelled clips only
                counts = self.info.metadata.setdefault("class_counts", {})
                fold_counts = counts.setdefault(f"fold{entry.fold}", [0] * len(release.CLASS_NAMES))
                fold_counts[entry.label] += 1
            yield entry.clip_id, example

