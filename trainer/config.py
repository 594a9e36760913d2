"""TrainConfig: everything one training run needs, as plain data that Ray can ship to every worker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from embedder.spec import ModelSpec


@dataclass
class TrainConfig:
    data: str
    spec: ModelSpec
    head: str = "arcface"  # softmax | arcface | cosface | sphereface | combined
    scale: float = 64.0
    margins: dict[str, float] = field(default_factory=dict)  # overrides of the head's m1/m2/m3, radians
    sample_rate: float = 1.0  # Partial FC: fraction of each worker's class centres used per step
    epochs: int = 10
    batch_size: int = 128  # per worker
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    clip_grad_norm: float = 5.0
    dropout: float = 0.0
    random_shift: float = 0.0  # augmentation: random translation by up to this fraction of the side (0: off)
    workers: int = 1
    gpu: bool = False
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    cpus_per_worker: int = 1
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 0  # steps; 0 = at the end of each epoch only
    keep_checkpoints: int = 2
    max_failures: int = 2  # worker deaths survived by restarting from the last checkpoint
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "workers", "cpus_per_worker"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if not 0 <= self.random_shift < 0.5:
            raise ValueError(f"random_shift must be in [0, 0.5), got {self.random_shift}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**{**data, "spec": ModelSpec.from_dict(data["spec"])})
