"""The data layer's user-facing errors: a message that is the whole story, printed as one `error:` line.

`UserError` is the base of every error a user can fix from its message alone (wrong path, damaged
file, a release that does not fit its layout). It lives here, at the bottom, so the readers and
builders need nothing from `fer_jax`; `fer_jax.errors` builds its own errors on it, and every CLI
prints any `UserError` as one line and exits with its `exit_code`.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message is the whole story for the user (exit status `exit_code`)."""

    exit_code = 2


class ReleaseError(UserError, ValueError):
    """A dataset release on disk is not usable as it is; the message says where and what to do."""
