"""One error family: each branch carries its exit code and HTTP status; every error raised on purpose is in it."""

import pytest

from common.errors import (
    EXIT_INTERNAL,
    ArcmatchError,
    BadInput,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    exit_code,
)
from embedder.errors import ImageError, ModelError
from indexer.errors import BackendUnavailable, CollectionNotFound, InvalidValue, ModelMismatch

BRANCHES = {BadInput: (2, 400), NotFound: (4, 404), Unavailable: (5, 503), Conflict: (6, 409),
            PayloadTooLarge: (2, 413)}


@pytest.mark.parametrize("kind", BRANCHES, ids=[k.__name__ for k in BRANCHES])
def test_each_branch_carries_its_exit_code_and_status(kind):
    assert (kind.exit_code, kind.http_status) == BRANCHES[kind] and kind.kind
    assert exit_code(kind("x")) == BRANCHES[kind][0]


@pytest.mark.parametrize("error, branch", [(ImageError, BadInput), (ModelError, BadInput), (InvalidValue, BadInput),
                                           (ModelMismatch, Conflict), (CollectionNotFound, NotFound),
                                           (BackendUnavailable, Unavailable)],
                         ids=lambda e: e.__name__)
def test_the_packages_errors_sit_in_the_family(error, branch):
    assert issubclass(error, branch) and issubclass(error, ArcmatchError)


def test_builtin_errors_are_not_sorted_as_bad_input():
    assert not issubclass(BadInput, ValueError)
    assert exit_code(ValueError("a numpy shape bug")) == EXIT_INTERNAL
    assert exit_code(KeyboardInterrupt()) == 130
