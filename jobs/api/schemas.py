"""What the API takes and answers, as pydantic models: the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from embedder.formats import NAMED
from indexer.calibration import MIN_SAMPLE
from indexer.decision import Decision
from indexer.ids import MAX_IDENTITY_LENGTH
from indexer.rates import HIGHEST, LOWEST_MODELLED

FORMATS = NAMED + " (told from the file's first bytes; anything else is refused with 415)"



class StrictBody(BaseModel):
    """A request body: a field it does not know is refused (422), never ignored, so a misspelt or misplaced
    option ("far" in a calibration, "treshold") cannot silently leave the default in force."""

    model_config = ConfigDict(extra="forbid")

class CandidateOut(BaseModel):
    identity: str
    score: float
    face_ids: list[str]


class DecisionOut(BaseModel):
    match: bool
    identity: str | None
    score: float = Field(description="cosine similarity of the best identity; higher is closer")
    threshold: float
    candidates: list[CandidateOut]

    threshold_source: str | None = Field(None, description="where the threshold comes from: given (the caller's), "
                                         "fpir (the caller's rate, read from the gallery's calibration), gallery "
                                         "(its calibration), model (its calibration), collection (stored with it)")

    @classmethod
    def of(cls, d: Decision, source: str | None = None) -> DecisionOut:
        return cls(match=d.is_match, identity=d.identity, score=d.score, threshold=d.threshold,
                   candidates=[CandidateOut(identity=c.identity, score=c.score, face_ids=[str(f) for f in c.face_ids])
                               for c in d.candidates], threshold_source=source)


class QualityOut(BaseModel):
    face_px: float = Field(description="the face box's shorter side, in pixels of the photo")
    eye_px: float = Field(description="distance between the eyes, in pixels of the photo")
    sharpness: float = Field(description="variance of the Laplacian of the aligned face; low is blurred")
    passed: bool = Field(description="whether the face meets the service's quality gate")
    reasons: list[str] = Field(description="what it misses, when it does not")


class FoundFace(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the photo turned by `rotation`")
    landmarks: list[list[float]] = Field(description="eyes, nose tip, mouth corners: five (x, y)")
    detection_score: float
    rotation: int = Field(description="degrees counter-clockwise the photo was turned to find the face")
    quality: QualityOut


class FaceDecisionOut(DecisionOut):
    face: FoundFace

    @classmethod
    def of_match(cls, match, source: str | None = None) -> FaceDecisionOut:
        from jobs.service import face_record

        return cls(**DecisionOut.of(match.decision, source).model_dump(), face=FoundFace(**face_record(match.face)))


class SearchOut(BaseModel):
    faces: list[FaceDecisionOut] = Field(description="one decision per face found, the best detection first")


JsonFloat = Annotated[float, Strict()]  # a strict float still takes integers, never booleans or strings
# an identity as validate_identity takes it (documented; the service answers 400 with its own reason)
IDENTITY_RULES = {"pattern": r"^[^\x00-\x1f\x7f\ufffd]*[^\s\x00-\x1f\x7f\ufffd][^\x00-\x1f\x7f\ufffd]*$",
                  "maxLength": MAX_IDENTITY_LENGTH}


FPIR_QUERY = ("instead of a threshold: the share of strangers that may be answered as someone, at the gallery's "
              "size now; read from the gallery's calibration (400 without one, or beyond what it measured)")


THRESHOLD_QUERY = ("a cosine similarity: the best identity is answered at or above it, else unknown; without it (and "
                   "without fpir) the gallery's calibrated threshold, else the model's")
K_QUERY = "how many nearest faces are read (the service's ARCMATCH_SEARCH_K without it); the candidates come from them"
TOP_N_QUERY = ("an identity's score is the mean of its best top_n faces among those read (1: its best face); not a "
               "number of candidates")


class EmbeddingQuery(StrictBody):
    embeddings: list[list[JsonFloat]] = Field(min_length=1)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False, description=THRESHOLD_QUERY)
    fpir: float | None = Field(default=None, gt=0.0, lt=1.0, allow_inf_nan=False, description=FPIR_QUERY)
    k: int | None = Field(default=None, ge=1, le=1000, description=K_QUERY)
    top_n: int = Field(default=1, ge=1, le=100, description=TOP_N_QUERY)

    @model_validator(mode="before")
    @classmethod
    def _numbers_only(cls, data):
        """pydantic's lax mode reads true as 1 and "5" as 5; a JSON API takes numbers as numbers."""
        if isinstance(data, dict):
            for name in ("threshold", "fpir", "k", "top_n"):
                if isinstance(data.get(name), (bool, str)):
                    raise ValueError(f"{name} must be a JSON number")
        return data


class Enrolled(BaseModel):
    identity: str
    face_ids: list[str]
    boxes: list[list[float] | None] = Field(
        default_factory=list, description="where each enrolled face is in its photo, in the order of face_ids: "
        "x1, y1, x2, y2 in pixels of the photo turned by its rotation (with faces=largest, the face chosen); null "
        "for a model that crops a fixed box")


class FaceOut(BaseModel):
    face_id: str
    source: str
    created_at: int
    model_version: str
    metadata: dict

    @classmethod
    def of(cls, row: dict) -> FaceOut:
        return cls(face_id=str(row["id"]), source=row["source"], created_at=row["created_at"],
                   model_version=row["model_version"], metadata=row["metadata"] or {})


class IdentityOut(BaseModel):
    identity: str
    faces: list[FaceOut]


class IdentityDeleted(BaseModel):
    identity: str
    deleted_faces: int


class FaceDeleted(BaseModel):
    identity: str
    deleted_face: str


class IdentitySummary(BaseModel):
    identity: str
    faces: int


class IdentityPage(BaseModel):
    identities: list[IdentitySummary]
    next_cursor: str | None


class Health(BaseModel):
    status: str


class CalibrationStatus(BaseModel):
    """The gallery's calibration at its size now (counted every ARCMATCH_CALIBRATION_CHECK_S)."""

    identities: int = Field(description="identities in the gallery at the last count")
    calibrated_identities: int = Field(description="identities when it was calibrated")
    target_fpir: float
    fpir_now: float = Field(description="the FPIR its threshold gives at the size now (estimated)")
    meets_target: bool = Field(description="false when fpir_now is past 1.25 times the target: calibrate again "
                                           "(ARCMATCH_RECALIBRATE_ON_GROWTH does it by itself)")


class Ready(BaseModel):
    """Without a key (an orchestrator's probe): the status alone. With a read key: what this process serves."""

    status: str
    collection: str | None = Field(None, description="the collection this process reads and writes (its model's)")
    model_version: str | None = None
    dim: int | None = None
    gallery: str | None = Field(None, description="the gallery's name: a Milvus alias")
    in_service: bool | None = Field(None, description="false once the alias serves another model's collection: "
                                    "this process still searches its own and refuses writes (503) until replaced")
    gallery_serves: str | None = Field(None, description="the collection the alias points at now")
    calibration: CalibrationStatus | None = Field(None, description="whether the gallery's calibration still "
                                                  "meets its target at the gallery's size (null: none, or not "
                                                  "counted yet)")


class ErrorOut(BaseModel):
    error: str = Field(description="the kind: bad input, not found, unauthorized, ...")
    detail: str = Field(description="what is wrong, in words meant for the caller")


class RatesOut(BaseModel):
    threshold: float
    fpir: float = Field(description="share of unknown-person trials answered as someone at this threshold")
    fnir: float | None = Field(description="share of known-person trials not answered as themselves (null: no "
                                           "identity has two faces)")


class SuspectOut(BaseModel):
    first: str
    second: str
    score: float = Field(description="their best cross score")
    expected_among_strangers: float = Field(description="how many pairs this extreme strangers would give")
    misfiled: str | None = Field(None, description="the gallery check's: the one photo (a face id) without which the "
                                 "pair would not be listed, a photo of one filed under the other's name (listed "
                                 "among the misfits): if it shows the other, move it rather than merge the two")
    same_photo: bool = Field(False, description="one photo under both names (a score no two people's photos reach): "
                             "looked for at any gallery size, the other pairs from 20 identities on")


class PointOut(BaseModel):
    label: str = Field(description="chosen, stricter (half the target), looser (twice the target), model")
    threshold: float
    fpir: float = Field(description="at the size calibrated")
    fpir_low: float = Field(description="95% interval")
    fpir_high: float
    fnir: float | None = Field(description="null: no identity has two faces")


class GalleryCalibrationOut(BaseModel):
    threshold: float = Field(description="the gallery's threshold: cosine similarity, higher is closer")
    target_fpir: float
    fpir: float
    fnir: float | None
    model_threshold: float | None = Field(description="the model's own calibrated threshold")
    at_model_threshold: RatesOut | None = Field(description="the same trials at the model's threshold")
    identities: int
    faces: int
    nonmated_trials: int
    mated_trials: int
    model_version: str
    created_at: float
    method: str
    fpir_interval: list[float] | None = Field(None, description="tail: a 95% interval of the modelled FPIR")
    suspects: list[SuspectOut] = Field([], description="tail: identity pairs set aside as one person")
    top1_threshold: float | None = Field(None, description="tail: what the top-1 rule would have chosen")
    strangers: int = Field(0, description="tail: unlabelled faces counted as more strangers")
    tail_check: dict | None = Field(None, description="tail: at `threshold` (where the gallery's own trials are "
                                    "dense) the FPIR the model predicts (`modelled`) and the gallery's faces give "
                                    "(`observed`): far apart, the model does not fit this gallery; `modelled_before` "
                                    "and `spread_power` where it was refitted to them")
    strangers_dropped: int = Field(0, description="tail: unlabelled faces left out as they look like someone "
                                   "enrolled")
    strangers_check: dict | None = Field(None, description="tail, with 100 or more unlabelled faces: the rates "
                                         "follow the share of them whose best score crosses; at `threshold`, the "
                                         "highest where they are counted, that share (`observed`) and the model's "
                                         "sum over identities (`modelled`), whose ratio (`factor`) scales the rates "
                                         "beyond it; from 500 confirmed strangers (`ingest --strangers`; `direct`) "
                                         "the rate at this size is their own share, counted down to `threshold` and "
                                         "fitted beyond; `confirmed`: how many there were; from 100 faces kept "
                                         "from searches and confirmed strangers, where fewer unlabelled faces "
                                         "were ingested: `cut`, the threshold they were answered unknown below, "
                                         "`beyond`, how many others are reckoned to have crossed it unseen, and "
                                         "`observed` the share of them between `threshold` and the cut")
    strangers_set_aside: list[dict] = Field([], description="tail: unlabelled faces left out as they look like "
                                            "someone enrolled, the most alike first (at most 20): `source`, "
                                            "`face_id`, the identity it looks like (`like`), the `score`, and what "
                                            "it is `now`: unlabelled (to judge), stranger (confirmed since: POST "
                                            "/v1/gallery/strangers), named (with `identity`: POST "
                                            "/v1/identities/{identity}/name) or gone")
    kept_faces: dict | None = Field(None, description="tail, where faces were kept from searches "
                                    "(ARCMATCH_KEEP_UNKNOWN_FACES): how many were looked at (`kept`), `confirmed` "
                                    "strangers and `read` or not (from 100, with fewer than 100 unlabelled faces "
                                    "`ingested`), at the `cut`; left out: `unconfirmed` (to judge: POST "
                                    "/v1/gallery/strangers/kept once the people among them are named), `expired`, "
                                    "answered under another model (`other_model`) or a laxer threshold (`laxer`)")
    kept_nearest: list[dict] = Field([], description="tail: faces kept from searches that nobody has judged, the "
                                     "most like someone enrolled first (at most 20), as `strangers_set_aside` "
                                     "gives its faces: the enrolled people a threshold missed are among them; name "
                                     "them, then confirm the rest (POST /v1/gallery/strangers/kept)")
    reference: dict | None = Field(None, description="tail, a gallery alone below 300 people whose model kept a "
                                   "tail reference (`arcmatch eval --calibrate`): the model's held-out "
                                   "`identities`, and the threshold the gallery's own tail (`own_threshold`) and "
                                   "the reference's shape beyond it (`reference_threshold`) each give for the "
                                   "target; the stricter holds at every threshold")
    points: list[PointOut] = Field([], description="the chosen threshold, those for half and twice the target, "
                                   "and the model's")
    curve: list[list[float | None]] = Field([], description="[threshold, fpir, fnir] rows, thresholds rising: "
                                            "what a search's `fpir` is read from")


class CalibrationOut(BaseModel):
    threshold: float | None = Field(description="the threshold searches use when the request gives none (null: "
                                    "none yet, so a search must give one until the gallery is calibrated)")
    source: str | None = Field(description="where it comes from: gallery (`arcmatch calibrate` or POST "
                                           "/v1/calibration), model (its checkpoint's calibration) or collection; "
                                           "null with no threshold")
    gallery: GalleryCalibrationOut | None
    status: CalibrationStatus | None = Field(None, description="the gallery calibration at the size now")


class CalibrateIn(StrictBody):
    fpir: float | None = Field(None, ge=LOWEST_MODELLED, le=HIGHEST, description="target false-positive "
                               "identification rate (default: the gallery's, as its calibration or its making set "
                               "it; else 0.01)")
    sample: int = Field(5000, ge=MIN_SAMPLE, le=100_000, description="faces drawn as trials (a gallery with fewer "
                        "gives all of its own)")
    dry_run: bool = Field(False, description="report the threshold without keeping it")
    method: Literal["tail", "top1"] = Field("tail", description="tail: every cross-identity score modelled, "
                                            "duplicates set aside, unlabelled faces as more strangers; top1: each "
                                            "trial's best non-mated score (one duplicate enrollment decides it)")


class FaceRejected(BaseModel):
    identity: str
    face_id: str
    rejected_from: list[str] = Field(description="every identity this face has been rejected from")


class FaceConfirmed(BaseModel):
    identity: str
    face_id: str


class ClusterOut(BaseModel):
    cluster: int
    size: int
    cohesion: float = Field(description="mean cosine similarity of the cluster's own graph edges")
    representative: str = Field(description="the face most similar to the rest of its cluster")
    face_ids: list[str] = Field(description="a page: the representative and a few others; one cluster: all")
    members: str = Field(description="a fingerprint of all the cluster's faces: send it back as a promote's "
                                     "`members`, and the promote is refused (409) if the cluster holds other faces "
                                     "by then")

    @classmethod
    def of(cls, view) -> ClusterOut:
        return cls(cluster=view.cluster, size=view.size, cohesion=view.cohesion,
                   representative=str(view.representative), face_ids=[str(f) for f in view.face_ids],
                   members=view.members)


class ClusterPage(BaseModel):
    clusters: list[ClusterOut]
    total: int = Field(description="clusters of min_size faces or more")
    run: str = Field(description="the clustering run these come from")


FaceIds = Annotated[list[Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]], Field(max_length=10_000)]


class PromoteIn(StrictBody):
    identity: str = Field(min_length=1, max_length=MAX_IDENTITY_LENGTH, json_schema_extra=IDENTITY_RULES)
    face_ids: FaceIds | None = Field(None, description="only these faces of the cluster (default: all)")
    proceed: bool = Field(False, description="name faces that match another identity, or were rejected from this")
    members: str | None = Field(None, pattern=r"^[0-9a-f]{16}$",
                                description="the cluster's `members` as you saw it: a 409, nothing named, if it "
                                            "holds other faces now (clustered again since)")


class NameIn(StrictBody):
    face_ids: FaceIds = Field(min_length=1, description="unlabelled faces that are this person's (those the "
                              "calibration set aside as looking like them, or any others)")
    proceed: bool = Field(False, description="name faces that match another identity, or were rejected from this")


class Promoted(BaseModel):
    identity: str
    face_ids: list[str]
    skipped: list[dict] = Field(description="faces left as they were, each with the reason")

    @classmethod
    def of(cls, named) -> Promoted:
        """From jobs.curation.Named: face ids as strings (int64 is beyond JSON's safe integers)."""
        return cls(identity=named.identity, face_ids=[str(f) for f in named.face_ids],
                   skipped=[{"face_id": str(s["face_id"]), "reason": s["reason"]} for s in named.skipped])


class SplitIn(StrictBody):
    face_ids: FaceIds = Field(min_length=1, description="faces of the cluster that become a cluster of their own")


def _each_once(values: list, what: str) -> list:
    """`values` as they are, or a ValueError (a 422) when one repeats: JSON Schema's uniqueItems, which pydantic
    does not enforce."""
    if len(set(values)) != len(values):
        raise ValueError(f"each {what} once")
    return values


class MergeIn(StrictBody):
    clusters: list[int] = Field(min_length=2, max_length=1000, description="merged under the first one's id",
                                json_schema_extra={"uniqueItems": True})

    @field_validator("clusters")
    @classmethod
    def distinct(cls, clusters: list[int]) -> list[int]:
        return _each_once(clusters, "cluster")


class IdentityRef(StrictBody):
    identity: str = Field(min_length=1, max_length=MAX_IDENTITY_LENGTH, json_schema_extra=IDENTITY_RULES)


class FaceMoveIn(IdentityRef):
    new: bool = Field(False, description="`identity` is a person enrolled under no name yet: without it, a name no "
                      "face has is a 404 (a mistyped name would make a second identity of one person)")


class IdentityMergeIn(IdentityRef):
    proceed: bool = Field(False, description="merge two names a person said are different people (409 without)")


class FaceMoved(BaseModel):
    identity: str = Field(description="whose face it is now")
    face_id: str
    rejected_from: list[str] = Field(description="identities it was said not to be, the one it left included")


class DistinctIn(StrictBody):
    identities: list[Annotated[str, Field(min_length=1, max_length=MAX_IDENTITY_LENGTH,
                                          json_schema_extra=IDENTITY_RULES)]] = Field(
        min_length=2, max_length=2, description="two identities a person confirmed are different people",
        json_schema_extra={"uniqueItems": True})

    @field_validator("identities")
    @classmethod
    def two(cls, identities: list[str]) -> list[str]:
        if identities[0] == identities[1]:
            raise ValueError("two different identities")
        return identities


class DistinctOut(BaseModel):
    pairs: list[list[str]] = Field(description="every pair confirmed as different people, each sorted")


class StrangersIn(StrictBody):
    sources: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=1000, description="where unlabelled faces came from (as the calibration lists those "
        "it left out): each is nobody who will be enrolled", json_schema_extra={"uniqueItems": True})
    proceed: bool = Field(False, description="confirm them even where one matches someone enrolled at or above the "
                          "gallery's threshold (409 without)")

    @field_validator("sources")
    @classmethod
    def once_each(cls, sources: list[str]) -> list[str]:
        return _each_once(sources, "source")


class StrangersOut(BaseModel):
    face_ids: list[str] = Field(description="the unlabelled faces now confirmed strangers (strings: int64 is beyond "
                                "JSON's safe integers)")


class MisfitOut(BaseModel):
    face_id: str = Field(description="a face id (a string: int64 is beyond JSON's safe integers)")
    identity: str
    own_best: float = Field(description="its best score against the other faces of its identity")
    other: str
    other_best: float = Field(description="its best score against `other`")
    source: str = Field("", description="the photo it came from, as it was enrolled")


class StrayOut(BaseModel):
    face_id: str = Field(description="a face id (a string: int64 is beyond JSON's safe integers)")
    identity: str
    own_best: float = Field(description="its best score against the other faces of its identity")
    chance: float = Field(description="the share of strangers' identities that would score as high with it")
    source: str = Field("", description="the photo it came from, as it was enrolled")


class SplitOut(BaseModel):
    identity: str
    groups: list[list[str]] = Field(description="face ids (strings: int64 is beyond JSON's safe integers), one list "
                                    "per person the photos look like, the largest group first")
    cross_best: float = Field(description="the best score between photos of two groups")
    chance: float = Field(description="the share of strangers' identities that would score as high")
    sources: list[list[str]] = Field(description="the photos of each group, as enrolled")


class HealthReport(BaseModel):
    identities: int
    faces: int
    duplicates: list[SuspectOut] = Field(description="pairs of names that look like one person")
    misfits: list[MisfitOut] = Field(description="photos that look more like another identity than their own")
    strays: list[StrayOut] = Field(description="photos that look like no one else of their identity (someone else's "
                                   "photo under this name): its other photos score no higher with it than one "
                                   "stranger in ten would")
    splits: list[SplitOut] = Field(description="names whose photos look like two people or "
                                   "more (a wrong merge): groups of photos that match each other, and none of "
                                   "another group's as high as one stranger in a hundred would")
    below_gate: list[str] = Field(description="identities with no face that passed the quality gate")
    notes: list[str]

