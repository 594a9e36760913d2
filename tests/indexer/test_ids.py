import pytest

from indexer.errors import InvalidValue
from indexer.ids import face_id, quote, validate_identity


def test_face_id_is_stable_positive_and_distinct():
    assert face_id("alice/001.jpg") == face_id("alice/001.jpg")
    assert face_id("alice/001.jpg") != face_id("alice/002.jpg")
    ids = [face_id(f"p/{i}") for i in range(10_000)]
    assert min(ids) >= 0 and max(ids) < 2**63 and len(set(ids)) == len(ids)


def test_quote_escapes_quotes_and_backslashes():
    assert quote('a"b') == '"a\\"b"'
    assert quote("a\\") == '"a\\\\"'
    assert quote('" or 1==1 or "') == '"\\" or 1==1 or \\""'


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 257, None])
def test_invalid_identities(bad):
    with pytest.raises(InvalidValue):
        validate_identity(bad)


def test_names_with_punctuation_are_fine():
    assert validate_identity("O'Brien, \"Jr.\" \\ 李") == "O'Brien, \"Jr.\" \\ 李"
