"""What predict writes for a video: <stem>_emotions.json, .csv and .png, and its one-line description."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from fer_jax import paths, plots
from fer_jax.video import face_track


def summary(windows: list[dict], status: np.ndarray, class_names) -> dict:
    """Window and frame counts, the mean probability of each class over the face windows and the dominant one."""
    names = list(class_names)
    face = [w for w in windows if not w["no_face"]]
    out = {"windows": len(windows), "face_windows": len(face), "no_face_windows": len(windows) - len(face),
           "frames_detected": int((status == face_track.DETECTED).sum()),
           "frames_held": int((status == face_track.HELD).sum()),
           "frames_no_face": int((status == face_track.NO_FACE).sum())}
    if face:
        mean = np.mean([[w["probabilities"][c] for c in names] for w in face], axis=0)
        out["mean_probabilities"] = {c: float(v) for c, v in zip(names, mean)}
        out["dominant"] = names[int(np.argmax(mean))]
        counts = {c: sum(w["dominant"] == c for w in face) for c in names}
        out["dominant_share"] = {c: counts[c] / len(face) for c in names if counts[c]}
    else:
        out["mean_probabilities"], out["dominant"], out["dominant_share"] = None, None, {}
    return out


def output_stem(path: str, out_dir: str | None = None) -> str:
    """<out_dir or the video's folder>/<video stem>_emotions (a frame folder's stem is its name)."""
    clean = paths.resolve(path) if paths.is_url(path) else os.path.normpath(os.path.abspath(path))
    name = paths.basename(clean)
    stem = name if not paths.is_url(clean) and os.path.isdir(clean) else os.path.splitext(name)[0]
    return paths.join(out_dir or paths.dirname(clean), f"{stem}_emotions")


def write_outputs(result: dict, out_dir: str | None = None) -> dict[str, str]:
    """Writes <stem>_emotions.json, .csv and (when the video had frames) .png; returns their paths."""
    stem = output_stem(result["video"], out_dir)
    written = {"json": stem + ".json", "csv": stem + ".csv"}
    paths.write_text(written["json"], _json_text(result))
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start_frame", "end_frame", "start_s", "end_s", "no_face", "face_fraction", "dominant",
                         *result["class_names"]])
        for w in result["windows"]:
            probs = w["probabilities"] or {}
            writer.writerow([w["start_frame"], w["end_frame"], f"{w['start_s']:.3f}", f"{w['end_s']:.3f}",
                             int(w["no_face"]), f"{w['face_fraction']:.3f}", w["dominant"] or "",
                             *[f"{probs[c]:.5f}" if c in probs else "" for c in result["class_names"]]])
        paths.write_text(written["csv"], f.getvalue())
    if result["num_frames"]:
        written["png"] = plots.timeline_png(result, stem + ".png")
    return written


def _json_text(result: dict) -> str:
    """Indented JSON with one line per frame (long videos have many)."""
    text = json.dumps({**result, "frames": "@frames@"}, indent=1)
    rows = ",\n  ".join(json.dumps(f) for f in result["frames"])
    return text.replace('"@frames@"', "[\n  " + rows + "\n ]" if rows else "[]") + "\n"


def describe(result: dict) -> str:
    s = result["summary"]
    head = (f"{result['num_frames']} frames at {result['fps']:g} fps, {s['windows']} windows "
            f"({s['no_face_windows']} no-face)")
    if s.get("dominant"):
        share = s["dominant_share"].get(s["dominant"], 0.0)
        head += f"; overall {s['dominant']} (mean p {s['mean_probabilities'][s['dominant']]:.2f}, dominant in " \
                f"{100 * share:.0f}% of face windows)"
    return head
