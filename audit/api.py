"""The Python API, for notebooks and scripts; the CLI is a thin layer over it.

    import audit
    result = audit.run("clips/", encoder="speechbrain/spkrec-ecapa-voxceleb")   # writes nothing
    result.issues.head()            # flagged clips, most likely error first (a DataFrame)
    result.report("review.html")    # the same self-contained page the CLI writes

With `out=` given, the run writes the same output folder as `python -m audit --out` (and the
same bytes: the CLI calls `audit()` below).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError
from audit.options import DEFAULT_REPORT_TOP, RunOptions


@dataclass(frozen=True)
class Result:
    run: object  # pipeline.AuditResult: every array of the run
    files: object  # outputs.RunFiles: every table of the output folder, in memory
    out: Path | None  # where the files were written, if anywhere

    @property
    def scores(self) -> pd.DataFrame:
        """Every clip, most likely error first (scores.csv)."""
        return self.files.scores

    @property
    def issues(self) -> pd.DataFrame:
        """The flagged clips, most likely error first (issues.csv)."""
        return self.scores[self.scores["is_label_issue"]].reset_index(drop=True)

    @property
    def summary(self) -> dict:
        return self.files.summary

    @property
    def pred_probs(self) -> np.ndarray:
        """(N, K) out-of-fold probabilities, rows in manifest order (the `row` column of scores)."""
        return self.run.pred_probs

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) the embeddings the heads were trained on, rows as in pred_probs."""
        return self.run.data.emb

    @property
    def classes(self) -> list:
        return list(self.run.data.classes)

    def report(self, path: str | Path = "report.html", top: int = DEFAULT_REPORT_TOP) -> Path:
        """Writes the self-contained review page to `path`; returns it."""
        from audit.report import render_report

        return render_report(self.files, Path(path), top)


def run(data, *, out: str | None = None, report_top: int = DEFAULT_REPORT_TOP, **options) -> Result:
    """Audit `data` with the CLI's options as keywords.

    `data`: a folder, a CSV/Parquet/JSON-lines manifest, 'fsdd', 'hf:NAME[:CONFIG][:SPLIT]', a saved
    Hugging Face dataset folder, a pandas DataFrame (path, label, extras) or a `datasets.Dataset`.

    Options are those of `python -m audit --help`, with '_' for '-' (encoder=..., folds=..., seed=...);
    `encoder` is one id or folder, or a list of several (the CLI's --encoders), each at most once.
    Nothing is written unless `out` is given.
    """
    known = {f.name for f in dataclasses.fields(RunOptions)} - {"data", "out"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    result = audit(RunOptions(data=data, out=out, **options), report_top=report_top)
    assert result is not None, "audit.run() runs in one process; use the CLI for several ranks"
    return result


def audit(opts: RunOptions, report_top: int = DEFAULT_REPORT_TOP, started: float | None = None) -> Result | None:
    """The run for `opts`, with its outputs written to opts.out if set; None on ranks other than 0.

    `started`: a time.perf_counter() reading when the caller's clock started (the CLI: when its process
    started, or when main(argv) was called from Python), so that summary.json's seconds account for the
    whole run, start-up included.
    """
    from audit import outputs
    from audit import summary as run_summary
    from audit.pipeline import run_audit

    start = time.perf_counter() if started is None else started
    startup = {"startup": time.perf_counter() - start} if started is not None else {}  # imports, parsing
    out = Path(opts.out) if opts.out else None
    if out is not None:
        outputs.prepare_out(out)
    resolved = opts.resolve()
    result = run_audit(resolved)
    if result is None:
        return None
    result = dataclasses.replace(result, seconds={**startup, **result.seconds})
    t = time.perf_counter()
    summary = run_summary.build_summary(result, resolved.as_dict(), t - start)
    files = outputs.run_files(result, summary)
    seconds = {"tables": time.perf_counter() - t}
    if out is not None:
        from audit.report import build_report

        from audit import precomputed

        t = time.perf_counter()
        outputs.write_outputs(out, files)
        if not resolved.embeddings:  # the user already holds them
            precomputed.write(out / "embeddings.parquet", result.data.files, result.data.emb)
        seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        build_report(out, top=report_top)
        seconds["report"] = time.perf_counter() - t
    summary = run_summary.final_seconds(summary, seconds, time.perf_counter() - start)
    files = dataclasses.replace(files, summary=summary)
    if out is not None:
        outputs.write_json(summary, out / "summary.json")  # again: now its seconds include the report
    return Result(run=result, files=files, out=out)
