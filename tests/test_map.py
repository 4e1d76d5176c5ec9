"""The report's 2-D map (pipeline.pca_2d): the top two principal components, without a (D, D) eigh."""

import numpy as np
import pytest

from audit.pipeline import pca_2d


def _exact_map(emb: np.ndarray) -> np.ndarray:
    x = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)  # (N, D)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T  # (N, 2)


@pytest.mark.parametrize("n,dim", [(40, 6144), (600, 256)])
def test_map_is_the_top_two_principal_components(n, dim):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, dim)) * 2  # (C, D)
    emb = (centres[rng.integers(0, 6, n)] + rng.standard_normal((n, dim))).astype(np.float32)  # (N, D)
    got, want = pca_2d(emb), _exact_map(emb.astype(np.float64))
    assert got.shape == (n, 2)
    for axis in range(2):
        assert abs(np.corrcoef(got[:, axis], want[:, axis])[0, 1]) > 0.999


def test_map_is_the_same_every_run_and_for_any_chunking(monkeypatch):
    emb = np.random.default_rng(1).standard_normal((300, 50)).astype(np.float32)
    first = pca_2d(emb)
    monkeypatch.setattr("audit.rows.BLOCK_BYTES", 8 * 50 * 7)  # 7 rows a block
    np.testing.assert_allclose(pca_2d(emb), first, atol=1e-9)


def test_map_leaves_the_callers_embeddings_alone():
    emb = np.random.default_rng(3).standard_normal((50, 8))  # float64, fewer rows than the sample: no copy made by a cast
    before = emb.copy()
    pca_2d(emb)
    np.testing.assert_array_equal(emb, before)


def test_map_of_one_dimensional_embeddings_has_a_flat_second_axis():
    emb = np.arange(10, dtype=np.float32)[:, None]  # (N, 1)
    out = pca_2d(emb)
    assert out.shape == (10, 2) and np.all(out[:, 1] == 0) and np.ptp(out[:, 0]) > 0


def test_map_of_a_large_set_fits_its_axes_on_a_sample(monkeypatch):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((6, 40)) * 2  # (C, D)
    emb = (centres[rng.integers(0, 6, 3000)] + rng.standard_normal((3000, 40))).astype(np.float32)  # (N, D)
    want = _exact_map(emb.astype(np.float64))
    monkeypatch.setattr("audit.pipeline.MAP_SAMPLE_ROWS", 600)  # axes from 600 of the 3,000 rows
    got = pca_2d(emb)
    assert got.shape == (3000, 2)
    for axis in range(2):
        assert abs(np.corrcoef(got[:, axis], want[:, axis])[0, 1]) > 0.99
