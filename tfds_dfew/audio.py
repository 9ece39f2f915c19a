"""The sound of a DFEW clip: find its original video and decode the audio track to int16 mono at 16 kHz.

DFEW keeps each clip's original movie cut, with its sound, at `<manual_dir>/Clip/original/<id>.mp4`.
`decode` reads every audio sample of a file's first audio stream with PyAV, downmixes it to mono
(the mean of the channels, so a stereo or 5.1 track keeps its level) and resamples it with PyAV's
AudioResampler (format 's16', layout 'mono') to `SAMPLE_RATE`. The builder (`_audio` configs) and
predict both decode through this module, so training and inference hear the same signal.

The whole track is kept: the 16 stored frames of a DFEW clip are sampled uniformly over the whole
clip (first to last frame), so the sound that goes with them is the whole track, not a window.

Storage format (the `_audio` configs of `dfew`): feature `audio`, int16[n] mono at 16 kHz, n
variable (zlib-compressed in the record), and `audio_length` (int32) = n. A clip without usable
sound (`clip_audio` gives the reason) is stored with an empty `audio` (shape (0,)) and
`audio_length` 0, the mask; it is never dropped. Scale to float with `audio / 32768.0`.

A file that fails half way (truncated, corrupt packets) counts as undecodable as a whole: its
partial audio would no longer line up with the frames.
"""

from __future__ import annotations

import fractions
import os

import av
import numpy as np

SAMPLE_RATE = 16_000
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv")
# A track that decodes to less than its declared duration by more than this is a truncated file.
_SHORT_BY_S = 0.1
_SHORT_BY_FRACTION = 0.05


class AudioError(Exception):
    """The file's audio cannot be read; the message names the file and what is wrong."""


class NoAudioStream(AudioError):
    """The container has no audio stream (a silent video)."""


def _as_float(frame) -> np.ndarray:
    """A decoded av.AudioFrame -> float32[channels, samples] in [-1, 1], whatever its sample format."""
    fmt = frame.format
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if not fmt.is_planar:  # packed: (1, samples * channels), interleaved
        data = data.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    if name == "s16":
        return data.astype(np.float32) / 32768.0
    if name == "s32":
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if name == "s64":
        return (data.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    return data.astype(np.float32)  # flt, dbl


def decode(path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """int16[n] mono at sample_rate: every audio sample of the file's first audio stream, downmixed
    (mean of channels) and resampled with PyAV's AudioResampler (format 's16', layout 'mono').

    The end is cut at the duration the stream declares (AAC pads its last frame). Raises
    NoAudioStream when the file has no audio stream, AudioError when it is missing, not a media
    file, undecodable, or truncated (decodes to clearly less than its declared duration); the
    message names the path.
    """

    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not a media file")
    try:
        container = av.open(path)
    except Exception as e:  # noqa: BLE001  (av.FFmpegError mostly; PyAV raises others for odd files)
        raise AudioError(f"{path}: not a readable media file ({_cause(e)})") from None
    try:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise NoAudioStream(f"{path}: no audio stream (the file holds: {kinds})")
        stream = container.streams.audio[0]
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        pts = 0
        source_rate = None
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                mono = _as_float(frame).mean(axis=0, dtype=np.float32)
                rate = frame.sample_rate
                if source_rate is None:
                    source_rate = rate
                elif rate != source_rate:
                    raise AudioError(f"{path}: the sample rate changes mid-stream ({source_rate} -> {rate} Hz)")
                out = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
                out.sample_rate = rate
                out.time_base = fractions.Fraction(1, rate)
                out.pts = pts
                pts += mono.shape[0]
                for resampled in resampler.resample(out):
                    chunks.append(resampled.to_ndarray().reshape(-1))
            for resampled in resampler.resample(None):
                chunks.append(resampled.to_ndarray().reshape(-1))
        except AudioError:
            raise
        except Exception as e:  # noqa: BLE001  (FFmpeg errors, and whatever a broken file makes PyAV raise)
            raise AudioError(f"{path}: undecodable audio ({_cause(e)})") from None
    finally:
        container.close()
    samples = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
    if declared is not None and declared > 0:
        expected = int(round(declared * sample_rate))
        got = samples.shape[0]
        if expected - got > max(_SHORT_BY_S * sample_rate, _SHORT_BY_FRACTION * expected) and got > 0:
            raise AudioError(f"{path}: truncated audio (decoded {got / sample_rate:.2f} s of the "
                             f"{declared:.2f} s the stream declares)")
        samples = samples[:expected]
    return np.ascontiguousarray(samples)


def _cause(error: Exception) -> str:
    """A short cause for an FFmpeg error: its message without the errno and the repeated file name."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).strip() or type(error).__name__


def find_original(folder: str, clip_id: str) -> str | None:
    """The original video of a clip in `folder` (DFEW: Clip/original): <id>.mp4, also other extensions
    (.avi .mkv .mov .webm .flv, any case) and the id with or without zero padding ('00017', '17'),
    whichever form `clip_id` comes in. None when absent.
    """
    if not folder or not os.path.isdir(folder):
        return None
    text = str(clip_id).strip()
    stems = [text]
    if text.isdigit():
        value = int(text)
        stems += [f"{value:05d}", str(value)]
    stems = list(dict.fromkeys(stems))
    for suffix in VIDEO_SUFFIXES:
        for stem in stems:
            for ext in (suffix, suffix.upper()):
                candidate = os.path.join(folder, stem + ext)
                if os.path.isfile(candidate):
                    return candidate
    return None


def clip_audio(path: str | None, *, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    """(int16 samples, '') or (empty int16 array, reason) with reason one of 'no original video',
    'no audio stream', 'undecodable audio: <short cause>', 'empty audio track'. Never raises for a bad file.
    """
    empty = np.zeros(0, np.int16)
    if path is None or not os.path.isfile(path):
        return empty, "no original video"
    try:
        samples = decode(path, sample_rate=sample_rate)
    except NoAudioStream:
        return empty, "no audio stream"
    except AudioError as e:
        cause = str(e)
        prefix = f"{os.fspath(path)}: "
        if cause.startswith(prefix):
            cause = cause[len(prefix):]
        if cause.startswith("undecodable audio (") and cause.endswith(")"):
            cause = cause[len("undecodable audio ("):-1]
        return empty, f"undecodable audio: {cause}"
    except Exception as e:  # noqa: BLE001  (a broken file must never stop a build half way)
        return empty, f"undecodable audio: {type(e).__name__}: {e}"
    if samples.shape[0] == 0:
        return empty, "empty audio track"
    return samples, ""
