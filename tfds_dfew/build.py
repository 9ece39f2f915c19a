"""`python -m tfds_dfew.build`: builds a dataset (DFEW, MAFW, FERV39k or a plug-in's) from its release, without TensorFlow.

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets [--config frames112]
    python -m tfds_dfew.build --dataset mafw --manual_dir ~/MAFW --data_dir ~/tensorflow_datasets
    python -m tfds_dfew.build --dataset ferv39k --manual_dir ~/FERV39k --data_dir ~/tensorflow_datasets

Prints a closing summary: clips per split and class, the unlabelled clips, clips left out and why,
and (`_audio` configs) the clips stored without sound. A dataset already built in data_dir from the
same release is reused (say --overwrite to rebuild it); one built from another release is refused.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import shutil
import sys

import tensorflow_datasets as tfds

from tfds_dfew import clip_builder, datasets, plugins, release
from tfds_dfew.errors import ReleaseError, UserError

STOPPED = 75  # EX_TEMPFAIL: the exit status of every stopped command (fer_jax.errors.RunStopped)
CONFIG_NAMES = tuple(c.name for c in clip_builder.ClipBuilder.grid())  # DFEW's named configs


def build(
    manual_dir: str,
    data_dir: str,
    *,
    dataset: str = "dfew",
    config: str = "frames112",
    num_frames: int | None = None,
    frame_source: str | None = None,
    skip_bad_clips: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    num_workers: int | None = None,
    openpose_dir: str | None = None,
    unlabelled: bool = True,
    audio_dir: str | None = None,
    **options,
):
    """Builds (or finds already built from the same release) `<dataset>/<config>` under data_dir; returns the builder.

    num_frames: frames stored per clip (default 16; the config name gets `_t<n>`, e.g. frames112_t32).
    unlabelled=False leaves the clips without a single label out (no `unlabelled` split).
    audio_dir: the videos with sound for `_audio` configs (default: where the release keeps them).
    options: further options of the dataset's own builder (e.g. MAFW's caption handling).
    """
    cls = datasets.builder_class(dataset)
    quiet_tfds()
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    cls.check_release(manual_dir)  # a clear message before TFDS's own assertion
    name = _config_with_frames(config, num_frames)
    kwargs = dict(options)
    if frame_source not in (None, "auto"):
        kwargs["frame_source"] = frame_source
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ReleaseError(f"--{unknown[0]} does not apply to {dataset}; it takes "
                           f"{', '.join('--' + k for k in accepted if k not in ('self', 'kwargs')) or 'no options of its own'}.")
    if datasets.is_url(data_dir):  # built in a local staging folder, uploaded once complete (datasets.staged)
        existing = datasets.open_built(data_dir, f"{cls.name}/{name}")
        if existing is not None and not overwrite:
            _check_reuse(existing, manual_dir, dataset)
            return existing
        with datasets.staged(data_dir) as local:
            build(manual_dir, local, dataset=dataset, config=name, frame_source=frame_source,
                  skip_bad_clips=skip_bad_clips, strict=strict, num_workers=num_workers, openpose_dir=openpose_dir,
                  unlabelled=unlabelled, audio_dir=audio_dir, **options)
        return datasets.open_built(data_dir, f"{cls.name}/{name}")
    data_dir = os.path.expanduser(data_dir)
    downloads = os.path.join(data_dir, "downloads")
    had_downloads = os.path.isdir(downloads)
    builder = cls(
        data_dir=data_dir, config=name, manual_dir=manual_dir, skip_bad_clips=skip_bad_clips, strict=strict,
        num_workers=num_workers, openpose_dir=os.path.expanduser(openpose_dir) if openpose_dir else None,
        unlabelled=unlabelled, audio_dir=os.path.expanduser(audio_dir) if audio_dir else None, **kwargs)
    try:
        if builder.is_prepared() and not overwrite:
            _check_reuse(builder, manual_dir, dataset)
            return builder
        _prepare(builder, manual_dir, overwrite)
    finally:
        if not had_downloads and os.path.isdir(downloads) and _holds_no_file(downloads):
            shutil.rmtree(downloads, ignore_errors=True)  # TFDS makes it; a build from a manual_dir never uses it
    return builder


def _holds_no_file(folder: str) -> bool:
    """Whether a folder holds only (empty) folders."""
    return not any(files for _, _, files in os.walk(folder))


def _prepare(builder, manual_dir: str, overwrite: bool) -> None:
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    if overwrite:
        download_config.download_mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    # an existing dataset already records array_record; TFDS refuses to be told again when overwriting it
    builder.download_and_prepare(download_config=download_config,
                                 file_format=None if builder.is_prepared() else "array_record")


class QuietTfds(logging.Filter):
    """Drops TFDS's warnings that say nothing to a user of these builders: a first build's empty version
    folder ("Variant folder ... has no dataset_info.json") and a `_t<n>` config being a custom one."""

    NOISE = ("has no dataset_info.json", "Using custom data configuration")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def quiet_tfds() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, QuietTfds) for f in logger.filters):
        logger.addFilter(QuietTfds())


def _config_with_frames(config: str, num_frames: int | None) -> str:
    if num_frames is None:
        return config
    options = clip_builder.parse_config_name(config)
    if options is None:
        raise ReleaseError(f"--config {config!r}: expected frames<size>[_pose][_audio], e.g. frames112.")
    if options["num_frames"] != clip_builder.DEFAULT_NUM_FRAMES and options["num_frames"] != num_frames:
        raise ReleaseError(f"--config {config} stores {options['num_frames']} frames but --num_frames is {num_frames}.")
    options["num_frames"] = int(num_frames)
    return clip_builder.config_name(options["frame_size"], options["pose"], options["audio"], options["num_frames"],
                                    options["view"])


def _check_reuse(builder, manual_dir: str, dataset: str) -> None:
    """A dataset built from the same release is reused with one line; one built from another is refused."""
    built = dict(dict(builder.info.metadata or {}).get("build", {}) or {})
    source = built.get("manual_dir")
    where = f"{builder.info.name}/{builder.builder_config.name} in {builder.data_dir}"
    if source and os.path.abspath(source) != manual_dir:
        raise ReleaseError(
            f"{where} was built from {source}, not from {manual_dir}. To rebuild it from {manual_dir}, add "
            f"--overwrite; to keep both, build into another --data_dir.")
    print(f"reusing {where}" + (f", built from {source}" if source else "") + "; add --overwrite to rebuild it.",
          flush=True)


def summary(builder) -> str:
    """A plain-text table of clips per split and class, plus what was left out."""
    info = builder.info
    names = info.features["label"].names
    lines = [f"{info.name}/{builder.builder_config.name} in {builder.data_dir}"]
    header = f"{'split':<8}{'clips':>7}" + "".join(f"{n[:8]:>9}" for n in names)
    lines += [header, "-" * len(header)]
    stored = dict(info.metadata.get("class_counts", {}) or {})
    description = datasets.description_of(builder)
    total = [0] * len(names)
    for split in description.scheme.stored_splits:
        counts = list(stored.get(split, [0] * len(names)))
        total = [a + b for a, b in zip(total, counts)]
        lines.append(f"{split:<8}{sum(counts):>7}" + "".join(f"{c:>9}" for c in counts))
    lines.append(f"{'all':<8}{sum(total):>7}" + "".join(f"{c:>9}" for c in total))
    lines.append(_unlabelled_line(info.metadata))
    conflicts = list(info.metadata.get("label_conflicts", []))
    if conflicts:
        lines.append(f"CSV label differs from the annotation (CSV label kept): {len(conflicts)} "
                     f"(first: {', '.join(conflicts[:8])})")
    unannotated = list(info.metadata.get("unannotated_clips", []))
    if unannotated:
        lines.append(f"listed clips without an annotation row (votes zero): {len(unannotated)} "
                     f"(first: {', '.join(unannotated[:8])})")
    missing = list(info.metadata.get("missing_clips", []))
    skipped = list(info.metadata.get("skipped_clips", []))
    if missing:
        lines.append(f"left out, no frame folder: {len(missing)} (first: {', '.join(missing[:8])})")
    left_out = list(info.metadata.get("left_out_clips", []))
    if left_out:
        lines.append(f"left out, clip folder in no split: {len(left_out)} (first: {', '.join(left_out[:8])})")
    if skipped:
        lines.append(f"left out, unreadable frames: {len(skipped)} (first: {', '.join(skipped[:8])})")
    for line in info.metadata.get("report", []) or []:  # a dataset's own findings (e.g. clips without captions)
        lines.append(str(line))
    bad_pose = dict(info.metadata.get("clips_with_bad_openpose", {}) or {})
    if bad_pose:
        lines.append(f"unreadable OpenPose JSON (stored with the pose masked): {len(bad_pose)} "
                     f"(first: {', '.join(list(bad_pose)[:8])})")
    no_pose = list(info.metadata.get("clips_without_openpose", []))
    if no_pose:
        lines.append(f"no OpenPose output (keypoints all missing): {len(no_pose)} (first: {', '.join(no_pose[:8])})")
    no_audio = dict(info.metadata.get("clips_without_audio", {}))
    if no_audio:
        first = ", ".join(f"{c} ({why})" for c, why in list(no_audio.items())[:5])
        lines.append(f"no sound (audio_length 0): {len(no_audio)} (first: {first})")
    elif "clips_without_audio" in info.metadata:
        lines.append("sound read for every clip")
    if not missing and not skipped:
        lines.append("no clip left out")
    return "\n".join(lines)


def _unlabelled_line(metadata) -> str:
    """One line: the unlabelled split (size, where its clips came from) and whether votes were read."""
    stored = int(metadata.get("unlabelled_clips", 0))
    source = metadata.get("unlabelled_source", "none")
    if source == "left out":
        what = f"unlabelled: {int(metadata.get('unlabelled_available', 0))} clips without a single label left out"
    elif stored:
        origin = {"annotation": "label 0 in annotation.xlsx", "clip folders": "clip folders no CSV lists"}.get(
            source, source)
        what = f"unlabelled: {stored} clips without a single label (split 'unlabelled', label -1; {origin})"
    else:
        what = "unlabelled: none (no split 'unlabelled')"
    no_frames = len(metadata.get("unlabelled_without_frames", []))
    if no_frames:
        what += f", {no_frames} more without a frame folder"
    if "has_votes" not in metadata:
        return what
    votes = ("votes read from Annotation/annotation.xlsx" if metadata.get("has_votes")
             else "no votes (no Annotation/annotation.xlsx; stored as zeros)")
    return f"{what}; {votes}"


def main(argv=None) -> int:
    try:  # plug-in datasets first (FER_JAX_PLUGINS): --dataset may name one
        plugins.load()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    parser = argparse.ArgumentParser(
        prog="python -m tfds_dfew.build", description=__doc__.splitlines()[0],
        epilog="example: python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets "
               "--config frames112_pose_audio --audio_dir ~/DFEW/Clip/original")
    parser.add_argument("--dataset", default="dfew",
                        help="which dataset's release --manual_dir holds: " + ", ".join(datasets.names())
                             + " (default dfew)")
    parser.add_argument("--manual_dir", required=True,
                        help="the unpacked release (DFEW: holds EmoLabel_DataSplit/, Clip/, Annotation/); e.g. ~/DFEW")
    parser.add_argument("--data_dir", default="data/tfds",
                        help="where TFDS datasets live, a folder or a gs:// URL (built in a local staging folder, "
                             f"${datasets.STAGING_ENV} or the system's temp, then uploaded); e.g. data/tfds")
    parser.add_argument("--config", default="frames112",
                        help="stored frame size, _pose adds OpenPose keypoints, _audio the sound track, _compound "
                             "MAFW's compound labels; e.g. frames112_pose_audio (default frames112)")
    parser.add_argument("--num_frames", type=int, default=None,
                        help="frames stored per clip (default 16), sampled uniformly over each clip; e.g. 32 so that "
                             "evaluation can take several temporal clips")
    parser.add_argument("--frame_source", default=None, choices=("auto",) + release.FRAME_FOLDERS,
                        help="DFEW: which frame folders to read (auto: clip_224x224_16f if present); e.g. clip_224x224")
    parser.add_argument("--skip_bad_clips", action="store_true",
                        help="report and leave out clips with unreadable frames (and store clips with unreadable "
                             "OpenPose JSON with the pose masked) instead of stopping")
    parser.add_argument("--strict", action="store_true",
                        help="fail on listed clips without a frame folder or whose CSV and annotation labels differ, "
                             "and (_audio configs) on clips without usable sound")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="frame decode/encode threads (default: the CPU count); e.g. 4")
    parser.add_argument("--openpose_dir", default=None,
                        help="OpenPose JSON, one folder per clip id (_pose configs; default <manual_dir>/OpenPose)")
    parser.add_argument("--audio_dir", default=None,
                        help="videos with sound (_audio configs; default the release's own: DFEW Clip/original, MAFW "
                             "data/clips, FERV39k 0_7_LabelClips); e.g. ~/DFEW/Clip/original")
    parser.add_argument("--no_unlabelled", action="store_true",
                        help="leave out the clips without a single label (no 'unlabelled' split)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        builder = build(
            args.manual_dir,
            args.data_dir,
            dataset=args.dataset,
            config=args.config,
            num_frames=args.num_frames,
            frame_source=args.frame_source,
            skip_bad_clips=args.skip_bad_clips,
            strict=args.strict,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
            openpose_dir=args.openpose_dir,
            unlabelled=not args.no_unlabelled,
            audio_dir=args.audio_dir,
        )
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped by Ctrl-C: the dataset was not marked complete (TFDS writes it to an `incomplete.*` folder "
              "first). Rerun the same command to build it.", file=sys.stderr)
        return STOPPED
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(summary(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
