"""The indexer's errors, translated from pymilvus at this edge so callers never catch MilvusException.

They derive from the builtin category they belong to (bad value, not found, unreachable), which is how jobs/
maps them to exit codes and HTTP statuses.
"""


class IndexerError(Exception):
    """Base of every error the indexer raises on purpose."""


class InvalidValue(IndexerError, ValueError):
    """A value (identity id, vector, filter field) that cannot go into Milvus as given."""


class ModelMismatch(IndexerError, ValueError):
    """The collection holds vectors of another model: mixing them would make every score meaningless."""


class CollectionNotFound(IndexerError, LookupError):
    """The collection does not exist (nothing ingested yet, or a wrong name)."""


class BackendUnavailable(IndexerError, ConnectionError):
    """Milvus could not be reached or refused the operation for a reason that is not the caller's input."""
