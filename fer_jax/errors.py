"""Errors a user can fix from the message alone: every CLI prints them as one line, without a traceback.

Anything that is not a `UserError` is a bug in fer_jax and keeps its traceback. Every class here
names what was wrong and where (file, clip id, config key) and what to do, in its message.
"""

from tfds_dfew.errors import UserError  # noqa: F401  (the base, shared with the data layer's own errors)


class ConfigError(UserError, ValueError):
    """A config value that cannot work (the message names the key and what to use instead)."""


class MissingError(UserError, FileNotFoundError):
    """A file, folder, dataset or checkpoint that is not where the command expects it."""


class DatasetNotFoundError(MissingError):
    """The configured TFDS dataset is not built in data_dir."""


class FeatureSetupError(ConfigError):
    """Cached features were made by another generator setup than the config expects."""


class WorkdirConflictError(UserError, ValueError):
    """The workdir holds a run of another config."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint does not fit the model/optimizer it is restored into."""


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


class BadInputError(UserError, ValueError):
    """A user's input file (embeddings, video, weights file) cannot be used as it is."""


class RunStopped(UserError):
    """A run was stopped (SIGTERM, Ctrl-C) after saving a checkpoint; rerunning the same command resumes it.

    Exit status 75 (EX_TEMPFAIL, "try again later"): schedulers that requeue on it resume the run.
    """

    exit_code = 75
