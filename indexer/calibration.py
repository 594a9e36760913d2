"""A threshold chosen on the gallery's own faces, for a target false-positive identification rate (FPIR).

Why: a threshold calibrated on one kind of photo does not transfer. A model's calibration (a pair false-accept rate
on LFW, say) says nothing about a domain where every face looks alike to the model (hard lighting, one ethnicity,
children, a camera's own artefacts): there the same cosine threshold lets most unknown people through. The gallery
already holds that domain's impostor distribution: any two faces of two different enrolled identities are a
known non-match, and identities with several faces give known matches. So it needs no images and no labels beyond
the ones the gallery has.

The trials are those of open-set 1:N identification (as NIST's FRVT 1:N reports them), made from stored vectors:
- non-mated (an unknown person): a sampled face of identity X searched against the gallery without X's faces; its
  best score is what the search would answer for a stranger who looks like that photo. FPIR(t) is the share of
  these trials whose best score is >= t. The gallery searched holds all identities but one, so the figure holds at
  the gallery's current size; it grows with the gallery, which is why the size is stored with the result.
- mated (a known person): a face of an identity with two or more faces searched without that face; it is
  identified at t when the best remaining face is its own identity's and scores >= t. FNIR(t) = 1 - that share.
One top-k search per sampled face serves both trials; the few faces whose k hits are all their own identity's get
one more search with that identity filtered out, so no trial is cut short by k.

The threshold accepts at most floor(target * trials) of the non-mated trials (so the measured FPIR is at or under
the target), and a target below one trial in the sample is refused: a 0.1% rate
cannot be read from 200 strangers.

That rule (method "top1") reads an extreme order statistic: one duplicate enrollment decides it. Method "tail", the
default, reads the threshold from every cross-identity score with a model of the non-mated tail
(indexer/tail.py), keeps suspected duplicates out of the evidence and names them, takes the gallery's ingested
unlabelled faces as more strangers, and gives the FPIR with an interval; the report shows what the top-1 rule
would have chosen beside it. Both keep the FPIR/FNIR curve (indexer/rates.py) a search's `fpir=` is read from.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from common.names import shown
from indexer.errors import InvalidValue
from indexer.ids import UNLABELLED
from indexer.milvus import Property
from indexer.rates import HIGHEST, LOWEST_MODELLED, Empirical, at_size, curve, points, rate_span, threshold_for_rate
from indexer.tail import MIN_DIRECT, MIN_STRANGERS

METHOD = "gallery leave-one-identity-out, top-1 non-mated score quantile"
TAIL_METHOD = "gallery cross-identity scores, modelled non-mated tail"
METHODS = ("tail", "top1")  # the first is the default: one duplicate enrollment cannot move it
TAIL_IDENTITIES = 20_000  # identities whose faces a tail calibration scores probes against (a random subset)
SAME_SCORE = 1e-5  # float32 cosines of one pair differ by a few ulps (~1e-7) between stores and directions
WIDE = 2.0  # an interval reaching past this times the target is said to be wide
FEW_FACES = 3  # under this many faces per identity on average, the printed FNIR is said to read high
MISFIT = 2.5  # a model off by more than this factor where the trials are dense is said not to fit (gallery_tail)
STALE_FACTOR = 1.25  # a threshold whose FPIR at the size now is past this times its target no longer meets it
# confirmed strangers crossing at the target from which their direct reading held it: FPIR 0.1% on 1,000 LFW-gray
# people within 2x in 10 of 10 draws with 2,000 of them, 6 of 10 with 1,000 (docs/BENCHMARKS.md)
STRICT_CROSSINGS = 2
# fewer trials than this tell no FPIR, and the tail model's probes fell short of its identities: `--sample 5` gave a
# threshold 0.08 below the default's, with NumPy's warnings about empty slices (a gallery smaller than this is
# sampled whole)
MIN_SAMPLE = 50
TOP_K = 16  # hits read per sampled face; only faces whose 16 nearest are all their own identity's search again


@dataclass(frozen=True)
class Rates:
    """FPIR and FNIR of the sampled trials at one threshold (FNIR None when no identity has two faces)."""

    threshold: float
    fpir: float
    fnir: float | None


@dataclass(frozen=True)
class GalleryCalibration:
    """What `calibrate` found and stores with the collection (Property.CALIBRATION): the threshold in use, how it
    was chosen, and the same rates at the model's own threshold for comparison."""

    threshold: float
    target_fpir: float
    fpir: float
    fnir: float | None
    model_threshold: float | None
    at_model_threshold: Rates | None
    identities: int
    faces: int
    nonmated_trials: int
    mated_trials: int
    model_version: str
    created_at: float = field(default_factory=time.time)
    method: str = METHOD
    fpir_interval: list[float] | None = None  # tail: a 95% interval of the modelled FPIR at the threshold
    suspects: list[dict] = field(default_factory=list)  # tail: identity pairs that look like one person
    top1_threshold: float | None = None  # tail: what the top-1 rule would have chosen, for comparison
    points: list[dict] = field(default_factory=list)  # indexer.rates.Point: chosen, stricter, looser, model
    curve: list[list] = field(default_factory=list)  # [threshold, fpir, fnir] rows (indexer.rates.curve)
    strangers: int = 0  # tail: unlabelled faces taken as more strangers (indexer/strangers.py)
    strangers_dropped: int = 0  # tail: unlabelled faces left out, as they looked like someone enrolled
    tail_check: dict | None = None  # tail: the model against the gallery's own trials where they are dense
    strangers_check: dict | None = None  # tail: the strangers' own best scores against the model (tail.clustered)
    # tail: unlabelled faces left out as looking enrolled, the most alike first (indexer.strangers.set_aside)
    strangers_set_aside: list[dict] = field(default_factory=list)
    # tail, where faces were kept from searches: how many were looked at, confirmed, left out and why, and whether
    # they were read (indexer.strangers.kept_strangers)
    kept_faces: dict | None = None
    # tail: the faces kept from searches nobody has judged, those most like someone enrolled first, as
    # strangers_set_aside gives its faces (indexer.strangers.unjudged_nearest)
    kept_nearest: list[dict] = field(default_factory=list)
    # tail, a gallery alone below indexer.reference.REFERENCE_BELOW people with a model that kept a tail reference:
    # the model's held-out identities and the threshold each opinion gives for the target (Stricter.opinions)
    reference: dict | None = None

    def to_json(self) -> str:
        return json.dumps({"arcmatch": 1, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> GalleryCalibration | None:
        """The stored calibration, or None when there is none (never set, or cleared)."""
        try:
            data = json.loads(text or "null")
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.pop("arcmatch", None) != 1:
            return None
        rates = data.pop("at_model_threshold", None)
        return cls(**data, at_model_threshold=Rates(**rates) if rates else None)

    def fpir_at(self, identities: int) -> float:
        """The FPIR this threshold gives at another gallery size (indexer.rates.at_size): growth raises it, and a
        threshold kept through growth breaks its promise."""
        return at_size(self.fpir, self.identities, identities)

    def threshold_for_fpir(self, fpir: float, identities: int | None = None) -> float:
        """The threshold that gives `fpir` at `identities` (default: the size calibrated), read from the curve.
        The range the curve answers is said at that size, the caller's, not at the one calibrated."""
        if not 0.0 < fpir < 1.0:  # NaN fails too; within a share, the curve says what it answers at this size
            raise InvalidValue(f"an FPIR is a share between 0 and 1 (both excluded), got {fpir}")
        size = identities or self.identities
        try:
            return threshold_for_rate(self.curve, at_size(fpir, size, self.identities))
        except InvalidValue:
            rates = [f for _, f, _ in self.curve if f > 0]
            if not rates:
                raise
            low, high = (at_size(r, self.identities, size) for r in (min(rates), max(rates)))
            raise InvalidValue(f"the gallery's calibration can answer an FPIR {rate_span(low, high)} at "
                               f"its {size} identities, not {fpir}: give a threshold instead, or calibrate a larger "
                               "gallery") from None

    def status(self, identities: int) -> dict:
        """Whether the threshold still keeps its promise at the gallery's size now."""
        now = self.fpir_at(identities)
        return {"identities": identities, "calibrated_identities": self.identities, "target_fpir": self.target_fpir,
                "fpir_now": now, "meets_target": now <= STALE_FACTOR * self.target_fpir}

    def growth_lines(self, identities: int) -> list[str]:
        """What the gallery's growth since the calibration means for it (nothing when its size is the same)."""
        if identities == self.identities:
            return []
        status = self.status(identities)
        out = [f"the gallery has {identities} identities, {self.identities} when calibrated: at this threshold "
               f"about {status['fpir_now']:.4f} of strangers match now (estimated; target {self.target_fpir}, "
               f"counted as met up to {STALE_FACTOR:g} times the target: no estimate is closer than that)"]
        if not status["meets_target"]:
            out.append("the threshold no longer meets its target: run `arcmatch calibrate` again (or set "
                       "ARCMATCH_RECALIBRATE_ON_GROWTH=true)")
        return out

    def strict_target_hint(self) -> str | None:
        """Where the target asks for more confirmed strangers than the gallery's calibration read (about
        STRICT_CROSSINGS / target, and more than MIN_DIRECT), what such a promise needs: the model alone reads
        rates that far out loose, and nothing in its own interval shows it."""
        if self.method != TAIL_METHOD:
            return None
        needed = math.ceil(STRICT_CROSSINGS / self.target_fpir)
        check = self.strangers_check or {}
        have = int(check.get("strangers", 0)) if check.get("direct") else 0
        if needed <= max(MIN_DIRECT, have):
            return None
        return (f"FPIR {self.target_fpir} needs about {needed} confirmed strangers (`ingest --strangers`: "
                f"{STRICT_CROSSINGS} of them crossing at it){f', {have} here' if have else ''}: from the gallery and "
                f"its unlabelled faces alone a 0.1% target on 1,000 LFW-gray people let 0.26-0.30% through, from "
                f"2,000 confirmed strangers 0.11%; a labelled hold-out (`arcmatch eval --fpir --gallery-shape`) "
                f"counts it")

    def _kept_lines(self) -> list[str]:
        """What became of the faces kept from searches (kept_faces): read, or why not, and what waits."""
        kept = self.kept_faces
        if not kept:
            return []
        said = []
        if kept["read"] and kept["laxer"]:
            said.append(f"{kept['laxer']} of them answered under a laxer threshold than {kept['cut']:.4f} (a caller's "
                        f"own) left out: the others of those searches above it were never kept")
        elif not kept["read"] and kept["confirmed"] and kept["ingested"] >= MIN_STRANGERS:
            said.append(f"{kept['confirmed']} confirmed faces kept from searches not read: the {kept['ingested']} "
                        f"ingested unlabelled faces are, whole")
        elif not kept["read"] and kept["confirmed"]:
            said.append(f"{kept['confirmed']} confirmed faces kept from searches: too few to read (from "
                        f"{MIN_STRANGERS} on, with fewer than {MIN_STRANGERS} unlabelled faces ingested)")
        if kept["unconfirmed"]:
            said.append(f"{kept['unconfirmed']} faces kept from searches wait to be judged: name the people among "
                        f"them (`arcmatch gallery name IDENTITY SOURCE`), then `arcmatch gallery stranger --kept` "
                        f"counts the rest")
        if self.kept_nearest:
            said.append("the most like someone enrolled: " + "; ".join(
                f"{f['source']} like {shown(f['like'])} ({f['score']:.3f})" for f in self.kept_nearest[:5])
                + (" ..." if len(self.kept_nearest) > 5 else ""))
        if kept["expired"] or kept["other_model"]:
            said.append("faces kept from searches left out: " + ", ".join(
                f"{n} {why}" for n, why in ((kept["expired"], "past their retention"),
                                            (kept["other_model"], "answered under another model")) if n))
        return said

    def lines(self) -> list[str]:
        out = [f"gallery: {self.identities} identities, {self.faces} faces; {self.nonmated_trials} unknown-person "
               f"trials, {self.mated_trials} known-person trials; method: {self.method}"]
        if not self.points:  # stored before points were kept
            fnir = "n/a" if self.fnir is None else f"{self.fnir:.4f}"
            return out + [f"gallery threshold {self.threshold:.4f}: FPIR {self.fpir:.4f} (target "
                          f"{self.target_fpir}), FNIR {fnir}"]
        out.append("  threshold  FPIR (95% interval)       FNIR    ")
        said = {"chosen": f"chosen for FPIR {self.target_fpir}", "stricter": "for half the target",
                "looser": "for twice the target", "model": "the model's own threshold"}
        for p in self.points:
            fnir = "   n/a" if p["fnir"] is None else f"{p['fnir']:.4f}"
            out.append(f"{'>' if p['label'] == 'chosen' else ' '} {p['threshold']:8.4f}  {p['fpir']:.4f} "
                       f"({p['fpir_low']:.4f}-{p['fpir_high']:.4f})  {fnir}  {said[p['label']]}")
        allowed = math.floor(self.target_fpir * self.nonmated_trials + 1e-9)
        if self.method == METHOD and round(self.fpir * self.nonmated_trials) < allowed:
            out.append(f"the top-1 rule counts whole trials, and a pair of faces gives two at one score: no threshold "
                       f"lets {allowed} of the {self.nonmated_trials} through and no more, so it lets "
                       f"{round(self.fpir * self.nonmated_trials)}")
        if self.fnir is None:
            out.append("FNIR n/a: no identity has two faces")
        elif self.faces < FEW_FACES * self.identities:
            out.append("FNIR reads high: each face is searched with the rest of its identity, so a person enrolled "
                       "with two faces is found against one, where a new photo meets both (300 LFW-gray people with "
                       "two: 15% printed, 7.5% of their other photos missed)")
        if self.strangers or self.strangers_dropped:
            confirmed = (self.strangers_check or {}).get("confirmed")
            kept = "cut" in (self.strangers_check or {})
            out.append(f"{self.strangers} {'faces kept from searches' if kept else 'unlabelled faces'} counted as "
                       f"strangers too" + (f", {confirmed} of them confirmed" if confirmed and not kept else "")
                       + (f" ({self.strangers_dropped} left out: they look like someone enrolled)"
                          if self.strangers_dropped else "")
                       + ("" if self.strangers_check or self.strangers == 0 else
                          f"; from {MIN_STRANGERS} on, the rates would follow what their own best scores give"))
        out += self._kept_lines()
        if self.strangers_set_aside:
            listed = "; ".join(f"{f['source']} like {shown(f['like'])} ({f['score']:.3f})"
                               for f in self.strangers_set_aside[:5])
            out.append(f"left out as looking enrolled: {listed}"
                       + (" ..." if self.strangers_dropped > 5 else "")
                       + " (one that is nobody enrolled counts again once confirmed: `arcmatch gallery stranger "
                         "SOURCE`; one that is that person's photo: `arcmatch gallery name IDENTITY SOURCE`)")
        crossing = self.strangers_check
        if crossing and crossing.get("direct"):
            out.append(f"the rate at this size is read off the {crossing['strangers']} confirmed strangers (`ingest "
                       f"--strangers`): counted down to {crossing['threshold']:.4f}, where {crossing['observed']:.3f} "
                       f"of them score as high against someone (the sum over identities says "
                       f"{crossing['modelled']:.3f}), a tail fitted to their highest beyond it; the model carries it "
                       f"to other sizes")
        elif crossing and "cut" in crossing:
            out.append(f"they were answered unknown below {crossing['cut']:.4f}, so the others of their searches "
                       f"crossed unseen (about {crossing['beyond']:.0f}, reckoned): between "
                       f"{crossing['threshold']:.4f} and that cut {crossing['observed']:.3f} of them score against "
                       f"someone, where the sum over identities says {crossing['modelled']:.3f}, so rates beyond "
                       f"it are scaled by {crossing['factor']:.2f}")
        elif crossing:
            out.append(f"the rates follow what they give: at {crossing['threshold']:.4f}, {crossing['observed']:.3f} "
                       f"of them score as high against someone, where the sum over identities says "
                       f"{crossing['modelled']:.3f}, so rates beyond it are scaled by {crossing['factor']:.2f}")
        check = self.tail_check
        if check and "modelled_before" in check:
            out.append(f"the tail model was refitted to this gallery's own faces: at {check['threshold']:.4f} it "
                       f"predicted FPIR {check['modelled_before']:.3f} where they give {check['observed']:.3f}, now "
                       f"{check['modelled']:.3f} (each face's own spread counts to the power "
                       f"{check['spread_power']:.2f})")
        if check and not fits(check):
            out.append(f"the tail model does not fit this gallery: at {check['threshold']:.4f} it predicts FPIR "
                       f"{check['modelled']:.3f} where the gallery's own faces give {check['observed']:.3f}; its "
                       f"threshold may be far off: compare `--method top1 --dry-run`, or use a labelled hold-out")
        if (hint := self.strict_target_hint()) is not None:
            out.append(hint)
        if self.fpir_interval and self.fpir_interval[1] > WIDE * self.target_fpir:
            from indexer.reference import MIN_REFERENCE, REFERENCE_BELOW

            out.append(f"the interval is wide: at {self.identities} identities the gallery cannot tell FPIR "
                       f"{self.target_fpir} from {self.fpir_interval[1]:.2g}; any of these narrows it:")
            out += ["  - more people enrolled",
                    f"  - {'more ' if self.strangers else ''}unlabelled faces of people not enrolled (`ingest "
                    f"--strangers`, or `--unlabelled` where some may be)"
                    + (f": {self.strangers} counted now" if self.strangers else ""),
                    "  - a labelled hold-out (`arcmatch eval --fpir --gallery-shape`)"]
            if (self.reference is None and not self.strangers and self.identities < REFERENCE_BELOW
                    and self.method == TAIL_METHOD):
                out.append(f"  - a model evaluated on {MIN_REFERENCE} or more held-out people (`arcmatch eval "
                           f"--calibrate`, then `calibrate --model`), which lends its tail")
        if self.reference:
            r = self.reference
            out.append(f"a second opinion, the tail of the model's {r['identities']} held-out identities beyond this "
                       f"gallery's own: {r['reference_threshold']:.4f} for FPIR {self.target_fpir}, where the "
                       f"gallery's tail alone gives {r['own_threshold']:.4f}; the stricter holds at each threshold")
        if self.top1_threshold is not None:
            out.append(f"the top-1 rule (`--method top1`: the target's quantile of each face's best score with "
                       f"another identity, which one duplicate enrollment can decide) would choose "
                       f"{self.top1_threshold:.4f}")
        if self.suspects:
            out.append(self.set_aside_line())
        return out

    def set_aside_line(self) -> str:
        """The pairs this calibration set aside, as every report of it says them (a re-calibration on growth too:
        a threshold that moved needs its reason beside it)."""
        named = "; ".join(f"{shown(s['first'])} and {shown(s['second'])} ({s['score']:.3f})" for s in self.suspects[:5])
        return (f"set aside, more alike than strangers are (one person under two names?): {len(self.suspects)} "
                f"pair(s): {named}"
                + (" ..." if len(self.suspects) > 5 else "") + " (`arcmatch gallery check` lists them)")


@dataclass(frozen=True)
class Trials:
    """Per sampled face: its best non-mated score, and (faces of identities with several faces) whether its
    best remaining face is its own identity's and with what score."""

    nonmated: np.ndarray  # (n,) best score against other identities
    mated_right: np.ndarray  # (m,) bool: rank 1 is the face's own identity
    mated_score: np.ndarray  # (m,) the rank-1 score of those trials

    def rates(self, threshold: float) -> Rates:
        fpir = float((self.nonmated >= threshold).mean())
        if not len(self.mated_right):
            return Rates(threshold, fpir, None)
        found = self.mated_right & (self.mated_score >= threshold)
        return Rates(threshold, fpir, float(1.0 - found.mean()))

    def threshold_for(self, target_fpir: float) -> float:
        """A threshold that accepts floor(target * n) non-mated trials and no more: midway between the first
        score to reject and the next higher one, so that the few ulps by which two stores (or a store and NumPy, or
        the two directions of one pair) compute the same cosine cannot move a trial across it."""
        scores = np.sort(self.nonmated.astype(np.float64))[::-1]
        allowed = int(math.floor(target_fpir * len(scores) + 1e-9))
        if allowed >= len(scores):
            return float(scores[-1] - 1e-4)
        reject = scores[allowed] + SAME_SCORE  # scores this close are one score (a pair's two trials often are)
        above = scores[scores > reject]
        return float((reject + (above.min() if len(above) else reject + SAME_SCORE)) / 2)


def fits(check: dict) -> bool:
    """Whether a tail_check (indexer/gallery_tail.py) finds the model within MISFIT of the gallery's own trials."""
    return 1 / MISFIT <= check["modelled"] / max(check["observed"], 1e-12) <= MISFIT


def held_out_trials(vectors: np.ndarray, labels: np.ndarray, *, gallery_identities: int, photos: int,
                    rounds: int = 20, seed: int = 0) -> Trials:
    """The open-set trials of a gallery that is not built yet, from held-out identities (unit vectors + labels).

    Each round enrols `gallery_identities` of them with `photos` random photos each; every photo of the others is
    a non-mated trial, every other photo of the enrolled a mated one (scored, like a search, by its best gallery
    face). Why: a threshold for a target FPIR read from these trials is one for the gallery's size and shape. A
    pair FAR times the gallery's faces (the union bound) only caps FPIR: a stranger's scores against one person's
    photos rise and fall together. On the demo's synthetic faces the bound sat 0.008 above the FPIR-2% threshold
    on average, about a point of rank-1 (docs/BENCHMARKS.md, "A threshold for the FPIR the demo asks for"). The
    rounds draw other galleries from the same people, so no one draw of enrolled people sets the figure.
    """
    labels = np.asarray(labels)
    names = np.unique(labels)
    if not 1 <= gallery_identities < len(names):
        raise InvalidValue(f"a gallery of {gallery_identities} identities needs more held-out identities than "
                           f"that (strangers to search with); there are {len(names)}")
    if photos < 1 or rounds < 1:
        raise InvalidValue(f"photos and rounds must be at least 1, got {photos} and {rounds}")
    members = [np.flatnonzero(labels == name) for name in names]
    rng = np.random.default_rng(seed)
    nonmated, right, mated = [], [], []
    for _ in range(rounds):
        enrolled = rng.choice(len(names), gallery_identities, replace=False)
        shuffled = [rng.permutation(members[i]) for i in enrolled]
        gallery = np.concatenate([m[:photos] for m in shuffled])
        probes = np.concatenate([m[photos:] for m in shuffled])
        strangers = np.flatnonzero(~np.isin(labels, names[enrolled]))
        nonmated.append((vectors[strangers] @ vectors[gallery].T).max(axis=1))
        scores = vectors[probes] @ vectors[gallery].T
        right.append(labels[gallery][scores.argmax(axis=1)] == labels[probes])  # empty where no probe is left
        mated.append(scores.max(axis=1))
    return Trials(np.concatenate(nonmated).astype(np.float32), np.concatenate(right),
                  np.concatenate(mated).astype(np.float32))


def labelled_faces(index) -> tuple[np.ndarray, np.ndarray]:
    """(face ids, identities) of every face with an identity, in storage order."""
    ids, names = [], []
    for face, identity in index.labelled_faces():
        ids.append(face)
        names.append(identity)
    return np.asarray(ids, dtype=np.int64), np.asarray(names, dtype=object)


def stored(index) -> GalleryCalibration | None:
    """The calibration stored with the collection, if any (read afresh: another process may have set it)."""
    return GalleryCalibration.from_json(index.properties().get(Property.CALIBRATION))


DEFAULT_FPIR = 0.01


def target_fpir(index) -> float:
    """The FPIR a calibration of this gallery aims at when none is asked for: its calibration's target, else the
    one it was made for (`set_target`), else DEFAULT_FPIR."""
    return target_fpir_in(index.properties())


def target_fpir_in(properties: dict) -> float:
    """`target_fpir` from a collection's properties already read (a listing of galleries reads them once)."""
    found = GalleryCalibration.from_json(properties.get(Property.CALIBRATION))
    if found is not None:
        return found.target_fpir
    return float(properties.get(Property.TARGET) or DEFAULT_FPIR)


def check_fpir(fpir: float, what: str = "a target FPIR") -> float:
    """A target a caller gives: the range the API's fields declare (indexer.rates), said in the same words, where
    the CLI said 1e-06 to 1 and the API 0.0001 to 0.5 (a calibration then refused what its curve cannot read)."""
    if not LOWEST_MODELLED <= fpir <= HIGHEST:  # NaN fails too
        raise InvalidValue(f"{what} is {rate_span(LOWEST_MODELLED, HIGHEST)}, got {fpir}")
    return float(fpir)


def set_target(index, fpir: float) -> None:
    check_fpir(fpir)
    index.set_properties({Property.TARGET: repr(float(fpir))})


def store(index, calibration: GalleryCalibration | None) -> None:
    """Keep `calibration` with the collection (None clears it: the model's threshold applies again)."""
    index.info()
    if calibration is not None and calibration.model_version != index.info().model_version:
        raise InvalidValue(f"this calibration was made for model {calibration.model_version}, the collection holds "
                           f"{index.info().model_version}")
    index.set_properties({Property.CALIBRATION: calibration.to_json() if calibration else "null"})


def run_trials(index, *, sample: int = 5000, seed: int = 0, batch: int = 256,
               faces: list[tuple[int, str, str]] | None = None) -> tuple[Trials, int, int]:
    """The trials of up to `sample` faces drawn at random; also returns the gallery's identities and faces.
    `faces`: the labelled faces (id, identity, source), where the caller scanned them already.

    A face named from those a search kept (its source a kept face's) is no known-person trial, as a probe or as the
    face it should find: it was kept because the threshold of its day missed it, so counted it would count that
    miss again (a gallery of 150 LFW-gray people, every second photo named from a search, read FNIR 0.83 where 8.4% of
    new photos were missed). It is a non-mated trial like any other face."""
    from indexer.strangers import KEPT_SOURCE

    faces = list(index.labelled_sources()) if faces is None else faces
    ids = np.asarray([f for f, _, _ in faces], dtype=np.int64)
    names = np.asarray([n for _, n, _ in faces], dtype=object)
    searched = np.asarray([bool(KEPT_SOURCE.match(s)) for _, _, s in faces], dtype=bool)
    identities = np.unique(names.astype(str)) if len(names) else []
    if len(identities) < 2:
        raise InvalidValue(f"calibration needs faces of at least two identities; the gallery has {len(identities)}")
    plain, counts = np.unique(names[~searched].astype(str), return_counts=True) if (~searched).any() else ([], [])
    several = set(np.asarray(plain)[np.asarray(counts) >= 2])
    chosen = np.random.default_rng(seed).permutation(len(ids))[:sample]
    nonmated, right, mated = [], [], []
    for start in range(0, len(chosen), batch):
        part = chosen[start : start + batch]
        stored = index.vectors([int(i) for i in ids[part]])
        part = [p for p in part if int(ids[p]) in stored]  # a face deleted since the scan is simply not a trial
        if not part:
            continue
        vectors = np.stack([stored[int(ids[p])] for p in part])
        for p, vector, hits in zip(part, vectors, index.search(vectors, k=TOP_K), strict=True):
            face, who = int(ids[p]), str(names[p])
            others = [h for h in hits if h.face_id != face and h.identity != UNLABELLED]
            strangers = [h for h in others if h.identity != who]
            if not strangers:  # every hit was its own identity's: ask once more without them
                strangers = [h for h in index.search(vector[None], k=4, exclude_identity=who)[0]
                             if h.identity != UNLABELLED]
            if strangers:
                nonmated.append(strangers[0].score)
            known = [h for h in others if h.identity != who or not KEPT_SOURCE.match(h.source)]
            if who in several and known and not searched[p]:
                right.append(known[0].identity == who)
                mated.append(known[0].score)
    trials = Trials(np.asarray(nonmated, np.float32), np.asarray(right, bool), np.asarray(mated, np.float32))
    return trials, len(identities), len(ids)


def calibrate(index, target_fpir: float, *, model_threshold: float | None = None, sample: int = 5000,
              seed: int = 0, method: str = "tail") -> GalleryCalibration:
    """The gallery's threshold for `target_fpir` (0 < target < 1), measured on up to `sample` of its faces, by
    `method` ("top1": the leave-one-identity-out quantile; "tail": the modelled tail, indexer/tail.py), with the
    rates at the thresholds beside it and the curve a search's `fpir=` is answered from."""
    check_fpir(target_fpir)
    if sample < MIN_SAMPLE:
        raise InvalidValue(f"the sample is at least {MIN_SAMPLE} faces (a gallery with fewer gives all of its own), "
                           f"got {sample}")
    if method not in METHODS:
        raise InvalidValue(f"the calibration method must be one of {METHODS}, got {method!r}")
    labelled = list(index.labelled_sources())  # one scan, for the trials and for the tail's draw
    trials, identities, faces = run_trials(index, sample=sample, seed=seed, faces=labelled)
    aside, top1 = {}, None
    if method == "tail":
        from indexer.tail import MIN_IDENTITIES

        if identities < MIN_IDENTITIES:
            # the top-1 rule only where its trials can show the target: on 5 people it read a rate off 5 trials
            top1_too = (f", or use --method top1 (the rate read off {len(trials.nonmated)} trials)"
                        if len(trials.nonmated) * target_fpir >= 1 else "")
            raise InvalidValue(f"a tail model needs at least {MIN_IDENTITIES} identities; the gallery has "
                               f"{identities}: enroll more people{top1_too}")
        from indexer.gallery_tail import tail_estimator

        estimator, aside = tail_estimator(index, identities, sample=sample, seed=seed, labelled=(
            np.asarray([f for f, _, _ in labelled], dtype=np.int64),
            np.asarray([n for _, n, _ in labelled], dtype=object)))
        from indexer.reference import Stricter

        if isinstance(estimator.model, Stricter):
            aside["reference"] = estimator.model.opinions(target_fpir, identities)
        # what `--method top1` would choose, where it would choose (it refuses fewer trials than 1 / target)
        top1 = trials.threshold_for(target_fpir) if len(trials.nonmated) >= math.ceil(1.0 / target_fpir) else None
    else:
        needed = math.ceil(1.0 / target_fpir)
        if len(trials.nonmated) < needed:
            raise InvalidValue(f"an FPIR of {target_fpir} needs at least {needed} unknown-person trials; this "
                               f"gallery gave {len(trials.nonmated)} ({faces} faces): enroll more people, sample "
                               f"more faces, aim at a larger FPIR, or use --method tail")
        estimator = Empirical(trials.nonmated, trials.threshold_for)
    if not estimator.lowest * (1 - 1e-9) <= target_fpir <= HIGHEST:
        # the curve a search's `fpir=` is answered from spans these; a target beyond them was kept and then refused
        # by every search asking for it (30 people calibrated for 1e-6: 0.494, where the curve reads from 1.1e-4)
        raise InvalidValue(f"this gallery's calibration reads an FPIR {rate_span(estimator.lowest, HIGHEST)}, not "
                           f"{target_fpir}: aim within it" + (" (below it a modelled tail is extrapolation no "
                                                              "gallery's evidence can check)" if method == "tail"
                                                              and target_fpir < estimator.lowest else ""))
    fnir = lambda t: trials.rates(t).fnir  # noqa: E731
    around = points(estimator, fnir, target_fpir, model_threshold)
    chosen = next(p for p in around if p.label == "chosen")
    if chosen.fpir > target_fpir * (1 + 1e-3):  # the threshold went as high as cosines go
        raise InvalidValue(f"no threshold keeps FPIR at {target_fpir} in this gallery: even at {chosen.threshold:.4f} "
                           f"about {chosen.fpir:.2g} of strangers would match; its different people score as alike "
                           f"as one person's photos (a model for another kind of photo?)")
    return GalleryCalibration(
        threshold=chosen.threshold, target_fpir=target_fpir, fpir=chosen.fpir, fnir=chosen.fnir,
        model_threshold=model_threshold,
        at_model_threshold=trials.rates(model_threshold) if model_threshold is not None else None,
        identities=identities, faces=faces, nonmated_trials=len(trials.nonmated),
        mated_trials=len(trials.mated_right), model_version=index.info().model_version,
        method=TAIL_METHOD if method == "tail" else METHOD, fpir_interval=[chosen.fpir_low, chosen.fpir_high],
        top1_threshold=top1, points=[asdict(p) for p in around], curve=curve(estimator, fnir), **aside)
