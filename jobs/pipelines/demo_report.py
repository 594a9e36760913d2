"""What `arcmatch demo` prints at the end: the figures of one run, in the order a person asks for them (how the
model trained, how the threshold was chosen, what it identified and rejected, how sure those figures are, and where
the time went)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedder.evaluation import Verification
from embedder.layout import Calibration
from jobs.pipelines.ingest import IngestSummary


@dataclass
class DemoReport:
    loss_start: float = float("nan")
    loss_end: float = float("nan")
    verification: Verification | None = None
    calibration: Calibration | None = None
    expected_rank1: float = float("nan")  # on the calibration identities' mock galleries, at the threshold
    rank1: float = float("nan")
    nearest_correct: float = float("nan")
    unknown_rejected: float = float("nan")
    rank1_at_fpir_5pct: float = float("nan")  # the demo's aim, "rank-1 and rejection >= 0.95", threshold-free
    # 95% intervals over resampled identities (embedder.evaluation.identity_interval): how far the figures above
    # would move on another draw of as many people
    rank1_interval: tuple[float, float] = (float("nan"), float("nan"))
    rejected_interval: tuple[float, float] = (float("nan"), float("nan"))
    ingest: IngestSummary | None = None
    train_seconds: float = 0.0
    train_precision: str = "fp32"  # bf16 where the CPU computes it natively (trainer/step.py: autocast_dtype)
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        v, c = self.verification, self.calibration
        counts = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in self.counts.items())
        out = ["arcmatch demo report", f"  images: {counts}",
               f"  training loss: {self.loss_start:.3f} -> {self.loss_end:.3f} ({self.train_seconds:.0f} s, "
               f"{self.train_precision})"]
        if v is not None:
            out.append(f"  verification on held-out pairs: {100 * v.accuracy_mean:.2f}% +- {100 * v.accuracy_std:.2f} "
                       f"({v.folds}-fold), ROC AUC {v.auc:.4f}")
        if c is not None and c.target_fpir is not None:
            out += [f"  threshold: cosine {c.threshold:.4f} for FPIR {100 * c.target_fpir:g}% in galleries like "
                    f"this one ({c.trials} trials on held-out identities, rank-1 there {self.expected_rank1:.3f})",
                    f"    the same threshold on pairs: FAR {c.measured_far:.2g}, TAR {c.tar:.3f} on {c.pairs} pairs"]
        elif c is not None:
            out.append(f"  threshold: cosine {c.threshold:.4f} at FAR {c.measured_far:.4f} "
                       f"(target {c.target_far:.2g}), TAR {c.tar:.3f} on {c.pairs} pairs")
        out += [
            f"  enrolled probes identified correctly (rank-1, above threshold): {self.rank1:.3f}"
            f"  (nearest gallery identity correct: {self.nearest_correct:.3f})",
            f"  unknown probes rejected: {self.unknown_rejected:.3f}",
            f"  95% intervals over resampled identities: rank-1 {self.rank1_interval[0]:.3f}-"
            f"{self.rank1_interval[1]:.3f}, rejected {self.rejected_interval[0]:.3f}-{self.rejected_interval[1]:.3f}",
            f"  separation: at the score that rejects 95% of these unknown probes, rank-1 {self.rank1_at_fpir_5pct:.3f}"
            " (TPIR at FPIR 5%)",
        ]
        if self.ingest is not None:
            out += ["  gallery ingestion: " + line for line in self.ingest.lines()]
        out.append("  wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.stages.items())
                   + f" (total {sum(self.stages.values()):.0f} s)")
        return out
