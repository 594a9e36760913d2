"""TrainConfig: everything one training run needs, as plain data that Ray can ship to every worker.

Every default is written here once. `arcmatch train` builds its flags from these fields (jobs/cli/train.py), and
a run can be kept as a JSON file (`arcmatch train --config FILE.json`, trainer/configs/) that flags override.
Each field's `help` is what the flag shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from common.errors import BadInput
from embedder.spec import ModelSpec

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# the plain field types a JSON config can get wrong, and how a refusal names them (an int is a float's value too)
_KINDS = {"int": (int, "a whole number"), "float": ((int, float), "a number"), "bool": (bool, "true or false"),
          "str": (str, "text")}


def _opt(default, help: str, **extra):  # noqa: A002  (argparse's own word)
    kind = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kind, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    data: str = field(metadata={"help": "identity/image tree, CSV manifest (path, identity), or Parquet shards"})
    spec: ModelSpec = field(metadata={"help": "the model: backbone, embedding size, input size, preparation"})
    output_stride: int = _opt(16, "backbone output stride where the model supports it (0: the model's own)")
    head: str = _opt("arcface", "margin head",
                     choices=("arcface", "cosface", "sphereface", "adaface", "combined", "softmax"))
    scale: float = _opt(64.0, "logit scale s")
    margins: dict[str, float] = _opt(dict, "overrides of the head's m1/m2/m3 (m2 in radians; adaface: m, h)")
    sample_rate: float = _opt(1.0, "Partial FC: fraction of each worker's class centres used per step")
    epochs: int = _opt(10, "passes over the data")
    batch_size: int = _opt(128, "images per step on each worker")
    optimizer: str = _opt("sgd", "optimizer", choices=("sgd", "adamw"))
    lr: float = _opt(0.1, "peak learning rate (linear warm-up, then cosine decay)")
    weight_decay: float = _opt(5e-4, "weight decay")
    warmup_epochs: float = _opt(1.0, "epochs of linear learning-rate warm-up")
    average_decay: float = _opt(0.0, "export a moving average of the weights, decay min(this, (1+t)/(10+t)) at step t "
                                      "(0: the last step's weights)")
    clip_grad_norm: float = _opt(5.0, "clip the gradient norm at this value (0: off)")
    dropout: float = _opt(0.0, "dropout before the embedding layer")
    random_shift: float = _opt(0.0, "augmentation: random translation up to this fraction of the side (0: off)")
    random_erase: float = _opt(0.0, "augmentation: share of images given one random occluding patch (0: off)")
    workers: int = _opt(1, "training workers (one GPU each with --gpu)")
    gpu: bool = _opt(False, "one GPU per worker (bf16 autocast unless --precision fp32)")
    channels_last: bool = _opt(True, "NHWC layout for the convolutions: faster kernels on CPUs and GPUs (off: NCHW, "
                                     "as runs before it)")
    precision: str = _opt("auto", "autocast: auto is bf16 on GPUs and on CPUs with bf16 units (AVX512-BF16, AMX), "
                                  "fp32 elsewhere", choices=("auto", "bf16", "fp32"))
    cpus_per_worker: int = _opt(1, "CPUs (and torch threads) per worker")
    seed: int = _opt(0, "random seed: sampling, augmentation, initialisation")
    log_every: int = _opt(20, "steps between progress updates (0: only at epoch ends)")
    checkpoint_every: int = _opt(0, "steps between checkpoints (0: at the end of each epoch only)")
    keep_checkpoints: int = _opt(2, "checkpoints kept in the run's storage")
    max_failures: int = _opt(2, "worker failures survived by restarting from the last checkpoint")
    backbone_weights: str | None = _opt(None, "local file with initial backbone weights")

    def __post_init__(self) -> None:
        for f in fields(self):  # a config file's "two" for epochs: one line here, not a TypeError in a worker
            kind, value = _KINDS.get(f.type.removesuffix(" | None")), getattr(self, f.name)
            if kind is None or (value is None and f.type.endswith(" | None")):
                continue
            if not isinstance(value, kind[0]) or (kind[1] != "true or false" and isinstance(value, bool)):
                raise BadInput(f"{f.name} must be {kind[1]}, got {value!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise BadInput(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise BadInput(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "workers", "cpus_per_worker"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.sample_rate <= 1:
            raise BadInput(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if not 0 <= self.random_shift < 0.5:
            raise BadInput(f"random_shift must be in [0, 0.5), got {self.random_shift}")
        if not 0 <= self.random_erase <= 1:
            raise BadInput(f"random_erase must be in [0, 1], got {self.random_erase}")
        if not 0 <= self.average_decay < 1:
            raise BadInput(f"average_decay must be in [0, 1), got {self.average_decay}")
        if self.lr <= 0:
            raise BadInput(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise BadInput(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.output_stride < 0:
            raise BadInput(f"output_stride must be 0 (the model's own) or positive, got {self.output_stride}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown TrainConfig fields {unknown}")
        missing = sorted({"data", "spec"} - set(data))
        if missing:
            raise BadInput(f"a training run needs {' and '.join(missing)}")
        return cls(**{**data, "spec": ModelSpec.from_dict(data["spec"])})


def read_config_file(path: str | Path) -> dict:
    """A run's JSON file as a partial TrainConfig dict (flags fill or override the rest). A shipped config is
    found by its name too (`demo`, `r50-gpu.json`, `trainer/configs/demo.json` from any directory)."""
    path = Path(path)
    if not path.is_file():
        shipped = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.json")
        path = shipped if shipped.is_file() else path
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise BadInput(f"training config {path} does not exist (shipped configs: {shipped})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInput(f"training config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"training config {path} must be a JSON object of TrainConfig fields")
    unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)} - {"//"})
    if unknown:
        raise BadInput(f"training config {path}: unknown fields {unknown}")
    data.pop("//", None)  # a comment
    return data
