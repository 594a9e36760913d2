"""The trade-off a gallery calibration chose, as a picture: FNIR against FPIR over the stored curve, the chosen
threshold, its neighbours and the model's own marked on it (`arcmatch calibrate --plot FILE`).

Why a picture: the curve shows at a glance how many known people a stricter rate costs, which a table of four
thresholds only samples.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from indexer.calibration import GalleryCalibration

MARKS = {"chosen": ("o", "tab:red"), "stricter": ("v", "tab:gray"), "looser": ("^", "tab:gray"),
         "model": ("s", "tab:blue")}


def plot(found: GalleryCalibration, path: str | Path, title: str = "gallery calibration") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(fpir, fnir) for _, fpir, fnir in found.curve if fpir > 0 and fnir is not None]
    figure, axis = plt.subplots(figsize=(5.5, 4), dpi=120)
    if rows:
        axis.plot([r[0] for r in rows], [r[1] for r in rows], color="black", lw=1.2, label="this gallery")
        axis.set_xscale("log")
        axis.set_xlabel(f"FPIR: strangers answered as someone (at {found.identities} identities)")
        axis.set_ylabel("FNIR: known people not found")
    else:  # one face per identity: no known-person trial, so FPIR against the threshold is what there is
        curve = [(t, fpir) for t, fpir, _ in found.curve if fpir > 0]
        axis.plot([c[0] for c in curve], [c[1] for c in curve], color="black", lw=1.2, label="this gallery")
        axis.set_yscale("log")
        axis.set_xlabel("threshold (cosine); no FNIR: no identity has two faces")
        axis.set_ylabel(f"FPIR at {found.identities} identities")
    for p in found.points:
        if p["fpir"] <= 0 or (rows and p["fnir"] is None):
            continue
        marker, colour = MARKS[p["label"]]
        spread = [[max(p["fpir"] - p["fpir_low"], 0)], [max(p["fpir_high"] - p["fpir"], 0)]]
        label = f"{p['label']} {p['threshold']:.3f}"
        if rows:
            axis.errorbar(p["fpir"], p["fnir"], xerr=spread, fmt=marker, color=colour, capsize=3, label=label)
        else:
            axis.errorbar(p["threshold"], p["fpir"], yerr=spread, fmt=marker, color=colour, capsize=3, label=label)
    axis.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=9)  # a long collection name, whole
    axis.grid(True, which="both", alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
