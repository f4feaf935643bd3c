"""The one error type for bad datasets, and the warning helper for documented skips."""
from __future__ import annotations

import warnings


class DataError(ValueError):
    """A dataset, annotation file or data config that cannot be used as it is.

    The message names the offending file or value and says how to fix it.
    """


class DataWarning(UserWarning):
    """Something in the data was skipped or repaired; the message gives the count."""


def warn_data(message: str) -> None:
    """Emits a ``DataWarning`` pointing at the caller's caller (the user's code)."""
    warnings.warn(message, DataWarning, stacklevel=3)
