"""`python -m tfds_dfew.build`: builds the `dfew` TFDS dataset from the release, without TensorFlow.

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets [--config frames112]

Prints a closing summary: clips per split and class, the unlabelled (multi-labelled) clips, whether
annotator votes were read, clips left out and why, and (`_audio` configs) the clips stored without sound.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import tensorflow_datasets as tfds

from fer_jax.errors import UserError
from tfds_dfew import dfew, release

CONFIG_NAMES = ("frames112", "frames64", "frames224", "frames112_pose", "frames64_pose", "frames224_pose",
                "frames112_audio", "frames64_audio", "frames224_audio",
                "frames112_pose_audio", "frames64_pose_audio", "frames224_pose_audio")


def build(
    manual_dir: str,
    data_dir: str,
    *,
    config: str = "frames112",
    frame_source: str = "auto",
    skip_bad_clips: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    num_workers: int | None = None,
    openpose_dir: str | None = None,
    unlabelled: bool = True,
    audio_dir: str | None = None,
):
    """Builds (or finds already built) `dfew/<config>` under data_dir; returns the builder.

    unlabelled=False leaves the clips without a single label out (no `unlabelled` split).
    audio_dir: the original videos with sound for `_audio` configs (default <manual_dir>/Clip/original).
    """
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    release.check_root(manual_dir)  # a clear message before TFDS's own assertion
    builder = dfew.Dfew(
        data_dir=os.path.expanduser(data_dir),
        config=config,
        frame_source=frame_source,
        skip_bad_clips=skip_bad_clips,
        strict=strict,
        num_workers=num_workers,
        openpose_dir=os.path.expanduser(openpose_dir) if openpose_dir else None,
        unlabelled=unlabelled,
        audio_dir=os.path.expanduser(audio_dir) if audio_dir else None,
    )
    mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite else None
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    if mode is not None:
        download_config.download_mode = mode
    builder._manual_dir_hint = manual_dir  # for its start line
    # an existing dataset already records array_record; TFDS refuses to be told again when overwriting it
    builder.download_and_prepare(download_config=download_config,
                                 file_format=None if builder.is_prepared() else "array_record")
    return builder


def summary(builder) -> str:
    """A plain-text table of clips per split and class, plus what was left out."""
    info = builder.info
    names = info.features["label"].names
    lines = [f"dfew/{builder.builder_config.name} in {builder.data_dir}"]
    header = f"{'split':<8}{'clips':>7}" + "".join(f"{n[:8]:>9}" for n in names)
    lines += [header, "-" * len(header)]
    stored = info.metadata.get("class_counts", {})
    total = [0] * len(names)
    for k in range(1, release.NUM_FOLDS + 1):
        split = f"fold{k}"
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
        origin = "label 0 in annotation.xlsx" if source == "annotation" else "clip folders no CSV lists"
        what = f"unlabelled: {stored} clips without a single label (split 'unlabelled', label -1; {origin})"
    else:
        what = "unlabelled: none (no split 'unlabelled')"
    no_frames = len(metadata.get("unlabelled_without_frames", []))
    if no_frames:
        what += f", {no_frames} more without a frame folder"
    votes = ("votes read from Annotation/annotation.xlsx" if metadata.get("has_votes")
             else "no votes (no Annotation/annotation.xlsx; stored as zeros)")
    return f"{what}; {votes}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfds_dfew.build", description=__doc__.splitlines()[0],
        epilog="example: python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir ~/tensorflow_datasets "
               "--config frames112_pose_audio --audio_dir ~/DFEW/Clip/original")
    parser.add_argument("--manual_dir", required=True,
                        help="unpacked DFEW release (holds EmoLabel_DataSplit/, Clip/, Annotation/); e.g. ~/DFEW")
    parser.add_argument("--data_dir", default="data/tfds",
                        help="where TFDS datasets live; e.g. data/tfds")
    parser.add_argument("--config", default="frames112", choices=CONFIG_NAMES,
                        help="stored frame size, _pose adds OpenPose keypoints, _audio the sound track; "
                             "e.g. frames112_pose_audio")
    parser.add_argument("--frame_source", default="auto", choices=("auto",) + release.FRAME_FOLDERS,
                        help="which frame folders to read (auto: clip_224x224_16f if present); e.g. clip_224x224")
    parser.add_argument("--skip_bad_clips", action="store_true",
                        help="report and leave out clips with unreadable frames instead of stopping")
    parser.add_argument("--strict", action="store_true",
                        help="fail on listed clips without a frame folder or whose CSV and annotation labels differ, "
                             "and (_audio configs) on clips without usable sound")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="frame decode/encode threads (default: the CPU count); e.g. 4")
    parser.add_argument("--openpose_dir", default=None,
                        help="OpenPose JSON, one folder per clip id (_pose configs; default <manual_dir>/OpenPose)")
    parser.add_argument("--audio_dir", default=None,
                        help="original videos with sound, <clip id>.mp4 (_audio configs; default "
                             "<manual_dir>/Clip/original); e.g. ~/DFEW/Clip/original")
    parser.add_argument("--no_unlabelled", action="store_true",
                        help="leave out the clips without a single label (no 'unlabelled' split)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        builder = build(
            args.manual_dir,
            args.data_dir,
            config=args.config,
            frame_source=args.frame_source,
            skip_bad_clips=args.skip_bad_clips,
            strict=args.strict,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
            openpose_dir=args.openpose_dir,
            unlabelled=not args.no_unlabelled,
            audio_dir=args.audio_dir,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(summary(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
