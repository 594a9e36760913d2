"""What `arcmatch reembed` did or would do, and why it refused: the summary a person reads and the errors the
CLI and the API turn into their answers (jobs/pipelines/reembed.py does the work)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import Conflict
from jobs.pipelines.reading import Skipped, why


class FacesLeftBehind(Conflict):
    """The new model's collection would lack faces in service: the switch is refused (the summary says which)."""

    def __init__(self, message: str, summary: ReembedSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class MissingFromArchive(FacesLeftBehind):
    """Known before any work: faces never archived, or archived in a form the new model cannot read."""


@dataclass
class ReembedSummary:
    gallery: str
    source: str = ""  # A: the collection in service when the job started
    target: str = ""  # B: the new model's collection
    source_model: str = ""
    target_model: str = ""
    threshold: float | None = None
    in_source: int = 0
    archived_live: int = 0
    to_embed: int = 0
    already_there: int = 0  # in B from an earlier, killed run
    kinds: dict[str, int] = field(default_factory=dict)  # the faces to embed, by archived kind
    refused_kinds: dict[str, str] = field(default_factory=dict)  # kind -> why this model reads none of it
    embedded: int = 0  # the dry run: faces it would embed
    skipped: list[Skipped] = field(default_factory=list)  # the dry run: faces it could not read
    not_archived: int = 0  # in A, never archived
    left_behind: int = 0  # in A and not in B at the switch (the dry run: predicted)
    catch_up_rounds: int = 0
    caught_up: int = 0  # enrollments applied in catch-up rounds
    deleted: int = 0  # faces removed from B because they were deleted meanwhile
    in_target: int = 0
    switched: bool = False
    switch_ms: float = 0.0
    seconds: float = 0.0
    dry_run: bool = False

    def lines(self) -> list[str]:
        head = "would move" if self.dry_run else ("moved" if self.switched else "prepared")
        out = [f"{head} gallery {self.gallery!r}: {self.source} ({self.source_model}) -> {self.target} "
               f"({self.target_model}), threshold {self.threshold}",
               f"faces in service {self.in_source}, archived {self.archived_live}, to embed {self.to_embed}"
               + (f" ({self.already_there} already there from an earlier run)" if self.already_there else "")
               + (" (archived " + ", ".join(f"{kind} {n}" for kind, n in self.kinds.items()) + ")"
                  if self.kinds else "")]
        out += [f"archived {kind}: this model reads none of them: {reason}"
                for kind, reason in self.refused_kinds.items()]
        if self.dry_run:
            out.append(f"would embed {self.embedded}, cannot embed {len(self.skipped)}"
                       + (f" ({why(self.skipped)})" if self.skipped else ""))
        else:
            rate = self.embedded / self.seconds if self.seconds else 0.0
            out.append(f"embedded {self.embedded}, skipped {len(self.skipped)}"
                       + (f" ({why(self.skipped)})" if self.skipped else "")
                       + f", catch-up rounds {self.catch_up_rounds} ({self.caught_up} written, {self.deleted} "
                       f"deleted), {self.in_target} faces in {self.target}, {rate:.1f} faces/s over "
                       f"{self.seconds:.1f} s")
        verb = "the switch would leave" if self.dry_run else "left"
        out.append(f"{verb} behind {self.left_behind} face(s) in service"
                   + (f": {why(self.skipped, self.not_archived)}" if self.left_behind else ""))
        if self.switched:
            out.append(f"alias {self.gallery!r} -> {self.target} in {self.switch_ms:.1f} ms; "
                       f"`arcmatch alias rollback` goes back to {self.source}")
        return out
