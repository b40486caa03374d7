"""One error hierarchy for padless, and the one table that maps it to HTTP status codes.

Every error padless raises on purpose derives from :class:`PadlessError`. Its message is written for the user (one
clear line, no traceback); the CLI prints it and exits non-zero, and a server maps it to a status through
:data:`STATUS_FOR_ERROR`. Anything else is a bug and is reported generically.
"""

from __future__ import annotations


class PadlessError(Exception):
    """Base class: an error whose message is safe and meant to be shown to the user."""

    code = "padless_error"


class ConfigError(PadlessError):
    """An impossible or invalid combination of options, refused at start-up."""

    code = "config_error"


class ModelError(PadlessError):
    """The model cannot be found, loaded, or is not a sequence classifier."""

    code = "model_error"


class InputError(PadlessError):
    """The input file, column or format is unusable as a whole."""

    code = "input_error"


class ItemError(PadlessError):
    """One input item cannot be scored (empty, too long with truncation off, undecodable)."""

    code = "item_error"


class EmptyInputError(ItemError):
    code = "empty_input"


class TooLongError(ItemError):
    code = "too_long"


class DecodeError(ItemError):
    code = "undecodable"


class OverloadedError(PadlessError):
    """The request queue is full; the client should retry later."""

    code = "overloaded"


class DeadlineExceededError(PadlessError):
    code = "deadline_exceeded"


class NotReadyError(PadlessError):
    code = "not_ready"


class ReplicaLostError(NotReadyError):
    """The replica running this request died (Serve is replacing it): a 503 the client may retry."""

    code = "replica_lost"


class BatchFailedError(PadlessError):
    """The forward pass for this item's batch failed; details are in the server log, never in the response."""

    code = "internal_error"


# One status table: the server looks errors up here, most specific class first.
STATUS_FOR_ERROR: dict[type[PadlessError], int] = {
    ItemError: 422,
    InputError: 422,
    OverloadedError: 429,
    DeadlineExceededError: 504,
    NotReadyError: 503,
    ModelError: 424,
    ConfigError: 500,
    PadlessError: 500,
}


def status_for(error: BaseException) -> int:
    """HTTP status for an error; 500 for anything that is not a :class:`PadlessError`."""
    for cls in type(error).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]  # type: ignore[index]
    return 500
