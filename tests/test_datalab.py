import numpy as np

from audit import datalab


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


def test_duplicate_groups_tell_exact_from_near(tmp_path):
    files = []
    for i, payload in enumerate([b"a" * 100, b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 50]):
        f = tmp_path / f"{i}.wav"
        f.write_bytes(payload)
        files.append(str(f))
    near_sets = [np.array([], int), np.array([], int), np.array([3]), np.array([2]), np.array([], int)]
    groups = datalab._duplicate_groups(files, near_sets)
    by_group = {g: (set(m["row"]), m["kind"].iloc[0]) for g, m in groups.groupby("group")}
    assert sorted(by_group.values(), key=lambda v: min(v[0])) == [({0, 1}, "exact"), ({2, 3}, "near")]
