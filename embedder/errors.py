"""The embedder's errors: both describe the caller's input, never a bug in arcmatch (see common/errors.py)."""

from common.errors import BadInput


class ImageError(BadInput):
    """An image could not be read, decoded, or is outside the accepted size limits."""


class ModelError(BadInput):
    """A model or checkpoint is unknown, incomplete, or does not match its ModelSpec."""


class NoFace(ImageError):
    """No face in the photo, or none that passes the quality gate (the message gives each rejected face's reasons)."""

    http_status = 422  # the image is well formed; what it shows cannot be used
    kind = "no face"
