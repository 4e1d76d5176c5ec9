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
