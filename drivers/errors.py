"""The error types every driver raises (their own module, so drivers.session and drivers.retry can share them)."""


class InstrumentError(RuntimeError):
    """An instrument refused a command, answered wrongly, or is not the one configured."""


class LimitError(ValueError):
    """A value outside the configured safe limits; raised before anything is sent."""
