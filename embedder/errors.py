"""The embedder's errors. Both are ValueErrors: they describe bad input, never a bug in arcmatch.

The CLI and the API map them to an exit code / HTTP 4xx (see jobs/errors.py).
"""


class ImageError(ValueError):
    """An image could not be read, decoded, or is outside the accepted size limits."""


class ModelError(ValueError):
    """A model or checkpoint is unknown, incomplete, or does not match its ModelSpec."""
