"""The API's answers as frozen dataclasses, generated from its OpenAPI document by
arcmatch_client/generate.py: do not edit by hand. Face ids are strings: an int64 is beyond JSON's safe integers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Calibration:
    # the threshold searches use when the request gives none (null: none yet, so a search must give one until the
    # gallery is calibrated)
    threshold: float | None
    # where it comes from: gallery (`arcmatch calibrate` or POST /v1/calibration), model (its checkpoint's
    # calibration) or collection; null with no threshold
    source: str | None
    gallery: GalleryCalibration | None
    # the gallery calibration at the size now
    status: CalibrationStatus | None = None


@dataclass(frozen=True, kw_only=True)
class CalibrationStatus:
    """The gallery's calibration at its size now (counted every ARCMATCH_CALIBRATION_CHECK_S)."""

    # identities in the gallery at the last count
    identities: int
    # identities when it was calibrated
    calibrated_identities: int
    target_fpir: float
    # the FPIR its threshold gives at the size now (estimated)
    fpir_now: float
    # false when fpir_now is past 1.25 times the target: calibrate again (ARCMATCH_RECALIBRATE_ON_GROWTH does it by
    # itself)
    meets_target: bool


@dataclass(frozen=True, kw_only=True)
class Candidate:
    identity: str
    score: float
    face_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class Cluster:
    cluster: int
    size: int
    # mean cosine similarity of the cluster's own graph edges
    cohesion: float
    # the face most similar to the rest of its cluster
    representative: str
    # a page: the representative and a few others; one cluster: all
    face_ids: list[str]
    # a fingerprint of all the cluster's faces: send it back as a promote's `members`, and the promote is refused
    # (409) if the cluster holds other faces by then
    members: str


@dataclass(frozen=True, kw_only=True)
class ClusterPage:
    clusters: list[Cluster]
    # clusters of min_size faces or more
    total: int
    # the clustering run these come from
    run: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    match: bool
    identity: str | None
    # cosine similarity of the best identity; higher is closer
    score: float
    threshold: float
    candidates: list[Candidate]
    # where the threshold comes from: given (the caller's), fpir (the caller's rate, read from the gallery's
    # calibration), gallery (its calibration), model (its calibration), collection (stored with it)
    threshold_source: str | None = None


@dataclass(frozen=True, kw_only=True)
class Distinct:
    # every pair confirmed as different people, each sorted
    pairs: list[list[str]]


@dataclass(frozen=True, kw_only=True)
class Enrolled:
    identity: str
    face_ids: list[str]
    # where each enrolled face is in its photo, in the order of face_ids: x1, y1, x2, y2 in pixels of the photo turned
    # by its rotation (with faces=largest, the face chosen); null for a model that crops a fixed box
    boxes: list[list[float] | None] = None


@dataclass(frozen=True, kw_only=True)
class FaceConfirmed:
    identity: str
    face_id: str


@dataclass(frozen=True, kw_only=True)
class FaceDecision:
    match: bool
    identity: str | None
    # cosine similarity of the best identity; higher is closer
    score: float
    threshold: float
    candidates: list[Candidate]
    # where the threshold comes from: given (the caller's), fpir (the caller's rate, read from the gallery's
    # calibration), gallery (its calibration), model (its calibration), collection (stored with it)
    threshold_source: str | None = None
    face: FoundFace


@dataclass(frozen=True, kw_only=True)
class FaceDeleted:
    identity: str
    deleted_face: str


@dataclass(frozen=True, kw_only=True)
class FaceMoved:
    # whose face it is now
    identity: str
    face_id: str
    # identities it was said not to be, the one it left included
    rejected_from: list[str]


@dataclass(frozen=True, kw_only=True)
class Face:
    face_id: str
    source: str
    created_at: int
    model_version: str
    metadata: dict


@dataclass(frozen=True, kw_only=True)
class FaceRejected:
    identity: str
    face_id: str
    # every identity this face has been rejected from
    rejected_from: list[str]


@dataclass(frozen=True, kw_only=True)
class FoundFace:
    # x1, y1, x2, y2 in pixels of the photo turned by `rotation`
    box: list[float]
    # eyes, nose tip, mouth corners: five (x, y)
    landmarks: list[list[float]]
    detection_score: float
    # degrees counter-clockwise the photo was turned to find the face
    rotation: int
    quality: Quality


@dataclass(frozen=True, kw_only=True)
class GalleryCalibration:
    # the gallery's threshold: cosine similarity, higher is closer
    threshold: float
    target_fpir: float
    fpir: float
    fnir: float | None
    # the model's own calibrated threshold
    model_threshold: float | None
    # the same trials at the model's threshold
    at_model_threshold: Rates | None
    identities: int
    faces: int
    nonmated_trials: int
    mated_trials: int
    model_version: str
    created_at: float
    method: str
    # tail: a 95% interval of the modelled FPIR
    fpir_interval: list[float] | None = None
    # tail: identity pairs set aside as one person
    suspects: list[Suspect] = field(default_factory=list)
    # tail: what the top-1 rule would have chosen
    top1_threshold: float | None = None
    # tail: unlabelled faces counted as more strangers
    strangers: int = 0
    # tail: at `threshold` (where the gallery's own trials are dense) the FPIR the model predicts (`modelled`) and the
    # gallery's faces give (`observed`): far apart, the model does not fit this gallery; `modelled_before` and
    # `spread_power` where it was refitted to them
    tail_check: dict | None = None
    # tail: unlabelled faces left out as they look like someone enrolled
    strangers_dropped: int = 0
    # tail, with 100 or more unlabelled faces: the rates follow the share of them whose best score crosses; at
    # `threshold`, the highest where they are counted, that share (`observed`) and the model's sum over identities
    # (`modelled`), whose ratio (`factor`) scales the rates beyond it; from 500 confirmed strangers (`ingest
    # --strangers`; `direct`) the rate at this size is their own share, counted down to `threshold` and fitted beyond;
    # `confirmed`: how many there were; from 100 faces kept from searches and confirmed strangers, where fewer
    # unlabelled faces were ingested: `cut`, the threshold they were answered unknown below, `beyond`, how many others
    # are reckoned to have crossed it unseen, and `observed` the share of them between `threshold` and the cut
    strangers_check: dict | None = None
    # tail: unlabelled faces left out as they look like someone enrolled, the most alike first (at most 20): `source`,
    # `face_id`, the identity it looks like (`like`), the `score`, and what it is `now`: unlabelled (to judge),
    # stranger (confirmed since: POST /v1/gallery/strangers), named (with `identity`: POST
    # /v1/identities/{identity}/name) or gone
    strangers_set_aside: list[dict] = field(default_factory=list)
    # tail, where faces were kept from searches (ARCMATCH_KEEP_UNKNOWN_FACES): how many were looked at (`kept`),
    # `confirmed` strangers and `read` or not (from 100, with fewer than 100 unlabelled faces `ingested`), at the
    # `cut`; left out: `unconfirmed` (to judge: POST /v1/gallery/strangers/kept once the people among them are named),
    # `expired`, answered under another model (`other_model`) or a laxer threshold (`laxer`)
    kept_faces: dict | None = None
    # tail: faces kept from searches that nobody has judged, the most like someone enrolled first (at most 20), as
    # `strangers_set_aside` gives its faces: the enrolled people a threshold missed are among them; name them, then
    # confirm the rest (POST /v1/gallery/strangers/kept)
    kept_nearest: list[dict] = field(default_factory=list)
    # tail, a gallery alone below 300 people whose model kept a tail reference (`arcmatch eval --calibrate`): the
    # model's held-out `identities`, and the threshold the gallery's own tail (`own_threshold`) and the reference's
    # shape beyond it (`reference_threshold`) each give for the target; the stricter holds at every threshold
    reference: dict | None = None
    # the chosen threshold, those for half and twice the target, and the model's
    points: list[Point] = field(default_factory=list)
    # [threshold, fpir, fnir] rows, thresholds rising: what a search's `fpir` is read from
    curve: list[list[float | None]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class GalleryDetail:
    name: str
    model_version: str
    # the FPIR a calibration aims at when the request names none
    target_fpir: float
    # faces held, unlabelled ones included; null in a listing while the store cannot count this gallery (its
    # collection loading after a restart): ask again shortly
    faces: int | None
    # the service's default gallery: the one its routes outside /v1/galleries/{gallery} serve
    default: bool
    # what the service serves of this gallery, as /v1/ready says for the default
    ready: Ready


@dataclass(frozen=True, kw_only=True)
class GalleryErased:
    name: str
    faces: int
    # archived face images erased with it
    archived: int
    collections: list[str]


@dataclass(frozen=True, kw_only=True)
class GalleryList:
    # the galleries this key reaches, in name order
    galleries: list[Gallery]
    # where the next page starts (the `cursor` to send); null on the last page
    next_cursor: str | None = None


@dataclass(frozen=True, kw_only=True)
class Gallery:
    name: str
    model_version: str
    # the FPIR a calibration aims at when the request names none
    target_fpir: float
    # faces held, unlabelled ones included; null in a listing while the store cannot count this gallery (its
    # collection loading after a restart): ask again shortly
    faces: int | None
    # the service's default gallery: the one its routes outside /v1/galleries/{gallery} serve
    default: bool


@dataclass(frozen=True, kw_only=True)
class Health:
    status: str


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    identities: int
    faces: int
    # pairs of names that look like one person
    duplicates: list[Suspect]
    # photos that look more like another identity than their own
    misfits: list[Misfit]
    # photos that look like no one else of their identity (someone else's photo under this name): its other photos
    # score no higher with it than one stranger in ten would
    strays: list[Stray]
    # names whose photos look like two people or more (a wrong merge): groups of photos that match each other, and
    # none of another group's as high as one stranger in a hundred would
    splits: list[Split]
    # identities with no face that passed the quality gate
    below_gate: list[str]
    notes: list[str]


@dataclass(frozen=True, kw_only=True)
class IdentityDeleted:
    identity: str
    deleted_faces: int


@dataclass(frozen=True, kw_only=True)
class Identity:
    identity: str
    faces: list[Face]


@dataclass(frozen=True, kw_only=True)
class IdentityPage:
    identities: list[IdentitySummary]
    next_cursor: str | None


@dataclass(frozen=True, kw_only=True)
class IdentitySummary:
    identity: str
    faces: int


@dataclass(frozen=True, kw_only=True)
class Misfit:
    # a face id (a string: int64 is beyond JSON's safe integers)
    face_id: str
    identity: str
    # its best score against the other faces of its identity
    own_best: float
    other: str
    # its best score against `other`
    other_best: float
    # the photo it came from, as it was enrolled
    source: str = ''


@dataclass(frozen=True, kw_only=True)
class Point:
    # chosen, stricter (half the target), looser (twice the target), model
    label: str
    threshold: float
    # at the size calibrated
    fpir: float
    # 95% interval
    fpir_low: float
    fpir_high: float
    # null: no identity has two faces
    fnir: float | None


@dataclass(frozen=True, kw_only=True)
class Promoted:
    identity: str
    face_ids: list[str]
    # faces left as they were, each with the reason
    skipped: list[dict]


@dataclass(frozen=True, kw_only=True)
class Quality:
    # the face box's shorter side, in pixels of the photo
    face_px: float
    # distance between the eyes, in pixels of the photo
    eye_px: float
    # variance of the Laplacian of the aligned face; low is blurred
    sharpness: float
    # whether the face meets the service's quality gate
    passed: bool
    # what it misses, when it does not
    reasons: list[str]


@dataclass(frozen=True, kw_only=True)
class Rates:
    threshold: float
    # share of unknown-person trials answered as someone at this threshold
    fpir: float
    # share of known-person trials not answered as themselves (null: no identity has two faces)
    fnir: float | None


@dataclass(frozen=True, kw_only=True)
class Ready:
    """Without a key (an orchestrator's probe): the status alone. With a read key: what this process serves."""

    status: str
    # the collection this process reads and writes (its model's)
    collection: str | None = None
    model_version: str | None = None
    dim: int | None = None
    # the gallery's name: a Milvus alias
    gallery: str | None = None
    # false once the alias serves another model's collection: this process still searches its own and refuses writes
    # (503) until replaced
    in_service: bool | None = None
    # the collection the alias points at now
    gallery_serves: str | None = None
    # whether the gallery's calibration still meets its target at the gallery's size (null: none, or not counted yet)
    calibration: CalibrationStatus | None = None


@dataclass(frozen=True, kw_only=True)
class Search:
    # one decision per face found, the best detection first
    faces: list[FaceDecision]


@dataclass(frozen=True, kw_only=True)
class Split:
    identity: str
    # face ids (strings: int64 is beyond JSON's safe integers), one list per person the photos look like, the largest
    # group first
    groups: list[list[str]]
    # the best score between photos of two groups
    cross_best: float
    # the share of strangers' identities that would score as high
    chance: float
    # the photos of each group, as enrolled
    sources: list[list[str]]


@dataclass(frozen=True, kw_only=True)
class Strangers:
    # the unlabelled faces now confirmed strangers (strings: int64 is beyond JSON's safe integers)
    face_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class Stray:
    # a face id (a string: int64 is beyond JSON's safe integers)
    face_id: str
    identity: str
    # its best score against the other faces of its identity
    own_best: float
    # the share of strangers' identities that would score as high with it
    chance: float
    # the photo it came from, as it was enrolled
    source: str = ''


@dataclass(frozen=True, kw_only=True)
class Suspect:
    first: str
    second: str
    # their best cross score
    score: float
    # how many pairs this extreme strangers would give
    expected_among_strangers: float
    # the gallery check's: the one photo (a face id) without which the pair would not be listed, a photo of one filed
    # under the other's name (listed among the misfits): if it shows the other, move it rather than merge the two
    misfiled: str | None = None
    # one photo under both names (a score no two people's photos reach): looked for at any gallery size, the other
    # pairs from 20 identities on
    same_photo: bool = False
