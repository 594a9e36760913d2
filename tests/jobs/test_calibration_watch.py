"""A gallery calibration followed as the gallery grows: its status at the size now, and calibrating again with the
same target and method once it no longer meets it (Milvus Lite, the service in process)."""

import logging

import pytest

from indexer.ids import face_id
from indexer.rates import at_size
from indexer.store import FaceRow
from jobs.audit import read
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import TINY_DIM, people


def enroll(service: IdentityService, persons: range) -> None:
    """People with one or two faces each, written as vectors (the watch counts names; no photo is needed)."""
    for person in persons:
        service.index.upsert(people(1, 2 if person % 3 == 0 else 1, spread=0.5, seed=person, first=person,
                                    dim=TINY_DIM))
    service.index.flush()


@pytest.fixture
def service(tmp_path, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, milvus_uri=str(tmp_path / "g.db"), gallery="grow",
                        archive=False, audit_dir=str(tmp_path / "audit"), recalibrate_on_growth=False)
    service = IdentityService.open(settings, create=True)
    yield service
    service.close()


class Said(logging.Handler):
    """The watch's log lines, caught at its own logger: a command run earlier in the process may have stopped it
    from propagating to the root one, or quieted it (jobs/runtime.py keeps the noisy loggers off the terminal)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_growth_past_the_calibrated_size_is_said_then_calibrated_again(service, tmp_path):
    enroll(service, range(30))
    kept = service.calibrate(0.1)
    service.watch.poke(service.lookup.gallery_calibration, wait=True)
    status = service.ready()["calibration"]
    assert status == {"identities": 30, "calibrated_identities": 30, "target_fpir": 0.1, "fpir_now": kept.fpir,
                      "meets_target": True}

    enroll(service, range(30, 75))  # 2.5 times the people: each one more chance for a stranger to match
    service.watch.poke(service.lookup.gallery_calibration, wait=True)
    status = service.ready()["calibration"]
    assert status["identities"] == 75 and status["fpir_now"] == pytest.approx(at_size(kept.fpir, 30, 75))
    assert status["fpir_now"] > 1.25 * 0.1 and status["meets_target"] is False
    assert service.lookup.gallery_calibration() == kept  # said, not changed: re-calibrating is off here
    assert "no longer meets its target" in "\n".join(kept.growth_lines(75))

    [first] = people(1, 1, spread=0.5, seed=5, first=5, dim=TINY_DIM)  # person 5 again, under another name
    service.index.upsert([FaceRow("again", "person 5 again", first.vector, face_id("again"))])
    service.index.flush()
    service.watch.recalibrate = True  # ARCMATCH_RECALIBRATE_ON_GROWTH
    said, watch_log = Said(), logging.getLogger("arcmatch.calibration")
    level = watch_log.level  # a quiet Ray start earlier in the process may have set "arcmatch" to errors only
    watch_log.addHandler(said)
    watch_log.setLevel(logging.WARNING)
    try:
        service.watch.poke(service.lookup.gallery_calibration, wait=True)
    finally:
        watch_log.removeHandler(said)
        watch_log.setLevel(level)
    # the threshold moved: the pair it set aside is said beside it
    assert any(("set aside, more alike than strangers are (one person under two names?): 1 pair(s): 'person 5' and "
               "'person 5 again'") in line
               for line in said.lines)
    again = service.lookup.gallery_calibration()
    assert (again.identities, again.target_fpir, again.method) == (76, 0.1, kept.method)
    assert again.fpir <= 0.1 + 1e-6 and service.ready()["calibration"]["meets_target"] is True
    [record] = read(tmp_path / "audit", action="calibrate")
    assert record["key"] == "arcmatch:growth" and record["identities"] == 76


def test_a_rate_asked_for_is_read_at_the_size_now(service):
    enroll(service, range(40))
    kept = service.calibrate(0.1)
    assert service.lookup.threshold(fpir=0.1) == pytest.approx(kept.threshold, abs=0.02)
    service.watch.poke(service.lookup.gallery_calibration, wait=True)
    enroll(service, range(40, 80))  # twice the people: the same rate needs a stricter threshold
    service.watch.poke(service.lookup.gallery_calibration, wait=True)
    assert service.lookup.threshold(fpir=0.1) >= kept.threshold
    with pytest.raises(Exception, match="not both"):
        service.lookup.threshold(0.5, fpir=0.1)


def test_a_search_that_asks_for_a_rate_counts_the_gallery_and_never_calibrates_it(service, tmp_path):
    """`search --fpir` reads the rate at the size now: it counts, and leaves re-calibrating to the service's watch
    and to ingestion, even where re-calibrating on growth is on (a read that wrote, and said nothing, was found)."""
    enroll(service, range(30))
    kept = service.calibrate(0.1)
    enroll(service, range(30, 75))
    service.watch.recalibrate = True
    assert service.watch.count_now() == 75
    assert service.lookup.gallery_calibration() == kept and not (tmp_path / "audit").exists()  # nothing written
    assert service.lookup.threshold(fpir=0.1) > kept.threshold  # the same rate among more people: stricter


def test_closing_waits_for_a_running_count_and_starts_none(service, caplog):
    """A count runs in the background on the service's client: closing the service waits for it, so no count
    ever calls a closed client (each such call failed, was retried and logged), and no count starts after."""
    enroll(service, range(20))
    service.watch.every_s = 0
    service.watch.poke(service.lookup.gallery_calibration)  # in a thread
    service.close()
    assert service.watch.identities == 20  # it finished before the client closed
    service.watch.identities = None
    service.watch.poke(service.lookup.gallery_calibration)
    service.watch.poke(service.lookup.gallery_calibration, wait=True)
    assert service.watch.identities is None
    assert not [r for r in caplog.records if "Milvus" in r.getMessage()]


def test_the_calibration_route_of_a_service_just_started_counts_before_it_says_the_target_is_met(tmp_path,
                                                                                                  tiny_model_dir):
    """A service restarted after the gallery grew answered GET /v1/calibration with the size at calibration, and
    "meets its target", while /ready, which had counted, said it did not."""
    from jobs.api.routes.calibration import current

    settings = Settings(model=tiny_model_dir, milvus_uri=str(tmp_path / "g.db"), gallery="grow", archive=False,
                        audit_dir=str(tmp_path / "audit"), recalibrate_on_growth=False)
    service = IdentityService.open(settings, create=True)
    enroll(service, range(30))
    service.calibrate(0.1)
    enroll(service, range(30, 75))
    service.close()
    restarted = IdentityService.open(settings)
    try:
        assert restarted.watch.identities is None  # nothing counted yet
        status = current(None, restarted).status
        assert status.identities == 75 and status.meets_target is False
    finally:
        restarted.close()
