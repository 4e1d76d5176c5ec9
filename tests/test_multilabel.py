"""Multi-label tags end to end: label cells, one-vs-rest heads, the worst-tag ranking, outputs."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import audit
from audit import labels as lab
from audit.errors import UserError
from audit.evaluate import corrupt_tags
from audit.heads import out_of_fold_probs
from audit.label_issues import find_label_issues, tag_margins
from audit.folds import fold_ids
from audit.options import DEFAULT_FILTER_BY


def test_cells_become_sorted_tag_sets_and_a_separator_without_the_flag_is_one_line():
    got = lab.encode(pd.Series(["dog;bark", "", "speech ; dog", "bark"]), multi_label=True)
    assert got.classes == ["bark", "dog", "speech"]
    assert got.target.tolist() == [[1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert lab.as_text(got.target, got.classes).tolist() == ["bark;dog", "", "dog;speech", "bark"]
    with pytest.raises(UserError, match="add --multi-label"):
        lab.encode(pd.Series(["dog;bark", "cat"]), multi_label=False)


def test_folds_keep_each_tags_frequency_balanced():
    rng = np.random.default_rng(0)
    target = (rng.random((600, 8)) < np.linspace(0.05, 0.5, 8)).astype(np.int8)
    folds = fold_ids(target, 5, seed=0)
    for k in range(8):
        per_fold = np.bincount(folds[target[:, k] == 1], minlength=5)
        assert per_fold.max() - per_fold.min() <= max(3, 0.25 * per_fold.mean()), (k, per_fold)


def synthetic(n=400, k=6, seed=0):
    rng = np.random.default_rng(seed)
    target = (rng.random((n, k)) < 0.3).astype(np.int8)
    centres = rng.normal(0, 1, (k, 32))
    x = target @ centres * 3 + rng.normal(0, 1, (n, 32))  # each tag adds its own direction
    return x.astype(np.float32), target


def test_one_vs_rest_heads_are_out_of_fold_sigmoids():
    x, target = synthetic()
    folds = fold_ids(target, 5, seed=0)
    p = out_of_fold_probs(x, target, folds, 6)
    assert p.shape == (400, 6) and ((p > 0) & (p < 1)).all()
    assert ((p >= 0.5) == target.astype(bool)).mean() > 0.95
    other = target.copy()
    other[11] = 1 - other[11]
    assert np.allclose(p[11], out_of_fold_probs(x, other, folds, 6)[11], atol=1e-5)


def test_corrupted_tags_rank_first_and_name_the_missing_or_extra_tag():
    x, target = synthetic(n=600, seed=1)
    noisy, corrupted = corrupt_tags(target, 0.05, np.random.default_rng(0))
    assert corrupted.sum() == 30
    p = out_of_fold_probs(x, noisy, fold_ids(noisy, 5, seed=0), 6)
    issues = find_label_issues(noisy, p, filter_by=DEFAULT_FILTER_BY)
    assert corrupted[issues.order[:30]].mean() > 0.8
    # where a tag was dropped and the clip is flagged, the dropped tag is named missing
    dropped = [(i, np.flatnonzero((target[i] == 1) & (noisy[i] == 0))) for i in np.flatnonzero(corrupted)]
    named = [issues.missing[i, t].all() for i, t in dropped if len(t) and issues.flagged[i]]
    assert np.mean(named) > 0.8


def test_a_tag_the_heads_are_unsure_of_everywhere_does_not_bury_a_sure_tags_error():
    rng = np.random.default_rng(0)
    n = 200
    given = np.zeros((n, 2), np.int8)
    given[::2, 0] = 1  # tag 0 the heads are sure of: p 0.99 where given, 0.01 where not
    given[:, 1] = rng.random(n) < 0.7  # tag 1 the heads are lukewarm about: p 0.55-0.65 where given, 0.35-0.45 not
    p = np.column_stack([np.where(given[:, 0] == 1, 0.99, 0.01),
                         np.abs(1 - given[:, 1] - rng.uniform(0.55, 0.65, n))])
    p[1, 0] = 0.3  # clip 1 lacks tag 0, and the heads give it 0.3: a likely missing tag (raw score 0.7)
    issues = find_label_issues(given, p, filter_by=DEFAULT_FILTER_BY)
    assert issues.order[0] == 1  # raw scores would put ~all clips' tag 1 (0.55-0.65) before clip 1's 0.7
    assert tag_margins(given, p, "self_confidence")[1].argmin() == 0  # its worst tag: what a flag would change
    typical = issues.quality[np.arange(n) != 1]
    assert abs(np.median(typical) - 0.5) < 0.1 and issues.quality[1] < 0.05  # 0.5: a clip like its tags' others


def test_a_flagged_clip_no_tag_of_which_cleanlab_names_gets_its_worst_tag_changed(monkeypatch):
    import cleanlab.multilabel_classification.filter as cleanlab_filter

    x, target = synthetic(n=400, seed=4)
    noisy, corrupted = corrupt_tags(target, 0.05, np.random.default_rng(1))
    p = out_of_fold_probs(x, noisy, fold_ids(noisy, 5, seed=0), 6)
    monkeypatch.setattr(cleanlab_filter, "find_multilabel_issues_per_class",
                        lambda tags, probs, **_: np.zeros(probs.shape, bool))  # cleanlab names no tag anywhere
    issues = find_label_issues(noisy, p, filter_by=DEFAULT_FILTER_BY)
    flagged = np.flatnonzero(issues.flagged)
    assert len(flagged) >= 10
    changed = issues.suggested[flagged] != noisy[flagged]  # (F, K)
    worst = tag_margins(noisy, p, "self_confidence")[flagged].argmin(1)
    assert (changed.sum(1) == 1).all() and (changed.argmax(1) == worst).all()
    assert (issues.missing | issues.extra)[flagged].sum(1).tolist() == [1] * len(flagged)


def test_a_tag_on_every_clip_or_on_none_is_ranked_and_never_crashes_cleanlab():
    x, target = synthetic(n=300, seed=2)
    noisy, corrupted = corrupt_tags(target, 0.05, np.random.default_rng(0))
    noisy = np.column_stack([noisy, np.ones(300, np.int8), np.zeros(300, np.int8)])  # "speech" on every clip, none
    p = out_of_fold_probs(x, noisy, fold_ids(noisy, 5, seed=0), 8)
    for filter_by in (DEFAULT_FILTER_BY, "confident_learning"):
        issues = find_label_issues(noisy, p, filter_by=filter_by)
        assert corrupted[issues.order[:15]].mean() > 0.7
        assert not issues.missing[:, 6:].any() and not issues.extra[:, 6:].any()
    assert np.isinf(tag_margins(noisy, p, "self_confidence")[:, 6:]).all()  # never a clip's worst tag
    nothing_varies = find_label_issues(np.ones((40, 3), np.int8), np.full((40, 3), 0.9), filter_by=DEFAULT_FILTER_BY)
    assert not nothing_varies.flagged.any() and (nothing_varies.quality == 0.5).all()


def test_a_rare_tags_lone_error_is_measured_against_a_bar_it_did_not_set():
    x, target = synthetic(n=300, seed=3)
    given = np.column_stack([target, np.zeros(300, np.int8)])
    given[5, 6] = 1  # the only clip given tag 6, and the heads see no trace of it
    p = np.column_stack([out_of_fold_probs(x, target, fold_ids(target, 5, seed=0), 6), np.full(300, 0.01)])
    issues = find_label_issues(given, p, filter_by=DEFAULT_FILTER_BY)
    assert issues.order[0] == 5  # leaving the clip out of its own bar: the prior over all tags' given scores


def test_a_multi_label_run_writes_tag_columns_and_relabels_tag_sets(tmp_path, fsdd_dir, ecapa, cache_dir):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):  # 2 digits of one speaker per clip; tags = the digits
        speaker = ["theo", "george", "jackson"][i % 3]
        digits = sorted(rng.choice(4, 2, replace=False).tolist())
        wav = np.concatenate([sf.read(fsdd_dir / f"{d}_{speaker}_{(i // 3) % 20}.wav", dtype="float32")[0]
                              for d in digits])
        sf.write(tmp_path / f"{i}.wav", wav, 8000)
        rows.append((f"{i}.wav", ";".join(map(str, digits))))
    kept, dropped = rows[0][1].split(";")
    rows[0] = (rows[0][0], kept)  # one tag dropped on purpose: the run must name it missing
    # a 25 s recording (three 10 s windows): its steps span the windows, coarsened to MAX_STEPS
    parts = [sf.read(fsdd_dir / f"{d}_theo_{j}.wav", dtype="float32")[0] for j in range(25) for d in (0, 1)]
    sf.write(tmp_path / "long.wav", np.concatenate(parts + [np.zeros(8000 * 25, np.float32)])[: 8000 * 25], 8000)
    rows.append(("long.wav", "0;1"))
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    result = audit.run(str(tmp_path / "m.csv"), out=str(tmp_path / "out"), multi_label=True, encoder=ecapa,
                       features="frames", cache_dir=str(cache_dir), devices=1, progress=False)
    from audit.steps import MAX_STEPS

    steps = result.run.data.steps  # every clip's multiple-instance steps, from the cache
    counts = np.diff(steps.offsets)
    assert len(steps) == 61 and counts[-1] == MAX_STEPS and (counts[:-1] >= 3).all() and (counts[:-1] < 30).all()
    scores = pd.read_csv(tmp_path / "out" / "scores.csv", dtype=str, keep_default_na=False)
    assert list(scores.columns[:6]) == ["rank", "path", "given_tags", "suggested_tags", "missing_tags", "extra_tags"]
    assert result.summary["multi_label"] and result.pred_probs.shape == (61, 4)
    assert (tmp_path / "out" / "report.html").is_file()
    relabel = tmp_path / "r.csv"
    from audit import outputs

    outputs.write_relabelled_manifest(result.run, relabel)
    r = pd.read_csv(relabel, dtype=str, keep_default_na=False)
    flagged = result.issues
    for row in flagged.itertuples():
        assert r.loc[row.row, "label"] == row.suggested_tags
    planted = scores.set_index("path").loc["0.wav"]
    assert planted["is_label_issue"] == "True" and planted["missing_tags"] == dropped, planted
    assert planted["suggested_tags"] == ";".join(sorted([kept, dropped]))
