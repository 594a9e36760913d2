import pytest

from indexer.errors import InvalidValue
from indexer.ids import face_id, quote, validate_identity, validate_threshold


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


def test_a_name_is_one_identity_however_its_accents_are_typed():
    assert validate_identity("Zoe\u0308 Cafe\u0301") == validate_identity("Zo\u00eb Caf\u00e9") == "Zo\u00eb Caf\u00e9"
    assert validate_identity("\u0622\u200c\u0645") == "\u0622\u200c\u0645"  # a joiner inside a name is part of it


@pytest.mark.parametrize("name, reason", [
    ("\u200b", "visible"), ("\ufeff \u202e", "visible"), ("\u0301", "visible"),
    ("\ufffd", "U\\+FFFD"), ("Jos\ufffd", "U\\+FFFD"), (".", "a URL path"), ("..", "a URL path"),
])
def test_invisible_names_and_names_that_were_not_utf8_are_refused(name, reason):
    with pytest.raises(InvalidValue, match=reason):
        validate_identity(name)


def test_names_with_punctuation_are_fine():
    assert validate_identity("O'Brien, \"Jr.\" \\ 李") == "O'Brien, \"Jr.\" \\ 李"


def test_a_threshold_is_a_cosine_and_nothing_beyond():
    assert [validate_threshold(t) for t in (-1, 0.37, 1)] == [-1.0, 0.37, 1.0]
    for bad in (1.0001, -3, 5, float("nan"), float("inf")):
        with pytest.raises(InvalidValue, match="between -1 and 1"):
            validate_threshold(bad)


def test_a_collection_is_never_kept_with_a_threshold_no_cosine_reaches():
    from types import SimpleNamespace

    from indexer.records import CollectionInfo

    spec = SimpleNamespace(version="m", embedding_size=4, to_dict=dict)
    assert CollectionInfo.of_model(spec, None).threshold is None and CollectionInfo.of_model(spec, 0.4).threshold == 0.4
    with pytest.raises(InvalidValue, match="between -1 and 1"):  # a re-embed given 5 answered every search "unknown"
        CollectionInfo.of_model(spec, 5)
