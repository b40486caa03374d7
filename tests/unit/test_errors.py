"""Unit tests for padless.errors: the hierarchy and status_for()."""

from __future__ import annotations

import pytest

from padless import errors as E


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (E.ItemError("x"), 422),
        (E.EmptyInputError("x"), 422),
        (E.TooLongError("x"), 422),
        (E.DecodeError("x"), 422),
        (E.InputError("x"), 422),
        (E.OverloadedError("x"), 429),
        (E.DeadlineExceededError("x"), 504),
        (E.NotReadyError("x"), 503),
        (E.ReplicaLostError("x"), 503),
        (E.BatchFailedError("x"), 500),
        (E.ModelError("x"), 424),
        (E.ConfigError("x"), 500),
        (E.PadlessError("x"), 500),
    ],
)
def test_status_for_each_class(error, status):
    assert E.status_for(error) == status


@pytest.mark.parametrize(
    "error", [ValueError("x"), RuntimeError("x"), KeyError("x"), Exception("x"), KeyboardInterrupt()]
)
def test_unknown_exceptions_are_500(error):
    assert E.status_for(error) == 500


def test_user_subclasses_inherit_the_most_specific_status():
    class MyTooLong(E.TooLongError):
        pass

    class MyOverloaded(E.OverloadedError):
        pass

    class MyPadless(E.PadlessError):
        pass

    class Mixed(E.NotReadyError, ValueError):
        pass

    assert E.status_for(MyTooLong("x")) == 422
    assert E.status_for(MyOverloaded("x")) == 429
    assert E.status_for(MyPadless("x")) == 500
    assert E.status_for(Mixed("x")) == 503


def test_hierarchy_and_codes():
    for cls in (E.EmptyInputError, E.TooLongError, E.DecodeError):
        assert issubclass(cls, E.ItemError)
    for cls in E.STATUS_FOR_ERROR:
        assert issubclass(cls, E.PadlessError)
    codes = [cls.code for cls in (E.PadlessError, E.ConfigError, E.ModelError, E.InputError, E.ItemError,
                                  E.EmptyInputError, E.TooLongError, E.DecodeError, E.OverloadedError,
                                  E.DeadlineExceededError, E.NotReadyError, E.ReplicaLostError,
                                  E.BatchFailedError)]
    assert len(set(codes)) == len(codes)
    assert E.TooLongError.code == "too_long"
    assert E.DecodeError.code == "undecodable"
    assert E.EmptyInputError.code == "empty_input"
