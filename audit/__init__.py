"""audit: find label errors in audio classification datasets.

The stages, data flowing one way (N clips, K classes, D embedding dim):
    manifest -> embeddings (N, D) -> out-of-fold probabilities (N, K) -> ranked issues -> outputs
"""

__version__ = "0.1.0"
