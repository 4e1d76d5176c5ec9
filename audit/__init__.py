"""audit: find label errors in audio classification datasets.

The stages, data flowing one way (N clips, K classes, D embedding dim):
    manifest -> embeddings (N, D) -> out-of-fold probabilities (N, K) -> ranked issues -> outputs

    import audit
    result = audit.run("clips/", encoder="speechbrain/spkrec-ecapa-voxceleb")
"""

__version__ = "0.1.0"
__all__ = ["run", "Result", "RunOptions", "UserError"]


def __getattr__(name):  # lazy: `python -m audit --help` must not wait for torch and pandas
    if name in ("run", "Result"):
        from audit import api

        return getattr(api, name)
    if name == "RunOptions":
        from audit.options import RunOptions

        return RunOptions
    if name == "UserError":
        from audit.errors import UserError

        return UserError
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
