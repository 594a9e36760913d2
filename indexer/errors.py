"""The indexer's errors, translated from pymilvus at this edge so callers never catch MilvusException.

Each belongs to a branch of arcmatch's one error family (common/errors.py), which is how the CLI and the API
turn it into an exit code or an HTTP status. Their messages are the project's own words: pymilvus's text (hosts,
ports, internal names) goes to the log, not into these.
"""

from common.errors import ArcmatchError, BadInput, Conflict, NotFound, Unavailable


class IndexerError(ArcmatchError):
    """Base of every error the indexer raises on purpose."""


class InvalidValue(IndexerError, BadInput):
    """A value (identity id, vector, filter field) that cannot go into Milvus as given."""


class ModelMismatch(IndexerError, Conflict):
    """The collection holds vectors of another model: mixing them would make every score meaningless."""


class FacesAtStake(IndexerError, Conflict):
    """An alias move or a drop would take faces out of service or undo names, and the caller has not told their
    number back (`--lose N`): refused, as a re-embed's switch that leaves faces behind is (exit 6)."""


class NameTaken(IndexerError, Conflict):
    """A gallery name that differs from an existing gallery's only in case: the two galleries' folders (archive,
    clusters, Milvus Lite's files) would be one folder on a filesystem that ignores case (macOS, Windows)."""


class CollectionNotFound(IndexerError, NotFound):
    """The collection does not exist (nothing ingested yet, or a wrong name)."""


class BackendUnavailable(IndexerError, Unavailable):
    """Milvus could not be reached or refused the operation for a reason that is not the caller's input."""


class GalleryMoved(IndexerError, Unavailable):
    """The gallery's alias points at another model's collection: this process serves searches from its own
    collection until it is replaced, and takes no writes (they would miss the collection in service)."""
