"""The tail method of `arcmatch calibrate` over a stored gallery: the vectors read, the gallery's unlabelled faces
added as strangers, the model fitted (indexer/tail.py) and checked against the gallery's own trials.

Why its own module: indexer/calibration.py holds what both methods share (the trials, the stored result, the
curve); this is what only the tail needs, and what reads the most of the store.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from indexer.calibration import TAIL_IDENTITIES, fits, labelled_faces
from indexer.rates import Modelled
from indexer.reference import REFERENCE_BELOW, Stricter, TailReference
from indexer.tail import TailModel

CHECK_AT = 10  # the tail model is checked where the gallery's own trials have this many above the threshold


def tail_estimator(index, identities: int, *, sample: int, seed: int,
                   labelled: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Modelled, dict]:
    """The tail method's estimator (indexer/tail.py), from the vectors of up to TAIL_IDENTITIES random
    identities (probes: up to `sample` of their faces) and the gallery's ingested unlabelled faces as strangers
    (indexer/strangers.py), whose own best scores then scale the model's sum over identities (tail.clustered),
    or, from MIN_DIRECT confirmed ones on, give the rate at the gallery's size themselves (tail.directly); with
    too few of them, the faces kept from searches that a person confirmed, read below their cut (tail.truncated);
    with neither, below REFERENCE_BELOW identities, the stricter of the model and the one with the tail reference
    of the model's held-out identities (indexer/reference.py), where its evaluation kept one. Also returns what it
    set aside: suspected duplicates, strangers that looked enrolled. Pairs a person confirmed are different people
    (indexer/distinct.py) are never set aside: they are the strongest impostor evidence there is. `labelled`: the
    labelled faces' ids and identities, where the caller scanned them already (each scan reads every face's id)."""
    from indexer.distinct import pairs
    from indexer.strangers import fit_with_strangers, ingested_unlabelled, kept_strangers, set_aside, unjudged_nearest
    from indexer.tail import MIN_STRANGERS, clustered, directly, resampled, truncated

    ids, names = labelled if labelled is not None else labelled_faces(index)
    rng = np.random.default_rng(seed)
    kept = set(rng.permutation(np.unique(names.astype(str)))[:TAIL_IDENTITIES])
    chosen = np.flatnonzero([n in kept for n in names.astype(str)])
    vectors = index.vectors([int(i) for i in ids[chosen]])
    chosen = np.asarray([c for c in chosen if int(ids[c]) in vectors], dtype=np.int64)  # deleted since the scan
    matrix = np.stack([vectors[int(ids[c])] for c in chosen])
    probes = rng.permutation(len(chosen))[:sample]
    scanned = dict(index.unlabelled_faces())  # once, for the ingested faces and for the kept ones
    unlabelled = ingested_unlabelled(index, rng, faces=scanned)
    kept = kept_strangers(index, rng, faces=scanned)
    kept_faces = {**(kept.counts or {}), "cut": kept.cut, "ingested": len(unlabelled.vectors),
                  "read": len(unlabelled.vectors) < MIN_STRANGERS <= len(kept.vectors)}
    if kept_faces["read"]:  # too few ingested to read: the faces kept from searches a person confirmed
        unlabelled = kept
    confirmed = unlabelled.confirmed
    model, evidence, _, own, dropped = fit_with_strangers(matrix, names[chosen].astype(str), probes, pairs(index),
                                                          unlabelled.vectors, confirmed=confirmed,
                                                          rejected=unlabelled.rejected)
    model, check = matched(model, evidence, own, identities)
    if unlabelled.cut is not None:
        model, strangers_check = truncated(model, evidence, own, unlabelled.cut)
    else:
        model, strangers_check = clustered(model, evidence, own)
        model, direct = directly(model, evidence, own, confirmed)
        strangers_check = direct or strangers_check
    if strangers_check is not None:
        strangers_check["confirmed"] = int(confirmed.sum())
    models = resampled(evidence, own, seed=seed, power=model.spread_power, reading=model)
    suspects = [asdict(s) for s in model.suspects]
    reference = TailReference.from_dict(index.info().reference)
    if reference is not None and strangers_check is None and identities < REFERENCE_BELOW:
        # the gallery alone, too small to know its own tail far out: the model's reference says too
        model, models = Stricter(model, reference), [Stricter(m, reference) for m in models]
    return Modelled(model, models, identities), {
        "suspects": suspects, "strangers": int(len(unlabelled.vectors) - dropped.sum()),
        "strangers_dropped": int(dropped.sum()), "tail_check": check, "strangers_check": strangers_check,
        "kept_faces": kept_faces if kept_faces["kept"] else None,
        "kept_nearest": unjudged_nearest(kept, matrix, names[chosen].astype(str)),
        "strangers_set_aside": set_aside(unlabelled, dropped, matrix, names[chosen].astype(str))}


def tail_check(model, evidence: np.ndarray, own: np.ndarray, identities: int, anchor: int = CHECK_AT) -> dict | None:
    """The model against the gallery's own trials where they are dense: the threshold the `anchor`-th highest
    best non-mated score of a gallery face sets (duplicates set aside), the share of gallery faces at or above it,
    and what the model predicts there. On the demo's synthetic faces the model predicted 2-3 times the trials' rate
    and its threshold identified a few percent of the enrolled (docs/BENCHMARKS.md): a model that does not fit
    is refitted (matched) and, where that does not make it fit, says so instead of passing for a calibration."""
    best = np.sort(np.nanmax(evidence[own >= 0], axis=1))[::-1]
    if len(best) < 2 * anchor:
        return None
    threshold = float(best[anchor - 1])
    return {"threshold": threshold, "observed": anchor / len(best),
            "modelled": float(model.fpir(threshold, max(identities - 1, 1)))}


def matched(model: TailModel, evidence: np.ndarray, own: np.ndarray, identities: int) -> tuple[TailModel, dict | None]:
    """(the model, its tail_check): where the check finds the model does not fit (calibration.fits), refitted with the
    share of each probe's own spread (`spread_power`, bisected in [0, 1]) at which it meets the gallery's own
    trials, the suspects kept. Why the spread: on the demo's synthetic faces a probe's best scores do not follow
    its bulk's spread (their correlation with its MAD was 0.0, 0.23 on LFW-gray), and taking each probe's spread
    mixed wide spreads into the pooled tail and applied them again: the model predicted 2-3 times the trials'
    rate and its threshold identified 6% of 300 enrolled where 73% was possible (docs/BENCHMARKS.md). The check
    keeps saying so where no power fits (the sum over identities can overstate on its own)."""
    check = tail_check(model, evidence, own, identities)
    if check is None or fits(check):
        return model, check
    size = max(identities - 1, 1)
    low, high = 0.0, 1.0  # the modelled rate rises with the power: more of the probes' spreads mixed in
    for _ in range(10):
        middle = (low + high) / 2
        if TailModel.fit(evidence, middle).fpir(check["threshold"], size) > check["observed"]:
            high = middle
        else:
            low = middle
    refitted = replace(TailModel.fit(evidence, (low + high) / 2), suspects=model.suspects)
    return refitted, {**tail_check(refitted, evidence, own, identities), "modelled_before": check["modelled"],
                      "spread_power": refitted.spread_power}
