"""Search: a photo (a decision per face found in it), or caller-given embeddings, answered with "identity X" or
unknown and the candidates."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile

from common.errors import BadInput
from jobs.api.auditing import note
from jobs.api.deps import ReadKey, SearchDep
from jobs.api.errors import responses
from jobs.api.schemas import (
    FORMATS,
    FPIR_QUERY,
    K_QUERY,
    THRESHOLD_QUERY,
    TOP_N_QUERY,
    DecisionOut,
    EmbeddingQuery,
    FaceDecisionOut,
    SearchOut,
)
from jobs.api.uploads import read_upload
from jobs.service import FaceMatch

router = APIRouter(prefix="/search", tags=["search"], responses=responses(401, 403, 404, 409, 503))


# a single UploadFile cannot take File(min_length=1) (FastAPI applies it to the file object): documented instead
Image = Annotated[UploadFile, File(json_schema_extra={"minLength": 1}, description="a photo: " + FORMATS)]


@router.post("", name="search", responses=responses(400, 413, 415, 422))
async def search_image(_: ReadKey, searcher: SearchDep, request: Request, image: Image,
                       threshold: Annotated[float, Form(ge=-1.0, le=1.0, allow_inf_nan=False,
                                                        description=THRESHOLD_QUERY)] = None,
                       fpir: Annotated[float, Form(gt=0.0, lt=1.0, allow_inf_nan=False, description=FPIR_QUERY)] = None,
                       k: Annotated[int, Form(ge=1, le=1000, description=K_QUERY)] = None,
                       top_n: Annotated[int, Form(ge=1, le=100, description=TOP_N_QUERY)] = 1,
                       faces: Annotated[Literal["all", "largest"], Form()] = "all") -> SearchOut:
    settings = request.app.state.settings
    sent = len((await request.form()).getlist("image"))  # the form as FastAPI already parsed it
    if sent > 1:  # answering for the first alone would read as an answer for every photo sent
        raise BadInput(f"one image per search, got {sent}: send each photo in a request of its own")
    source = await searcher.threshold_source(threshold, fpir)
    threshold = await searcher.threshold(threshold, fpir)
    data = await read_upload(image, settings.max_upload_bytes)
    found = await searcher.faces(data, faces)
    vectors = await searcher.embed(found)
    decisions = await searcher.search(vectors, threshold, k, top_n)
    kept = await searcher.keep_unknown(data, found, vectors, decisions) if settings.keep_unknown_faces else []
    note(request, matches=_matches(decisions), **({"kept_unknown": [str(f) for f in kept]} if kept else {}))
    return SearchOut(faces=[FaceDecisionOut.of_match(FaceMatch(f, d), source)
                            for f, d in zip(found, decisions, strict=True)])


@router.post("/embedding", responses=responses(400, 422))
async def search_embedding(_: ReadKey, searcher: SearchDep, request: Request,
                           query: EmbeddingQuery) -> list[DecisionOut]:
    limit = request.app.state.settings.max_batch_vectors
    if len(query.embeddings) > limit:
        raise BadInput(f"at most {limit} embeddings per request")
    source = await searcher.threshold_source(query.threshold, query.fpir)
    threshold = await searcher.threshold(query.threshold, query.fpir)
    decisions = await searcher.search(query.embeddings, threshold, query.k, query.top_n)
    note(request, matches=_matches(decisions))
    return [DecisionOut.of(d, source) for d in decisions]


def _matches(decisions) -> list:
    """For the audit record: per face, the identity accepted and its best face, or None for unknown."""
    return [{"identity": d.identity, "face_ids": [str(f) for f in d.candidates[0].face_ids[:1]]} if d.is_match
            else None for d in decisions]
