"""What the galleries resource takes and answers (jobs/api/routes/galleries.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, Field

from indexer.rates import HIGHEST, LOWEST_MODELLED
from jobs.api.schemas import Ready, StrictBody
from jobs.api.slashes import restored

NAME_RULES = {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"}
NAME_HELP = "letters, digits and single underscores, starting with a letter or underscore, at most 100 characters"
# restored: a refusal quotes the name as sent, "/" and all, not as routing carried it (jobs/api/slashes.py)
GalleryName = Annotated[str, Path(json_schema_extra=NAME_RULES, description="a gallery's name: " + NAME_HELP),
                        AfterValidator(restored)]
GalleryCursor = Annotated[str | None, Query(pattern="^$|" + NAME_RULES["pattern"],
                                            description="the next_cursor of the previous page")]


class GalleryIn(StrictBody):
    name: str = Field(json_schema_extra=NAME_RULES, description=NAME_HELP)
    model: str | None = Field(None, description="the model version the gallery is served by; the service's own if "
                              "left out, and the only one it accepts: a gallery of another model is made by a service "
                              "running that model (`arcmatch galleries create NAME --model DIR`)")
    fpir: float | None = Field(None, ge=LOWEST_MODELLED, le=HIGHEST, description="the FPIR its calibrations aim "
                               "at when the request names none (POST .../calibration); default 0.01")


class GalleryOut(BaseModel):
    name: str
    model_version: str
    target_fpir: float = Field(description="the FPIR a calibration aims at when the request names none")
    faces: int | None = Field(description="faces held, unlabelled ones included; null in a listing while the "
                              "store cannot count this gallery (its collection loading after a restart): ask again "
                              "shortly")
    default: bool = Field(description="the service's default gallery: the one its routes outside "
                          "/v1/galleries/{gallery} serve")


class GalleryDetail(GalleryOut):
    ready: Ready = Field(description="what the service serves of this gallery, as /v1/ready says for the default")


class GalleryList(BaseModel):
    galleries: list[GalleryOut] = Field(description="the galleries this key reaches, in name order")
    next_cursor: str | None = Field(None, description="where the next page starts (the `cursor` to send); null on "
                                    "the last page")


class GalleryErased(BaseModel):
    name: str
    faces: int
    archived: int = Field(description="archived face images erased with it")
    collections: list[str]
