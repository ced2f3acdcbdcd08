"""The project's own exceptions: each message names what is wrong and where."""


class NightrecError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(NightrecError):
    """A configuration file or value is missing or invalid."""


class InputError(NightrecError):
    """An input (raw delivery, partition, file) is missing, unreadable or inconsistent."""


class ReconciliationError(NightrecError):
    """Row counts between zones do not add up: a row would have been lost silently."""


class NothingToProcess(NightrecError):
    """The requested range holds no deliverable day (e.g. past the end of a bundled history); skip, do not fail."""


class QualityCheckFailed(NightrecError):
    """A critical data quality expectation failed; the message names the table, the expectation and sample rows."""


class HistoryTooShort(InputError):
    """The data is shorter than the training split needs (evaluation + ranker windows + some days to train on)."""


class RunStopped(NightrecError):
    """An Airflow run was stopped from outside (SIGTERM or SIGHUP passed on to it) before it ended."""
