"""Who made the mistake decides the error.

`UserError`: the user's argument or data is wrong; the CLI prints its message as one line and exits 2.
Internal invariants are plain `assert`s; a clip that cannot be read is not an error at all but a
skipped row with its reason.
"""


class UserError(Exception):
    """A mistake in the user's arguments or data, explained in one plain-English line."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most `limit` characters (its type's name when it has none)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__
