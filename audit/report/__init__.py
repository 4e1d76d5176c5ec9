"""report.html: one self-contained page (no server, no CDN) to review what a run found.

Built from the files of an output folder alone, so `python -m audit report OUT` rebuilds it. The
top issues carry their audio (16 kHz, at most MEDIA_SECONDS), a log-mel spectrogram and a waveform,
embedded as data URIs; everything else links to the files. Jinja2 autoescapes every name and label
(file names may hold <, ", & or any script); template, CSS and JS are files in this folder.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from audit.options import DEFAULT_RANK_BY, DEFAULT_REPORT_TOP

MEDIA_SECONDS = 10.0  # longer clips are cut in the page: it stays light
MAX_MAP_POINTS = 5000  # every flagged clip, plus a seeded sample of the rest
MAX_TABLE_ROWS = 200
# Up to this many clips the page carries every clip's path and labels, and exports a corrected manifest of
# all of them; above it (~60 MB of page at 1M clips) only the clips on cards, merged into the manifest by path.
REVIEW_ALL_ROWS_MAX = 100_000
SEGMENT_COLUMNS = ("offset", "duration")  # manifest columns that make a row a segment of its file (manifest.py)
PAST_CUT_MIN = 10  # clips past the estimated cut offered for review (more where the estimate's range reaches further)
HEALTH_MEDIA = 20  # audio-health rows with their audio embedded: the page stays light
HERE = Path(__file__).parent
log = logging.getLogger(__name__)


def build_report(out: Path, top: int = DEFAULT_REPORT_TOP) -> Path:
    """Writes OUT/report.html from the outputs in OUT; returns its path."""
    from audit.outputs import read_run

    return render_report(read_run(out), Path(out) / "report.html", top)


def render_report(run, path: Path, top: int = DEFAULT_REPORT_TOP) -> Path:
    """Writes the page for `run` (outputs.RunFiles, read back or in memory) to `path`."""
    import jinja2

    from audit.outputs import label_columns
    from audit.summary import estimate_shown, flagged_note

    s, classes, probs, scores = run.summary, run.classes, run.pred_probs, run.scores  # probs (N, K)
    files = run.clip_map["file"].tolist()
    given_col, suggested_col = label_columns(scores)
    multi = given_col == "given_tags"
    est = s.get("label_issue_estimate")
    n_flagged = int(scores["is_label_issue"].sum())
    # The next clips of the ranking, past the estimated cut, for a longer review. A tag set's clip past the
    # cut carries no suggested change: its card offers its worst tag flipped (past_tag_suggestions).
    past_rows = scores[~scores["is_label_issue"]].head(
        0 if est is None else past_cut(n_flagged, est["high"], top - min(top, n_flagged)))
    if multi and len(past_rows):
        scores = scores.copy()
        scores.loc[past_rows.index, suggested_col] = past_tag_suggestions(
            scores, given_col, classes, probs, s["options"].get("rank_by", DEFAULT_RANK_BY), past_rows["row"])
        past_rows = scores.loc[past_rows.index]
    # the review controls pick among names: classes, or for tag sets every given and suggested set
    names = sorted(set(scores[given_col]) | set(scores[suggested_col])) if multi else list(classes)
    name_id = {c: i for i, c in enumerate(names)}
    labels = np.empty(len(scores), dtype=np.int64)  # (N,) given name ids in row order
    labels[scores["row"].to_numpy()] = scores[given_col].map(name_id).to_numpy()
    suggested = np.empty(len(scores), dtype=np.int64)  # (N,) suggested name ids in row order
    suggested[scores["row"].to_numpy()] = scores[suggested_col].map(name_id).to_numpy()
    flagged = scores[scores["is_label_issue"]].rename(columns={given_col: "given_label", suggested_col: "suggested_label"})

    issues = [_issue(r, files[r.row], probs[r.row], classes) for r in flagged.head(top).itertuples()]
    past = [_issue(r, files[r.row], probs[r.row], classes) for r in past_rows.rename(
        columns={given_col: "given_label", suggested_col: "suggested_label"}).itertuples()]
    outliers = run.outliers
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True)
    html = env.get_template("template.html").render(
        s=s, est=est, est_n=None if est is None else estimate_shown(est), flagged_note=flagged_note(s), past=past,
        di=s.get("data_issues", {}),
        data_name=s["options"]["data"], classes=classes, issues=issues,
        matrix=None if multi else _matrix(labels, probs, classes), rates=_rates(run.class_imbalance),
        max_rate=max(run.class_imbalance["issue_rate"].tolist() + [1e-9]),
        points=_points(run.clip_map, scores.rename(columns={given_col: "given_label", suggested_col: "suggested_label"}),
                       outliers, {i["row"] for i in issues}), map_note=_map_note(len(run.clip_map)),
        outliers=[{"path": o.path, "label": o.given_label, "score": float(o.outlier_score),
                   "href": _href(files[int(o.row)])} for o in outliers.head(MAX_TABLE_ROWS).itertuples()],
        outliers_more=len(outliers) if len(outliers) > MAX_TABLE_ROWS else 0,
        dup_groups=_dup_groups(run.duplicates, files),
        skipped=run.skipped.head(MAX_TABLE_ROWS).to_dict("records"),
        health=_health(run.audio_issues, files, s.get("audio_issues", {}).get("dataset_level", [])),
        review=_review(run, names, labels, suggested, [i["row"] for i in issues + past], path, multi),
        css=(HERE / "style.css").read_text(), js=(HERE / "report.js").read_text())
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def past_tag_suggestions(scores: pd.DataFrame, given_col: str, classes: list, probs: np.ndarray, rank_by: str,
                         rows: pd.Series) -> np.ndarray:
    """Tag sets: for clips `rows` past the cut, their given tag set with its worst tag flipped (the tag that
    ranks the clip, label_issues.tag_margins), as text: what a flagged clip that cleanlab names no tag of
    gets. A clip with no tag to compare keeps its given set."""
    from audit.label_issues import tag_margins, worst_tag_mask
    from audit.labels import SEP, as_text

    index = {c: i for i, c in enumerate(classes)}
    given = np.zeros(probs.shape, dtype=np.int8)  # (N, K) multi-hot, row order
    for row, text in zip(scores["row"], scores[given_col].fillna("").astype(str)):
        given[row, [index[t] for t in text.split(SEP) if t]] = 1
    rows = rows.to_numpy()
    return as_text(given[rows] ^ worst_tag_mask(tag_margins(given, probs, rank_by)[rows]), classes)


def past_cut(n_flagged: int, high: float, room: int) -> int:
    """Cards past the cut: up to the estimate's upper end (at least PAST_CUT_MIN), within the page's `room`."""
    return max(0, min(room, max(PAST_CUT_MIN, int(np.ceil(high)) - n_flagged)))


def _review(run, names: list, labels: np.ndarray, suggested: np.ndarray, card_rows: list, path: Path,
            multi: bool) -> dict:
    """What the review controls in report.js need: every clip in row order, each card's likeliest classes.

    Paths are absolute (map.csv's `file`), as in --relabel-out's manifest: the exported CSV lands in a
    downloads folder, where a path relative to the user's manifest would point nowhere. The key that
    stores decisions in the browser is unique to the run: output folder name + finished_at.
    Above REVIEW_ALL_ROWS_MAX clips only the card rows are carried (`partial`): path, given and
    suggested become {row: value} for those rows. A manifest of segments (`offset`, `duration`) has them
    carried too: one file's segments are different clips, and the export must say which is which.
    """
    s = run.summary
    name = Path(s["options"].get("out") or Path(path).resolve().parent).name or "audit"
    # tag sets: a card offers its suggested set, then its given one; classes: the 9 likeliest
    ranked = {str(r): [int(suggested[r]), int(labels[r])] if multi else
              np.argsort(-run.pred_probs[r], kind="stable")[:9].tolist() for r in card_rows}
    files = run.clip_map["file"].tolist()
    partial = len(files) > REVIEW_ALL_ROWS_MAX
    by_row = run.scores.set_index("row")
    segment = {c: by_row[c].reindex(range(len(files))).fillna("").astype(str).tolist()
               for c in SEGMENT_COLUMNS if c in by_row.columns}  # {column: (N,) text}
    if partial:
        rows = sorted(card_rows)
        path, given, sugg, *parts = ({r: values[r] for r in rows}
                                     for values in (files, labels.tolist(), suggested.tolist(), *segment.values()))
        segment = dict(zip(segment, parts))
    else:
        rows, path, given, sugg = list(range(len(files))), files, labels.tolist(), suggested.tolist()
    return {"key": f"audit-review:{name}:{s['finished_at']}", "name": name, "classes": names, "rows": rows,
            "partial": partial, "n_clips": len(files), "path": path, "given": given, "suggested": sugg,
            "segment": segment, "ranked": ranked}


def _issue(r, file: str, p: np.ndarray, classes: list) -> dict:
    order = np.argsort(-p, kind="stable")[:5]
    item = {"row": int(r.row), "rank": int(r.rank), "path": r.path, "given": r.given_label,
            "suggested": r.suggested_label, "quality": float(r.label_quality),
            "probs": [(classes[k], float(p[k])) for k in order], "audio": None, "spectrogram": None,
            "wave": None, "media_error": None}
    try:
        item.update(_media(file))
    except _unreadable() as e:  # a file moved since the run: the card stays, without media
        item["media_error"] = f"{type(e).__name__}: {e}"[:200]
        log.warning("report: no media for %s: %s", file, item["media_error"])
    return item


def _unreadable() -> tuple:
    """What a clip that was readable at the run may raise now (moved, replaced, on a disk gone away);
    anything else is a bug and stops the report."""
    from audit.audio import ClipError

    return ClipError, OSError


def _media(file: str) -> dict:
    import soundfile as sf
    import torch
    import torchaudio
    from PIL import Image

    from audit import audio

    wav = audio.load(file, 0.0, MEDIA_SECONDS)  # (T,) only the head of a long file is read
    buf = io.BytesIO()
    sf.write(buf, wav.numpy(), audio.SAMPLE_RATE, format="WAV", subtype="PCM_16")
    mel = torchaudio.transforms.MelSpectrogram(audio.SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=64)(wav)
    db = 10 * torch.log10(mel + 1e-10)  # (64, frames)
    db = (db.clamp(min=db.max() - 80) - (db.max() - 80)) / 80  # 80 dB of range -> [0, 1]
    rgb = _colormap(db.flip(0).numpy())  # low frequencies at the bottom
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG", optimize=True)
    return {"audio": base64.b64encode(buf.getvalue()).decode(), "spectrogram": base64.b64encode(png.getvalue()).decode(),
            "wave": _wave_path(wav.numpy())}


def _colormap(x: np.ndarray) -> np.ndarray:
    """[0, 1] (H, W) -> (H, W, 3) uint8 on a dark-blue-to-yellow ramp (viridis' end points)."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def _wave_path(wav: np.ndarray, width: int = 300, height: int = 40) -> str:
    chunks = np.array_split(wav, width)
    peak = max(1e-6, float(np.abs(wav).max()))
    top = [height / 2 - (c.max() if len(c) else 0) / peak * height / 2 for c in chunks]
    bottom = [height / 2 - (c.min() if len(c) else 0) / peak * height / 2 for c in chunks]
    pts = [f"{x},{y:.1f}" for x, y in enumerate(top)] + [f"{x},{y:.1f}" for x, y in reversed(list(enumerate(bottom)))]
    return "M" + " L".join(pts) + " Z"


def _matrix(labels: np.ndarray, probs: np.ndarray, classes: list) -> list:
    from cleanlab.count import compute_confident_joint

    joint = compute_confident_joint(labels, probs)  # (C, C) given x suggested
    peak = max(1, int(joint.max()))
    off_peak = max(1, int((joint - np.diag(np.diag(joint))).max()))
    rows = []
    for i, row in enumerate(joint):
        cells = []
        for j, n in enumerate(row):
            # the diagonal (agreement) in blue, disagreements in red scaled to the largest one
            alpha = n / peak if i == j else n / off_peak
            color = f"rgba(46, 90, 172, {0.08 + 0.6 * alpha:.2f})" if i == j else f"rgba(217, 45, 32, {0.75 * alpha:.2f})"
            cells.append({"count": int(n), "color": color, "title": f"{classes[i]} → {classes[j]}: {int(n)}"})
        rows.append(cells)
    return rows


def _rates(table: pd.DataFrame) -> list:
    return [{"label": r.label, "n_clips": int(r.n_clips), "n_label_issues": int(r.n_label_issues),
             "issue_rate": float(r.issue_rate)} for r in table.itertuples()]


def _points(clip_map: pd.DataFrame, scores: pd.DataFrame, outliers: pd.DataFrame, with_card: set) -> list:
    xy = clip_map[["x", "y"]].astype(float).to_numpy()  # (N, 2)
    by_row = scores.set_index("row")
    flagged = by_row["is_label_issue"].reindex(range(len(xy)), fill_value=False).to_numpy(bool)
    outlier_rows = set(outliers["row"].astype(int)) if len(outliers) else set()
    keep = np.flatnonzero(flagged)
    rest = np.flatnonzero(~flagged)
    if len(keep) + len(rest) > MAX_MAP_POINTS:
        rest = np.sort(np.random.default_rng(0).choice(rest, max(0, MAX_MAP_POINTS - len(keep)), replace=False))
    lo, hi = xy.min(0), xy.max(0)
    scale = (np.array([700.0, 460.0]) / np.maximum(hi - lo, 1e-9))
    points = []
    for i in np.concatenate([rest, keep]):  # flagged drawn last, on top
        x, y = 10 + (xy[i] - lo) * scale
        row = by_row.loc[i]
        path = clip_map["path"].iloc[i]
        color = "#d92d20" if flagged[i] else "#f79009" if i in outlier_rows else "#98a2b3"
        points.append({"x": f"{x:.1f}", "y": f"{470 - y + 10:.1f}", "r": 4 if flagged[i] else 2.5, "color": color,
                       "issue": int(i) if flagged[i] and int(i) in with_card else None,
                       "title": f"{path} · given {row['given_label']} · suggested {row['suggested_label']}"})
    return points


def _map_note(n: int) -> str:
    if n <= MAX_MAP_POINTS:
        return ""
    return f"{n} clips: every label issue is drawn, and a sample of the others ({MAX_MAP_POINTS} points in all)."


def _dup_groups(dups: pd.DataFrame, files: list) -> list:
    groups = []
    for gid, members in dups.groupby("group", sort=False):
        if len(groups) >= MAX_TABLE_ROWS:
            break
        groups.append({"group": gid, "kind": members["kind"].iloc[0],
                       "members": [{"path": m.path, "label": m.given_label,
                                    "href": _href(files[int(m.row)])}
                                   for m in members.itertuples()]})
    return groups


def _health(table: pd.DataFrame, files: list, notes: list) -> dict:
    """Counts per problem, the first rows (each clip's audio embedded for the first HEALTH_MEDIA), and the
    dataset-level notes (summary.json's audio_issues.dataset_level: problems most clips share)."""
    rows = []
    for i, r in enumerate(table.head(MAX_TABLE_ROWS).itertuples()):
        item = {"path": r.path, "type": r.type, "value": float(r.value), "threshold": float(r.threshold),
                "href": _href(files[int(r.row)]), "audio": None, "media_error": None}
        if i < HEALTH_MEDIA:
            try:
                item["audio"] = _media(files[int(r.row)])["audio"]
            except _unreadable() as e:  # a file moved since the run: the row stays, without audio, and says why
                item["media_error"] = f"{type(e).__name__}: {e}"[:200]
                log.warning("report: no audio for %s: %s", files[int(r.row)], item["media_error"])
        rows.append(item)
    return {"n_clips": int(table["row"].nunique()) if len(table) else 0, "rows": rows,
            "counts": sorted(table["type"].value_counts().items()) if len(table) else [],
            "notes": [n["text"] for n in notes]}


def _href(file: str) -> str:
    return Path(file).resolve().as_uri()
