"""Third-party (and exported) ONNX face models through onnxruntime.

The network is a black box, so everything about its input comes from a ModelSpec written beside it: input size,
crop box, mean/std, RGB or BGR, flip-TTA. Models exported with a fixed batch of one (MobileFaceNet, many
insightface exports) are fed one image at a time; others get whole batches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from embedder.embed import Embedder
from embedder.errors import ModelError
from embedder.layout import Calibration
from embedder.spec import ModelSpec

ONNX_FILE = "model.onnx"


def file_version(path: Path, spec: ModelSpec) -> str:
    """The model's identity: its bytes and the preprocessing that defines what its vectors mean.

    A field at its "absent" default (alignment "none") is left out, so specs written before the field existed keep
    the version, and the collections, they already have."""
    digest = hashlib.sha256(path.read_bytes())
    settings = {k: v for k, v in spec.to_dict().items() if k != "version"}
    if settings.get("alignment") == "none":
        del settings["alignment"]
    digest.update(repr(sorted(settings.items())).encode())
    return f"onnx-{path.stem}-d{spec.embedding_size}-{digest.hexdigest()[:12]}"


class OnnxEmbedder(Embedder):
    def __init__(
        self,
        path: str | Path,
        spec: ModelSpec,
        *,
        batch_size: int = 64,
        calibration: Calibration | None = None,
        threads: int | None = None,
    ) -> None:
        """`threads`: onnxruntime's intra-op threads (default: one per core). A process that shares the machine
        with other work, such as an ingestion actor beside the decode tasks, should ask for its share."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"ONNX model {path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own untyped errors for invalid files
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{path} must take one NCHW image input, it takes {[i.shape for i in inputs]}")
        self.input_name = inputs[0].name
        fixed_batch = inputs[0].shape[0]
        self.batch_size = fixed_batch if isinstance(fixed_batch, int) and fixed_batch > 0 else batch_size
        height, width = inputs[0].shape[2:]
        if isinstance(height, int) and (height, width) != tuple(spec.input_size):
            raise ModelError(f"{path} takes {height}x{width} inputs, its spec says {spec.input_size}")
        # said here, not as a store's dimension error at the first write after a gallery was made for it
        size = self.session.get_outputs()[0].shape[-1]
        if isinstance(size, int) and size != spec.embedding_size:
            raise ModelError(f"{path} gives {size}-d embeddings, its spec says embedding_size {spec.embedding_size}")
        self.spec = spec if spec.version else spec.with_version(file_version(path, spec))
        self.calibration = calibration

    @classmethod
    def from_path(cls, path: str | Path, **kwargs) -> OnnxEmbedder:
        """A directory holding model.onnx and spec.json, or `name.onnx` with `name.spec.json` beside it."""
        path = Path(path)
        if path.is_dir():
            return cls(path / ONNX_FILE, ModelSpec.load(path), calibration=Calibration.load(path), **kwargs)
        spec_file = path.with_suffix(".spec.json")
        if not spec_file.is_file():
            raise ModelError(f"{path} needs its preprocessing spec in {spec_file} (a ModelSpec JSON)")
        return cls(path, ModelSpec.from_json_file(spec_file), **kwargs)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        outputs = [self.session.run(None, {self.input_name: x[i : i + self.batch_size]})[0]
                   for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outputs).reshape(len(x), -1).astype(np.float32)
