"""Faces from photos, for the service: decode, find the faces, prepare and embed them, and cut what the archive keeps.

Photos become faces through one FacePolicy (embedder/faces.py): detection and five-point alignment for models that
want aligned faces, the spec's crop for the others. A probe keeps every face with its quality (the caller decides
what to do with a face below the gate); an enrollment takes faces by the policy's rule and refuses the photo
otherwise.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common.errors import ArcmatchError, BadInput, NotFound
from embedder.archiving import kept_face, thumbnail
from embedder.embed import Embedder
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy, PreparedFace
from embedder.preprocess import load_rgb
from embedder.quality import QualityGate
from indexer.archive import FaceArchive
from indexer.ids import validate_face_id

Prepared = tuple[str, bytes, list[PreparedFace]]  # (photo's name, its bytes, its faces)


class PhotoFaces:
    """One model's way from photos to faces and vectors (`embedder`, `policy`; photos over `max_pixels` are
    refused before they are decoded)."""

    def __init__(self, embedder: Embedder, policy: FacePolicy | None = None, max_pixels: int = 40_000_000) -> None:
        policy = policy or FacePolicy()
        if embedder.spec.alignment != "none" and policy.detector is None:
            raise ModelError(f"the model wants {embedder.spec.alignment} aligned faces: set ARCMATCH_DETECTOR to a "
                             f"YuNet .onnx face detector")
        self.embedder, self.policy, self.max_pixels = embedder, policy, max_pixels
        self.spec = embedder.spec

    @property
    def aligned(self) -> bool:
        """Whether faces are detected and aligned (their record, landmarks and quality, is kept with them)."""
        return self.spec.alignment != "none"

    def load(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> the full-resolution RGB photo (EXIF applied, size limits checked)."""
        return load_rgb(data, max_pixels=self.max_pixels)

    def probe_faces(self, photo: np.ndarray, select: str = "all") -> list[PreparedFace]:
        """The faces of a probe photo, each with its quality: "all" (every face found, best score first, those
        below the quality gate included and marked) or "largest". NoFace when there is none."""
        found = self.policy.examine(photo, self.spec)
        if not found:
            raise self.policy.none_found(photo)
        if select == "largest":
            return [max(found, key=lambda f: f.face.area)]
        return found

    def embed_faces(self, faces: list[PreparedFace]) -> np.ndarray:
        return self.embedder.embed(np.stack([f.chip for f in faces]))

    def enrollment(self, images: list[tuple[str, bytes]], *, select: str | None = None, gate: bool = True,
                   keep: bool = False) -> tuple[list[Prepared], list[tuple[bytes, str]]]:
        """Every photo's faces by the policy's rule (default: exactly one face that passes the quality gate;
        `gate=False` takes faces below it too), all checked before anything is written, and with `keep` what the
        archive keeps of each face ((image, kind), in order). Bad photos raise one error naming each with its
        reason (a QA pass sent four photos, three of them bad, and was told of the first only): the kind of their
        refusal where all share it (no face: 422), else a BadInput."""
        policy = replace(self.policy, select=select or self.policy.select)
        if not gate:
            policy = replace(policy, gate=QualityGate.open())
        prepared, kept, refused = [], [], []
        for name, data in images:
            try:
                photo = self.load(data)
                faces = policy.prepare(photo, self.spec)
            except ImageError as exc:  # the same kind (no face, too many, unreadable), naming the photo
                refused.append((name, exc))
                continue
            prepared.append((name, data, faces))
            if keep:
                kept += [self.kept(photo, face) for face in faces]
        if refused:
            raise refusal(refused, len(images))
        return prepared, kept

    def kept(self, photo: np.ndarray, face: PreparedFace) -> tuple[bytes, str]:
        """What the archive keeps of one face of `photo`: (image, kind)."""
        return kept_face(photo, face, self.spec, self.policy)

    def judged(self, face: PreparedFace) -> PreparedFace:
        """The face judged by the service's own gate, whatever gate a caller chose to enroll it by."""
        return replace(face, reasons=tuple(self.policy.gate.reasons(face.quality)))

    def face_image(self, archive: FaceArchive | None, face: int) -> bytes:
        """A thumbnail (JPEG) of a face from the archive, for people to look at; NotFound without one."""
        face = validate_face_id(face)
        kept = archive.image(face) if archive is not None else None
        if kept is None:
            raise NotFound(f"no image is kept for face {face} (deleted, or enrolled before the face archive)")
        return thumbnail(kept[1], kept[0], self.spec.crop_box)


def refusal(refused: list[tuple[str, ImageError]], sent: int) -> ArcmatchError:
    """One error for the photos of a request that were refused, each named with its reason."""
    kinds = {type(exc) for _, exc in refused}
    said = "; ".join(f"{name}: {exc}" for name, exc in refused)
    if len(refused) == 1:
        return type(refused[0][1])(said)
    kind = kinds.pop() if len(kinds) == 1 else BadInput
    return kind(f"{len(refused)} of {sent} photos refused, nothing enrolled: {said}")
