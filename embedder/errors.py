"""The embedder's errors: both describe the caller's input, never a bug in arcmatch (see common/errors.py)."""

from common.errors import BadInput


class ImageError(BadInput):
    """An image could not be read, decoded, or is outside the accepted size limits."""


class ModelError(BadInput):
    """A model or checkpoint is unknown, incomplete, or does not match its ModelSpec."""
