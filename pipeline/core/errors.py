"""Errors raised at the pipeline's edges; ``main()`` turns them into one-line messages."""


class EvergreenError(Exception):
    """A problem a user can fix (bad params, bad data, missing file); reported without a traceback."""


class ParamsError(EvergreenError):
    """``params.yaml`` has an unknown key, a wrong type or an impossible value."""


class DataError(EvergreenError):
    """Input data is missing, unreadable or violates the schema."""


class ExportError(EvergreenError):
    """The exported model failed its own verification."""


class TrainError(EvergreenError):
    """Training could not run to the end (e.g. a distributed rank failed)."""


class LockTimeout(EvergreenError):
    """Another process held a file lock for longer than the caller would wait."""
