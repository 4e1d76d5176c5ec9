import logging

import numpy as np

from audit import datalab
from audit.outputs import read_csv
from synthetic_set import clusters, write_set


def test_blockwise_knn_graph_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb[7] = emb[3]  # an exact duplicate sits at distance 0
    monkeypatch.setattr(datalab, "KNN_BLOCK_BYTES", 4 * 300 * 37)  # 37 rows a block: blocks must not matter
    graph = datalab.knn_graph(emb, k=5)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = 1 - x @ x.T
    np.fill_diagonal(dist, np.inf)
    expected = np.sort(dist, axis=1)[:, :5]
    assert (np.diff(graph.indptr) == 5).all()  # 5 stored neighbours per clip, zero distances included
    np.testing.assert_allclose(graph.data.reshape(300, 5), expected, atol=1e-5)
    assert graph.indices.reshape(300, 5)[3, 0] == 7 and graph.data.reshape(300, 5)[3, 0] < 1e-6


def test_wide_embeddings_are_searched_in_a_projection_and_reranked_exactly(monkeypatch):
    """Rows wider than KNN_PROJECT_FROM: candidates from a projection, distances exact in the full width."""
    rng = np.random.default_rng(1)
    emb = (rng.normal(size=(400, 6)) @ rng.normal(size=(6, 64)) + 0.05 * rng.normal(size=(400, 64))).astype(np.float32)
    emb[9] = emb[4]  # an exact duplicate sits at distance 0
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", 100)  # 400 clips: above it, so approximate
    monkeypatch.setattr(datalab, "KNN_PROJECT_FROM", 32)
    monkeypatch.setattr(datalab, "KNN_PROJECT_DIM", 8)
    monkeypatch.setattr(datalab, "KNN_BASIS_ROWS", 150)  # the basis from a sample of rows
    monkeypatch.setattr(datalab, "RERANK_BLOCK_BYTES", 4 * 64 * 30 * 7)  # 7 rows re-ranked at a time
    searched = []
    search = datalab._search
    monkeypatch.setattr(datalab, "_search", lambda x, k, device, **kw: searched.append(x.shape) or search(x, k, device, **kw))
    graph = datalab.knn_graph(emb, k=5)
    assert searched == [(400, 64), (400, 8)]  # the candidates came from the projection, not the 64-d rows
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = 1 - x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    idx, got = graph.indices.reshape(400, 5), graph.data.reshape(400, 5)
    np.testing.assert_allclose(got, np.take_along_axis(dist, idx, 1), atol=1e-5)  # exact distances of what it found
    assert (np.diff(got, axis=1) >= 0).all() and (idx != np.arange(400)[:, None]).all()
    exact = np.argsort(dist, axis=1)[:, :5]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, exact)])
    assert recall > 0.95, recall
    assert idx[4, 0] == 9 and got[4, 0] < 1e-6


def test_projected_search_keeps_k_candidates_when_k_exceeds_the_setting(monkeypatch):
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(200, 48)).astype(np.float32)
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", 50)
    monkeypatch.setattr(datalab, "KNN_PROJECT_FROM", 32)
    monkeypatch.setattr(datalab, "KNN_PROJECT_DIM", 8)
    monkeypatch.setattr(datalab, "KNN_CANDIDATES", 3)  # fewer than the k asked for
    graph = datalab.knn_graph(emb, k=5)
    assert (np.diff(graph.indptr) == 5).all()


def groups_of(sha1, near_sets):
    groups = datalab._duplicate_groups(sha1, near_sets)
    by_group = {g: (set(m["row"]), m["kind"].iloc[0]) for g, m in groups.groupby("group")}
    return sorted(by_group.values(), key=lambda v: min(v[0]))


def test_duplicate_groups_tell_exact_from_near():
    none = np.array([], int)
    near_sets = [none, none, np.array([3]), np.array([2]), none]
    assert groups_of(["a", "a", "b", "c", "d"], near_sets) == [({0, 1}, "exact"), ({2, 3}, "near")]


def test_two_identical_pairs_joined_by_a_near_link_are_near_not_exact():
    none = np.array([], int)
    near_sets = [none, np.array([2]), np.array([1]), none]  # rows 0=1 (bytes), 2=3 (bytes), 1~2 (embedding)
    assert groups_of(["a", "a", "b", "b"], near_sets) == [({0, 1, 2, 3}, "near")]


def test_non_iid_is_only_checked_in_an_order_the_user_gave():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)  # sorted by label, as audit orders a folder
    emb = (rng.normal(size=(120, 8)) + labels[:, None] * 3).astype(np.float32)
    probs = np.full((120, 3), 0.1)
    probs[np.arange(120), labels] = 0.8
    sha1 = [f"{i:040x}" for i in range(120)]
    folder = datalab.find_data_issues(emb, labels, probs, sha1, user_order=False)
    table = datalab.find_data_issues(emb, labels, probs, sha1, user_order=True)
    assert "non_iid" not in set(folder.summary["issue_type"])
    assert "non_iid" in set(table.summary["issue_type"])


def clustered(n, dim=32, classes=20, seed=0):
    """(n, dim) float32: class centres plus noise, with rows 7 and 3 identical (a duplicate at distance 0)."""
    rng = np.random.default_rng(seed)
    emb = (rng.normal(size=(classes, dim))[np.arange(n) % classes] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    emb[7] = emb[3]
    return emb


def brute_force(emb):
    """(n, n) cosine distances, itself at inf: small n only."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = 1 - x @ x.T  # (n, n)
    np.fill_diagonal(dist, np.inf)
    return dist


def test_approximate_knn_graph_above_the_threshold_keeps_the_exact_layout(monkeypatch):
    n, k = 3000, 10
    emb = clustered(n)
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", n)
    exact = datalab.knn_graph(emb, k=k)
    calls = []
    approximate = datalab._nn_descent_knn
    monkeypatch.setattr(datalab, "_nn_descent_knn", lambda *a: calls.append(a) or approximate(*a))
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", 1000)
    graph = datalab.knn_graph(emb, k=k)
    assert len(calls) == 1  # the NN-descent path ran
    assert graph.shape == exact.shape == (n, n)
    assert (graph.indptr == exact.indptr).all() and graph.indptr.dtype == exact.indptr.dtype
    assert graph.indices.dtype == exact.indices.dtype and graph.data.dtype == exact.data.dtype == np.float64
    idx, dist = graph.indices.reshape(n, k), graph.data.reshape(n, k)
    assert (idx != np.arange(n)[:, None]).all()  # never itself
    assert (np.diff(dist, axis=1) >= 0).all()  # ascending
    assert all(len(set(row)) == k for row in idx)  # k distinct neighbours
    truth = brute_force(emb)
    np.testing.assert_allclose(dist, truth[np.arange(n)[:, None], idx], atol=1e-5)  # the pairs' true distances
    expected = np.argsort(truth, axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, expected)])
    assert recall >= 0.95, recall
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dist[3, 0] < 1e-6 and dist[7, 0] < 1e-6  # the duplicate


def test_nn_descent_gaps_and_misplaced_self_give_the_exact_graph(monkeypatch):
    """Self is dropped wherever NN-descent lists it; rows with too few neighbours found (-1) and rows whose
    distances reach pynndescent's ceiling of 1 (cos <= 0) are searched exactly."""
    import pynndescent

    n, k = 400, 5
    emb = clustered(n, dim=8, classes=4)
    truth = brute_force(emb)
    np.fill_diagonal(truth, -1)  # itself first, as pynndescent lists it
    cand = np.argsort(truth, axis=1, kind="stable")[:, :12]  # (n, 12)
    dist = np.take_along_axis(truth, cand, 1).clip(0, 1).astype(np.float32)  # (n, 12)
    cand[7, :2] = [3, 7]  # the duplicate listed before the clip itself
    cand[::3, 4:] = -1  # every third row: only 3 others found
    dist[1::50, 3:] = 1.0  # saturated: the true distance may be more

    class FakeIndex:
        def __init__(self, data, n_neighbors, **kw):
            self.neighbor_graph = (cand[:, :n_neighbors], dist[:, :n_neighbors])

    searched = []
    exact_knn = datalab.exact_knn
    monkeypatch.setattr(datalab, "exact_knn",
                        lambda emb, k, rows: searched.append(rows) or exact_knn(emb, k, rows=rows))
    monkeypatch.setattr(pynndescent, "NNDescent", FakeIndex)
    monkeypatch.setattr(datalab, "NN_DESCENT_NEIGHBORS", 11)
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", 100)
    graph = datalab.knn_graph(emb, k=k)
    monkeypatch.setattr(datalab, "exact_knn", exact_knn)
    assert len(searched) == 1 and (searched[0] == np.union1d(np.arange(0, n, 3), np.arange(1, n, 50))).all()
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", n)
    exact = datalab.knn_graph(emb, k=k)
    same = [set(a) == set(b) for a, b in zip(graph.indices.reshape(n, k), exact.indices.reshape(n, k))]
    assert all(same)  # as sets: rows 3 and 7 tie wherever they are both neighbours
    np.testing.assert_allclose(graph.data, exact.data, atol=1e-6)


def test_a_gpu_stays_exact_above_the_threshold(monkeypatch):
    calls = []
    exact_knn = datalab.exact_knn
    monkeypatch.setattr(datalab, "exact_knn", lambda emb, k, device: calls.append(device) or exact_knn(emb, k))
    monkeypatch.setattr(datalab, "_nn_descent_knn", None)  # would raise if called
    monkeypatch.setattr(datalab, "EXACT_KNN_MAX", 10)
    datalab.knn_graph(clustered(100), k=5, device="cuda")
    assert calls == ["cuda"]


def test_a_planted_outlier_and_a_rare_class_are_what_the_run_reports(tmp_path):
    """outliers.csv, class_imbalance.csv and Datalab's counts by their content, through a whole run (from
    embeddings: no audio); and cleanlab's logger is at the caller's level again afterwards."""
    import audit

    counts = [80, 80, 80, 5]  # the last class: 2% of the clips, under Datalab's 0.1 / K = 2.5%
    emb, labels = clusters(counts, dim=16)
    emb[200] = 6.0 * np.eye(16)[12]  # row 200 (labelled 2) points where no class does: cosine-far from all
    manifest, npy = write_set(tmp_path / "set", emb, labels)
    logger = logging.getLogger("cleanlab")
    before = logger.level
    logger.setLevel(logging.INFO)  # e.g. a notebook that wants cleanlab's notes
    try:
        result = audit.run(manifest, embeddings=npy, out=str(tmp_path / "out"), devices=1, progress=False)
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)
    out = tmp_path / "out"
    outliers = read_csv(out / "outliers.csv")
    assert outliers["path"].iloc[0] == "c200.wav" and len(outliers) > 1, outliers  # the most unusual clip first
    imbalance = read_csv(out / "class_imbalance.csv")
    assert imbalance["label"].tolist() == ["0", "1", "2", "3"] and imbalance["n_clips"].tolist() == counts
    np.testing.assert_allclose(imbalance["share"], np.array(counts) / sum(counts), rtol=1e-5)
    issues = result.issues
    assert imbalance["n_label_issues"].tolist() == [int((issues["given_label"] == c).sum()) for c in "0123"]
    found = read_csv(out / "data_issues.csv").set_index("issue_type")["num_issues"]
    assert found["class_imbalance"] == 5 and result.summary["data_issues"]["n_class_imbalance"] == 5
    assert result.summary["data_issues"]["n_outliers"] == len(read_csv(out / "outliers.csv"))
