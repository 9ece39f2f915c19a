"""The builder every video-emotion dataset shares: clips of sampled face frames, labels, splits, modalities.

A dataset builder (DFEW, MAFW, FERV39k, a plug-in) subclasses `ClipBuilder`, declares its
`DESCRIPTION` (tfds_dfew.description) and says how to read its release (`_plan`: which clips go to
which stored split, with their frame folders and per-clip fields). Everything else is here, once:

- configs `frames<size>[_pose][_audio][_<view>][_t<frames>]` (`config_name`): the stored frame size,
  OpenPose keypoints, the sound track, another label view (MAFW's `compound`), and the frames
  stored per clip (16 unless `_t<n>`, e.g. `frames112_t32`; any such name can be built);
- per clip: `frames` (num_frames JPEGs sampled uniformly over the clip, repeated for short clips),
  `label` (ClassLabel with the dataset's class names), `clip_id`, `num_frames` (the clip's own frame
  count), `fold` (its test fold, 0 outside a folds scheme), the dataset's own fields, `pose`
  float32[T, 137, 3] (`_pose` configs), `audio` int16[n] 16 kHz mono + `audio_length` (`_audio`);
- threads decoding and encoding frames; `skip_bad_clips` (a clip whose frames cannot be read is
  left out and reported, one whose OpenPose JSON cannot be read keeps its frames with the pose
  masked); a split that would be empty stops the build with one message;
- metadata: `dataset` (the description as built), `class_counts` per split, what was left out or
  stored without pose or sound and why, and `build` (where it was built from, with which options,
  and a digest of the clip ids of every split: the fingerprint cached features are checked against).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import audio, description as description_lib, frames as frames_lib, openpose
from tfds_dfew.plan import ClipEntry, Plan, describe_ids, ids_digest  # noqa: F401  (part of this module's API)
from tfds_dfew.errors import ReleaseError

log = logging.getLogger(__name__)

DEFAULT_NUM_FRAMES = 16
POSE_KEY = "pose"  # the pose modality's dataset feature (DFEW builds before 1.2.0 called it `keypoints`)
AUDIO_KEYS = ("audio", "audio_length")
_NAME = re.compile(r"frames(?P<size>\d+)(?P<pose>_pose)?(?P<audio>_audio)?(?:_(?P<view>[a-z]+))?(?:_t(?P<t>\d+))?")


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
    """One build of a dataset: stored frame size, frames per clip, optional pose and sound, the label view."""

    frame_size: int = 112
    pose: bool = False
    audio: bool = False
    num_frames: int = DEFAULT_NUM_FRAMES
    view: str = ""  # '' the dataset's main labels; another view (MAFW: 'compound') changes the classes


def config_name(frame_size: int, pose: bool = False, audio_: bool = False, num_frames: int = DEFAULT_NUM_FRAMES,
                view: str = "") -> str:
    """'frames112', 'frames112_pose_audio', 'frames224_compound', 'frames112_t32', ..."""
    return (f"frames{int(frame_size)}" + ("_pose" if pose else "") + ("_audio" if audio_ else "")
            + (f"_{view}" if view else "") + (f"_t{int(num_frames)}" if int(num_frames) != DEFAULT_NUM_FRAMES else ""))


def parse_config_name(name: str) -> dict | None:
    """The options a config name spells (see `config_name`), or None when it is not one."""
    m = _NAME.fullmatch(str(name))
    if m is None or (m.group("view") in ("pose", "audio")):
        return None
    return {"frame_size": int(m.group("size")), "pose": bool(m.group("pose")), "audio": bool(m.group("audio")),
            "view": m.group("view") or "", "num_frames": int(m.group("t") or DEFAULT_NUM_FRAMES)}


class _StrictAudioError(ReleaseError):
    """A clip without usable sound under strict: stops the build even with skip_bad_clips."""


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the clip datasets; a subclass sets DESCRIPTION and BUILDER_CONFIGS and writes `_plan`."""

    DESCRIPTION: description_lib.DatasetDescription
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack the release and pass its folder as --manual_dir."
    DEFAULT_OPENPOSE_DIR = "OpenPose"  # under the release root

    @classmethod
    def grid(cls, sizes=(112, 64, 224), *, pose: bool = True, audio_: bool = True, views=("",)) -> list[ClipConfig]:
        """The named configs: every frame size, with and without pose and sound, for each view."""
        out = []
        for view in views:
            for a in ((False, True) if audio_ else (False,)):
                for p in ((False, True) if pose else (False,)):
                    for s in sizes:
                        out.append(cls.make_config(s, pose=p, audio_=a, view=view))
        return out

    @classmethod
    def make_config(cls, frame_size: int, *, pose: bool = False, audio_: bool = False,
                    num_frames: int = DEFAULT_NUM_FRAMES, view: str = "") -> ClipConfig:
        what = f"{num_frames} face frames per clip at {frame_size}x{frame_size} px, JPEG-encoded"
        if pose:
            what += f", with OpenPose keypoints float32[{num_frames}, 137, 3] of the same frames"
        if audio_:
            what += f", with the clip's whole sound track (int16 mono at {audio.SAMPLE_RATE} Hz)"
        if view:
            what += f"; label view '{view}'"
        return ClipConfig(name=config_name(frame_size, pose, audio_, num_frames, view), description=what + ".",
                          frame_size=int(frame_size), pose=pose, audio=audio_, num_frames=int(num_frames), view=view)

    @classmethod
    def config_from_name(cls, name: str) -> ClipConfig:
        """A config by name: a named one, or any `config_name` spelling the builder supports."""
        for c in cls.BUILDER_CONFIGS:
            if c.name == name:
                return c
        options = parse_config_name(name)
        known = sorted({c.name for c in cls.BUILDER_CONFIGS}, key=len)
        if options is None:
            raise ReleaseError(f"{cls.DESCRIPTION.name}: unknown config {name!r}; expected "
                               f"frames<size>[_pose][_audio][_t<frames>], e.g. {', '.join(known[:4])}.")
        views = {c.view for c in cls.BUILDER_CONFIGS}
        if options["view"] not in views:
            raise ReleaseError(f"{cls.DESCRIPTION.name}: config {name!r} names the label view {options['view']!r}; "
                               f"this dataset has {sorted(v or '(main)' for v in views)}.")
        if options["pose"] and not any(c.pose for c in cls.BUILDER_CONFIGS):
            raise ReleaseError(f"{cls.DESCRIPTION.name}: config {name!r} asks for OpenPose keypoints, which this "
                               "dataset's builder does not store.")
        if options["audio"] and not any(c.audio for c in cls.BUILDER_CONFIGS):
            raise ReleaseError(f"{cls.DESCRIPTION.name}: config {name!r} asks for sound, which this dataset's builder "
                               "does not store.")
        if not 16 <= options["frame_size"] <= 1024 or not 1 <= options["num_frames"] <= 512:
            raise ReleaseError(f"{cls.DESCRIPTION.name}: config {name!r}: frame size must be 16..1024 px and frames "
                               "per clip 1..512.")
        return cls.make_config(options["frame_size"], pose=options["pose"], audio_=options["audio"],
                               num_frames=options["num_frames"], view=options["view"])

    def __init__(self, *, config=None, manual_dir: str | None = None, skip_bad_clips: bool = False,
                 strict: bool = False, num_workers: int | None = None, openpose_dir: str | None = None,
                 audio_dir: str | None = None, unlabelled: bool = True, **kwargs):
        """Options every clip builder takes (besides TFDS's own):

        Args:
          config: a config name (any `config_name` spelling) or ClipConfig; default the first one.
          manual_dir: the unpacked release (also given to download_and_prepare); a builder whose
            classes come from the release (a label view) reads them from here.
          skip_bad_clips: leave out (and report) clips whose frames cannot be read, and store a clip
            whose OpenPose JSON cannot be read with its pose masked, instead of stopping the build.
          strict: problems that are otherwise reported (listed clips without frames, clips without
            usable sound, ...) stop the build.
          num_workers: threads that decode and encode frames (default: CPU count).
          openpose_dir: OpenPose output, one folder of `*_keypoints.json` per clip (`_pose` configs;
            default `<manual_dir>/OpenPose`, per clip `<openpose_dir>/<clip id>`). A clip without a
            folder gets all-missing keypoints (reported).
          audio_dir: where the videos with sound are (`_audio` configs; default the release's own).
          unlabelled: store the clips without a single label as split `unlabelled` (where the
            dataset has them).
        """
        if isinstance(config, str):
            config = self.config_from_name(config)
        self._manual_dir_hint = os.fspath(manual_dir) if manual_dir else ""
        self._openpose_dir = openpose_dir
        self._audio_dir = audio_dir
        self._audio_dir_exists = False
        self._skip_bad_clips = skip_bad_clips
        self._strict = strict
        self._unlabelled = unlabelled
        self._num_workers = num_workers or os.cpu_count() or 1
        self.no_audio: dict[str, str] = {}  # clip id -> why it is stored without sound
        self.no_pose: list[str] = []  # clips without OpenPose output
        self.bad_pose: dict[str, str] = {}  # clip id -> why its OpenPose JSON was not read (stored masked)
        self.skipped: list[tuple[str, str]] = []  # (clip id, reason) of left-out clips
        self.plan: Plan | None = None
        self._written: dict[str, list[str]] = {}
        super().__init__(config=config, **kwargs)

    # -- What a subclass provides ----------------------------------------------------------------------

    @classmethod
    def check_release(cls, root: str) -> None:
        """Raises ReleaseError unless `root` looks like the unpacked release (default: a non-empty folder)."""
        if not root or not os.path.isdir(root) or not os.listdir(root):
            raise ReleaseError(f"{cls.DESCRIPTION.title} folder {root!r} does not exist or is empty. Unpack the "
                               f"release and pass its folder as --manual_dir.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _plan(self, root: str) -> Plan:
        """Reads the release under `root`: the clips of every stored split (label -1 in `unlabelled`)."""
        raise NotImplementedError

    def _class_names(self) -> tuple[str, ...]:
        """The class names of this config's label view (default: the description's)."""
        return tuple(self.DESCRIPTION.class_names)

    def _basic_emotions(self) -> tuple[str | None, ...]:
        return tuple(self.DESCRIPTION.basic_emotions)

    def _extra_features(self) -> dict:
        """The dataset's own per-clip features (e.g. DFEW's votes, FERV39k's scene, MAFW's captions)."""
        return {}

    def _original_count(self, entry: ClipEntry, counted: int) -> int:
        """The clip's own frame count, stored as `num_frames` (default: the frames in its folder)."""
        return counted

    def _openpose_folder(self, entry: ClipEntry) -> str:
        return os.path.join(self._openpose_dir, *entry.clip_id.split("/"))

    def _default_audio_dir(self, root: str) -> str:
        return root

    def _audio_path(self, entry: ClipEntry) -> str | None:
        """The clip's video with sound (default: the plan's, else `<audio_dir>/<clip id>.<video ext>`)."""
        if entry.audio_path:
            return entry.audio_path
        parts = entry.clip_id.split("/")
        return audio.find_original(os.path.join(self._audio_dir, *parts[:-1]), parts[-1])

    # -- TFDS -------------------------------------------------------------------------------------------

    def description(self) -> description_lib.DatasetDescription:
        """This build's description: the dataset's, with its classes, frames per clip and stored modalities."""
        c = self.builder_config
        modalities = [m for m in self.DESCRIPTION.modalities
                      if (m != "pose" or c.pose) and (m != "audio" or c.audio)]
        return self.DESCRIPTION.replace(class_names=self._class_names(), basic_emotions=self._basic_emotions(),
                                        num_frames=int(c.num_frames), modalities=tuple(modalities))

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        names = list(self._class_names())
        features = {
            "frames": tfds.features.Sequence(
                tfds.features.Image(shape=(c.frame_size, c.frame_size, 3), encoding_format="jpeg"),
                length=int(c.num_frames)),
            "label": tfds.features.ClassLabel(names=names),
            "clip_id": tfds.features.Text(),
            "num_frames": np.int32,
            "fold": np.int32,
            **self._extra_features(),
        }
        if c.pose:
            features[POSE_KEY] = tfds.features.Tensor(shape=(int(c.num_frames), openpose.NUM_KEYPOINTS, 3),
                                                      dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
        if c.audio:
            features["audio"] = tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                                     encoding=tfds.features.Encoding.ZLIB)
            features["audio_length"] = np.int32
        return self.dataset_info_from_configs(
            description=self._dataset_text(),
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("frames", "label"),
            homepage=self.DESCRIPTION.homepage,
            citation=getattr(self, "CITATION", ""),
            metadata=tfds.core.MetadataDict(),
        )

    def _dataset_text(self) -> str:
        d = self.DESCRIPTION
        return (f"{d.title}: {len(self._class_names())} classes ({', '.join(self._class_names())}), "
                f"{d.scheme.describe()}. {self.builder_config.description}")

    def _log_download_bytes(self) -> None:
        # TFDS prints "Downloading and preparing dataset ..." here; a build reads the user's own copy of the
        # release and downloads nothing, so it says that instead.
        print(f"Building {self.name}/{self.builder_config.name} from the {self.DESCRIPTION.title} release in "
              f"{self._manual_dir_hint or 'the manual_dir'} into {self.data_dir} (nothing is downloaded)...",
              flush=True)

    def _log_download_done(self) -> None:
        print(f"{self.name}/{self.builder_config.name} built in {self.data_dir}; later builds reuse it.", flush=True)

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        plan = self._plan(root)
        self.plan = plan
        c = self.builder_config
        if c.pose:
            self._openpose_dir = self._openpose_dir or os.path.join(root, self.DEFAULT_OPENPOSE_DIR)
            if not os.path.isdir(self._openpose_dir):
                raise ReleaseError(
                    f"{self._openpose_dir}: no OpenPose output folder. Run OpenPose over the clips (one folder of "
                    "*_keypoints.json per clip id) and pass it as --openpose_dir, or build a config without _pose.")
        if c.audio:
            self._check_audio_dir(root)
        scheme = self.DESCRIPTION.scheme
        empty = [s for s in scheme.stored_splits if not plan.splits.get(s)]
        if empty:
            listed = {s: len(v) for s, v in plan.splits.items() if v}
            raise ReleaseError(
                f"{root}: split{'s' if len(empty) > 1 else ''} {', '.join(empty)} would hold no clip (the release's "
                f"clips with frames fill only {listed or 'no split'}). A {self.DESCRIPTION.title} build stores every "
                f"split of its protocol ({', '.join(scheme.stored_splits)}): restore the frame folders of those "
                "clips, or check that --manual_dir is the whole release.")
        splits = {s: entries for s, entries in plan.splits.items() if entries}
        if not self._unlabelled:
            splits.pop(description_lib.UNLABELLED_SPLIT, None)
        meta = self.info.metadata
        meta.update(plan.metadata)
        meta["dataset"] = self.description().to_json()
        meta["missing_clips"] = list(plan.missing)
        meta["class_counts"] = {}
        meta["skipped_clips"] = []
        meta["skip_reasons"] = {}
        meta["unlabelled_clips"] = 0  # counted as they are written
        meta["build"] = {"manual_dir": os.path.abspath(root), "config": c.name, "options": self._options(),
                         "splits": {}}
        return {split: self._generate_examples(split, entries) for split, entries in splits.items()}

    def _options(self) -> dict:
        """The build options that change what is stored (part of the build fingerprint)."""
        return {"skip_bad_clips": bool(self._skip_bad_clips), "strict": bool(self._strict),
                "unlabelled": bool(self._unlabelled),
                "openpose_dir": os.path.abspath(self._openpose_dir) if self._openpose_dir else "",
                "audio_dir": os.path.abspath(self._audio_dir) if self._audio_dir else ""}

    def _check_audio_dir(self, root: str) -> None:
        """Resolves the folder of videos with sound; a missing one stops a strict build, else is reported."""
        self._audio_dir = self._audio_dir or self._default_audio_dir(root)
        self._audio_dir_exists = os.path.isdir(self._audio_dir)
        if not self._audio_dir_exists:
            if self._strict:
                raise ReleaseError(
                    f"{self._audio_dir}: no folder of videos with sound. Unpack the release's videos there or pass "
                    "their folder as --audio_dir; build without --strict to store every clip without sound "
                    "(audio_length 0), or build a config without _audio.")
            log.warning("%s: no folder of videos with sound; every clip is stored without sound (audio_length 0). "
                        "Pass --audio_dir, or unpack the release's videos.", self._audio_dir)
        self.info.metadata["audio_dir"] = self._audio_dir
        self.info.metadata["audio_sample_rate"] = audio.SAMPLE_RATE
        self.info.metadata["clips_without_audio"] = {}

    # -- One clip ---------------------------------------------------------------------------------------

    def _clip_audio(self, entry: ClipEntry) -> np.ndarray:
        """The clip's sound, int16 mono at 16 kHz; empty (and the reason kept) when it has none usable."""
        path = self._audio_path(entry) if (self._audio_dir_exists or entry.audio_path) else None
        samples, reason = audio.clip_audio(path)
        if reason:
            where = path or os.path.join(self._audio_dir, f"{entry.clip_id}.mp4")
            if self._strict:
                raise _StrictAudioError(
                    f"clip {entry.clip_id}: {reason} ({where}). Restore the clip's video, or build without --strict "
                    "to store it without sound (audio_length 0, reported in clips_without_audio).")
            self.no_audio[entry.clip_id] = reason
            if self._audio_dir_exists:
                log.warning("Clip %s has no usable sound (%s: %s); stored with audio_length 0.", entry.clip_id, where,
                            reason)
        return samples

    def _keypoints(self, entry: ClipEntry, num_frames: int) -> np.ndarray:
        """OpenPose points float32[T, 137, 3] for the frames the images were sampled from."""
        t = int(self.builder_config.num_frames)
        empty = np.zeros((t, openpose.NUM_KEYPOINTS, 3), np.float32)
        folder = self._openpose_folder(entry)
        if not os.path.isdir(folder):
            self.no_pose.append(entry.clip_id)
            return empty
        try:
            files = openpose.list_frames(folder)
            length = max(num_frames, len(files)) if files else num_frames
            first = files[0][0] if files else 0  # 0-based (OpenPose on a video) or 1-based (on images)
            clip = openpose.read_clip(folder, frame_indices=frames_lib.sample_indices(length, t),
                                      first_frame=min(first, 1))
        except openpose.OpenPoseError as e:
            if not self._skip_bad_clips:
                raise ReleaseError(f"clip {entry.clip_id}: {e} Fix or delete that file, or rebuild with "
                                   "--skip_bad_clips to store the clip with its pose masked (reported).") from None
            self.bad_pose[entry.clip_id] = str(e)
            log.warning("Clip %s: OpenPose output not read (%s); stored with its pose masked.", entry.clip_id, e)
            return empty
        return clip.points

    def _encode_clip(self, entry: ClipEntry) -> dict:
        c = self.builder_config
        frames, _, counted = frames_lib.load_frames(entry.frame_dir, c.frame_size, int(c.num_frames),
                                                    clip_id=entry.clip_id)
        count = int(self._original_count(entry, counted))
        example = {"frames": [frames_lib.encode_jpeg(f) for f in frames], "label": int(entry.label),
                   "clip_id": entry.clip_id, "num_frames": count, "fold": int(entry.fold), **dict(entry.fields)}
        if c.pose:
            example[POSE_KEY] = self._keypoints(entry, count)
        if c.audio:
            samples = self._clip_audio(entry)
            example["audio"] = samples
            example["audio_length"] = np.int32(samples.shape[0])
        return example

    def _generate_examples(self, split: str, entries: Sequence[ClipEntry]):
        def work(entry):
            try:
                return entry, self._encode_clip(entry), None
            except _StrictAudioError:
                raise
            except ReleaseError as e:
                if not self._skip_bad_clips:
                    raise
                return entry, None, _what_is_wrong(str(e))

        with concurrent.futures.ThreadPoolExecutor(self._num_workers) as pool:
            try:
                yield from self._collect(split, pool.map(work, entries))
            except BaseException:  # an error (or the consumer stopping) ends the build: drop the queued clips
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _collect(self, split: str, results):
        """Yields (key, example) of the encoded clips in order and keeps the counts and reports."""
        meta = self.info.metadata
        written = self._written.setdefault(split, [])
        for entry, example, error in results:
            if example is None:
                log.warning("Leaving out clip %s: %s", entry.clip_id, error)
                self.skipped.append((entry.clip_id, error))
                meta["skipped_clips"].append(entry.clip_id)
                meta["skip_reasons"][entry.clip_id] = error
                continue
            if self.no_pose:
                meta["clips_without_openpose"] = sorted(set(self.no_pose))
            if self.bad_pose:
                meta["clips_with_bad_openpose"] = dict(sorted(self.bad_pose.items()))
            if entry.clip_id in self.no_audio:
                meta["clips_without_audio"] = dict(sorted(self.no_audio.items()))
            if entry.label < 0:
                meta["unlabelled_clips"] = meta.get("unlabelled_clips", 0) + 1
            else:  # class counts of the labelled clips only
                counts = meta["class_counts"].setdefault(split, [0] * len(self._class_names()))
                counts[entry.label] += 1
            written.append(entry.clip_id)
            meta["build"]["splits"][split] = {"clips": len(written), "ids": ids_digest(written)}
            yield entry.clip_id, example
        if not written:
            total = len(self.plan.splits.get(split, [])) if self.plan else 0
            reasons = sorted({r.split(": ", 1)[-1][:80] for _, r in self.skipped})
            raise ReleaseError(f"split {split} would hold no clip: all {total} of its clips were left out "
                               f"({'; '.join(reasons[:3]) or 'no readable frames'}). Fix those clips' frames "
                               "and rebuild.")


def _what_is_wrong(message: str) -> str:
    """The first sentence of an error (what is wrong), without the advice after it (which under
    --skip_bad_clips would suggest the option that is already on)."""
    return message.split(". ", 1)[0].rstrip(".") + "."


def fingerprint(metadata) -> str:
    """The digest of a build record (metadata['build']): what a cached-features dataset records of its source."""
    build = dict(metadata.get("build", {}) or {}) if hasattr(metadata, "get") else {}
    return hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:16] if build else ""
