"""Errors a cell raises for bad input; the CLIs turn them into one line and exit code 2."""


class CellError(ValueError):
    """Base class: a problem with the user's input, reported as one clear line."""


class ConfigError(CellError):
    """An invalid hyperparameter or option (unknown task, ratio outside (0, 1], ...)."""


class DataError(CellError):
    """A missing, unreadable or malformed data file, or no reachable data source."""


class ModelError(CellError):
    """An encoder that cannot be found locally nor fetched from the hub."""


class TrainingDiverged(RuntimeError):
    """A NaN or infinite loss; the message names the epoch and the step."""
