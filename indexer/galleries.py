"""A gallery is a name users configure (`faces`); behind it, one Milvus collection per model version, and an alias.

Vectors of two models must never be searched together, and a model upgrade must not empty the gallery while the
new vectors are computed. So the gallery's name is a Milvus alias that points at the collection of the model in
service, named after that model's version (`faces__<model>_<hash>`). A re-embed (jobs/pipelines/reembed.py) fills
the next model's collection beside it and then moves the alias in one call; the old collection stays, and moving
the alias back is the rollback. Milvus Lite has aliases too (create, alter, describe), so both stores behave alike;
the one difference found is that Lite lets an aliased collection be dropped, which `drop` refuses here for both.

Where the alias moved from is kept as a property of the collection it moved to (Property.PREVIOUS), so `rollback`
needs no other record. A gallery made before aliases (a plain collection named like the gallery) keeps working as
it is; `adopt` renames it after its model and puts the alias in its place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from indexer.errors import CollectionNotFound, FacesAtStake, InvalidValue, ModelMismatch, NameTaken
from indexer.milvus import Milvus, Property
from indexer.store import CollectionInfo, FaceIndex

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def collection_name(gallery: str, model_version: str) -> str:
    """`<gallery>__<model version as a name>_<8 hex>`: readable, unique per version, a valid Milvus name."""
    check_gallery(gallery)
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", model_version).strip("_")[:60] or "model"
    return f"{gallery}__{slug}_{hashlib.sha256(model_version.encode()).hexdigest()[:8]}"


def check_gallery(gallery: str) -> str:
    if not _NAME.match(gallery or "") or "__" in gallery:
        raise InvalidValue(f"a gallery name is letters, digits and single underscores, starting with a letter or "
                           f"underscore, at most 100 characters; got {gallery!r}")
    return gallery


@dataclass(frozen=True)
class Listed:
    """A gallery as a listing found it: its name (an alias, or a plain collection), arcmatch's record of the model
    its collection holds, and that collection's other properties (the calibration, the target)."""

    name: str
    info: CollectionInfo
    properties: dict


def list_galleries(client) -> list[str]:
    """The galleries one store holds: every alias over a collection of faces, and every plain collection of faces
    named like a gallery (made before aliases). An alias or collection without arcmatch's record is left out."""
    return [found.name for found in galleries_page(client)[0]]


def galleries_page(client, after: str | None = None, limit: int | None = None,
                   keep: Callable[[str], bool] = lambda name: True) -> tuple[list[Listed], str | None]:
    """The galleries named after `after`, in name order, at most `limit` of those `keep` accepts (an API key's
    reach), and where the next page starts (None: this is the last). Why pages: each gallery listed costs the
    store a call, and a deployment of hundreds of galleries should not pay for all of them to show a few."""
    milvus = Milvus(client)
    names = set(milvus("list_aliases").get("aliases", [])) | {n for n in milvus("list_collections") if "__" not in n}
    found: list[Listed] = []
    for name in sorted(n for n in names if (after is None or n > after) and keep(n)):
        properties = milvus.properties(name)
        info = CollectionInfo.from_json(properties.get(Property.INFO, ""))
        if info is None:
            continue  # another program's
        if limit is not None and len(found) == limit:
            return found, found[-1].name
        found.append(Listed(name, info, properties))
    return found, None


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    model_version: str
    dim: int
    threshold: float | None
    serving: bool  # the alias points here
    previous: str | None  # where the alias was before it moved here


class Galleries:
    """The alias and the collections of one gallery, through one MilvusClient."""

    def __init__(self, client, gallery: str) -> None:
        self.client = client
        self.gallery = gallery
        self.milvus = Milvus(client)

    def is_plain_collection(self) -> bool:
        """A collection (not an alias) carries the gallery's name: made before aliases, or by hand."""
        return self.gallery in self.milvus("list_collections")

    def target(self) -> str | None:
        """The collection the gallery's alias points at; None when there is no alias."""
        if self.gallery not in self.milvus("list_aliases").get("aliases", []):
            return None
        return self.milvus("describe_alias", self.gallery)["collection_name"]

    def collections(self) -> list[CollectionSummary]:
        target = self.target()
        out = []
        for name in sorted(self.milvus("list_collections")):
            if not name.startswith(f"{self.gallery}__") and name != self.gallery:
                continue
            properties = self.milvus.properties(name)
            info = CollectionInfo.from_json(properties.get(Property.INFO, ""))
            if info is None:
                continue
            out.append(CollectionSummary(name, info.model_version, info.dim, info.threshold,
                                         name == target or (target is None and name == self.gallery),
                                         properties.get(Property.PREVIOUS) or None))
        return out

    def serving(self) -> str | None:
        """The collection searches of the gallery's name reach: the alias's target, or a plain collection."""
        return self.target() or (self.gallery if self.is_plain_collection() else None)

    def migrating_from(self, collection: str) -> str | None:
        """The collection a re-embed into `collection` reads from (its record, jobs/pipelines/reembed.py)."""
        try:
            return json.loads(self.milvus.properties(collection).get(Property.MIGRATION) or "{}").get("source")
        except (json.JSONDecodeError, AttributeError):
            return None

    def left_behind(self, collection: str) -> bool:
        """Whether `collection` is one the gallery's alias moved away from (a re-embed switched to another model's),
        not the one in service nor a re-embed's target still being filled for the next model: what it answers is
        the gallery as it was at the switch, without what was enrolled, moved or deleted since."""
        serving = self.serving()
        return serving is not None and collection != serving and self.migrating_from(collection) != serving

    def collection_for(self, model_version: str) -> str | None:
        """The collection holding this model's vectors: the alias's target when it is this model's, else the
        collection named after the model (a re-embed in progress, or one rolled back from), else None."""
        if self.is_plain_collection():
            info = FaceIndex(self.client, self.gallery).info()
            return self.gallery if info.model_version == model_version else None
        names = {c.name: c for c in self.collections()}
        target = self.target()
        if target in names and names[target].model_version == model_version:
            return target
        name = collection_name(self.gallery, model_version)
        return name if name in names else None

    def open(self, info: CollectionInfo, *, create: bool, index_type: str = "HNSW", **options) -> FaceIndex:
        """The FaceIndex this model reads and writes. `create` makes the gallery (its collection and alias) when
        there is none yet; a gallery served by another model is refused either way: it needs a re-embed first,
        or the new model would serve an empty gallery. `options` go to the FaceIndex (consistency, search_ef...)."""
        check_gallery(self.gallery)
        found = self.collection_for(info.model_version)
        if found is not None:
            return FaceIndex(self.client, found, **options)
        serving = self.serving()
        if serving is not None:
            other = FaceIndex(self.client, serving).info().model_version
            raise ModelMismatch(f"gallery {self.gallery!r} is served by model {other}, not {info.model_version}: "
                                f"run `arcmatch reembed --model ...` to move it to this model")
        if not create:
            raise CollectionNotFound(f"gallery {self.gallery!r} does not exist; ingest or enroll faces first")
        self.refuse_case_twin()
        index = self.prepare(info, index_type=index_type, **options)
        self.milvus("create_alias", index.collection, self.gallery)
        return index

    def refuse_case_twin(self) -> None:
        """NameTaken where a gallery's name differs from this new one's only in case ("galB", "galb"): on a
        filesystem that ignores case their archives would be one folder, and to a person they are one name."""
        names = set(self.milvus("list_aliases").get("aliases", []))
        names |= {name.split("__")[0] for name in self.milvus("list_collections")}
        twin = next((name for name in sorted(names)
                     if name != self.gallery and name.casefold() == self.gallery.casefold()), None)
        if twin is not None:
            raise NameTaken(f"gallery {self.gallery!r} differs from gallery {twin!r} only in case: use {twin!r}, "
                            "or a name of its own")

    def prepare(self, info: CollectionInfo, *, index_type: str = "HNSW", **options) -> FaceIndex:
        """This model's collection (created empty if needed), without touching the alias: a re-embed's target."""
        index = FaceIndex(self.client, collection_name(self.gallery, info.model_version), **options)
        index.ensure(info, index_type=index_type)
        return index

    def switch(self, collection: str, *, lose: int | None = 0) -> str | None:
        """Point the alias at `collection` in one call; returns where it pointed before. Refused where faces the
        gallery serves now are not in `collection` (they would leave every search) unless `lose` is their number;
        None: the caller has counted them itself (a re-embed verifies face by face before it switches)."""
        if collection not in {c.name for c in self.collections()}:
            raise CollectionNotFound(f"no collection {collection!r} in gallery {self.gallery!r}")
        before = self.target()
        if before == collection:
            return before
        if before is not None and lose is not None:
            self._refuse_loss(self.lacking(collection, before, names=True), lose,
                              f"switching gallery {self.gallery!r} to {collection!r} takes out of service, or to "
                              f"another name,", f"they stay as they are in {before!r}")
        if before is not None:
            self.milvus.set_properties(collection, {Property.PREVIOUS: before})
            self.milvus("alter_alias", collection, self.gallery)
        else:
            self.milvus("create_alias", collection, self.gallery)
        return before

    def rollback(self, *, lose: int = 0) -> str:
        """Point the alias back where it was before its last move; returns the collection it points at now.
        Refused, as a switch is, where faces served now are not in the earlier collection (enrolled since the
        move, say) unless `lose` is their number."""
        target = self.target()
        summary = {c.name: c for c in self.collections()}.get(target or "")
        if summary is None or not summary.previous:
            raise CollectionNotFound(f"gallery {self.gallery!r} has no earlier collection to roll back to")
        if summary.previous not in {c.name for c in self.collections()}:
            raise CollectionNotFound(f"the earlier collection {summary.previous!r} was dropped; no rollback")
        self._refuse_loss(self.lacking(summary.previous, summary.name, names=True), lose,
                          f"rolling gallery {self.gallery!r} back to {summary.previous!r} takes out of service, or "
                          f"back to another name,", f"they stay as they are in {summary.name!r}")
        self.milvus("alter_alias", summary.previous, self.gallery)
        return summary.previous

    def drop(self, collection: str, *, archived: set[int] | None = None, lose: int = 0) -> None:
        """Drop a collection of this gallery that the alias does not point at. Refused where it holds faces that
        neither the collection in service nor the face archive (`archived`: the ids it holds, None when it is off)
        has, as they would be gone for good, unless `lose` is their number."""
        names = {c.name: c for c in self.collections()}
        if collection not in names:
            raise CollectionNotFound(f"no collection {collection!r} in gallery {self.gallery!r}")
        if names[collection].serving:
            raise InvalidValue(f"{collection!r} serves gallery {self.gallery!r}: switch the alias first")
        serving = self.target()
        held = set(FaceIndex(self.client, serving).iter_ids()) if serving is not None else set()
        only_here = set(FaceIndex(self.client, collection).iter_ids()) - held - (archived or set())
        self._refuse_loss(sorted(only_here), lose, f"dropping {collection!r} loses",
                          "neither the collection in service nor the face archive holds them")
        self.milvus("drop_collection", collection)

    def lacking(self, collection: str, other: str, *, names: bool = False) -> list[int]:
        """The face ids `other` holds that `collection` does not (a scan of the ids of both). With `names`, also
        the faces `collection` files under another name than `other` does (named, merged or moved since a switch:
        going back to it undoes that work as surely as it drops a face)."""
        if not names:
            held = set(FaceIndex(self.client, collection).iter_ids())
            return sorted(set(FaceIndex(self.client, other).iter_ids()) - held)
        filed = dict(FaceIndex(self.client, collection).identities())
        return sorted(face for face, name in FaceIndex(self.client, other).identities() if filed.get(face) != name)

    @staticmethod
    def _refuse_loss(faces: list[int], lose: int, doing: str, where: str) -> None:
        """FacesAtStake, naming a few, where `faces` would be lost and `lose` is not their number: the count told
        back is the confirmation (as `galleries delete --erase N`). A number told where nothing is at stake is
        refused too: the audit trail records it as the faces lost."""
        if lose and not faces:
            raise InvalidValue(f"{doing} no face: --lose {lose} counts faces that are not at stake; drop it")
        if faces and lose != len(faces):
            shown = ", ".join(str(f) for f in faces[:3]) + (", ..." if len(faces) > 3 else "")
            raise FacesAtStake(f"{doing} {len(faces)} face(s) ({shown}; {where}): repeat with --lose "
                               f"{len(faces)} if that is meant")

    def drop_all(self) -> None:
        """The alias and every collection of the gallery (a demo's fresh start)."""
        if self.target() is not None:
            self.milvus("drop_alias", self.gallery)
        for summary in self.collections():
            self.milvus("drop_collection", summary.name)

    def adopt(self) -> str:
        """A plain collection named like the gallery becomes `<gallery>__<model>` with the alias in its place."""
        if not self.is_plain_collection():
            raise InvalidValue(f"{self.gallery!r} is not a plain collection; nothing to adopt")
        info = FaceIndex(self.client, self.gallery).info()
        name = collection_name(self.gallery, info.model_version)
        self.milvus("rename_collection", self.gallery, name)
        self.milvus("create_alias", name, self.gallery)
        return name
