"""Image -> L2-normalised embedding. This is the side that ships, so it owns the model and its ModelSpec.

Imports stay light here: the submodules pull in torch or onnxruntime only when used.
"""

from embedder.errors import ImageError, ModelError
from embedder.spec import ModelSpec

__all__ = ["ImageError", "ModelError", "ModelSpec"]
