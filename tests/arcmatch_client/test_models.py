"""The client's result types are the API's answers: models.py is generated from the OpenAPI document, and a change
to the API that is not carried into it fails here (regenerate: python -m arcmatch_client.generate)."""

from arcmatch_client import generate, models
from arcmatch_client.parsing import parse


def test_the_committed_models_are_the_apis_answers():
    assert generate.render(generate.document()) == generate.OUT.read_text(), \
        "arcmatch_client/models.py is stale: run `python -m arcmatch_client.generate`"


def test_answers_parse_into_nested_types_and_unknown_fields_are_left_out():
    answer = {"faces": [{"match": True, "identity": "ann", "score": 1, "threshold": 0.5, "added_later": 1,
                         "candidates": [{"identity": "ann", "score": 0.9, "face_ids": ["1"]}],
                         "face": {"box": [0, 0, 4, 4], "landmarks": [[1, 1]] * 5, "detection_score": 1.0,
                                  "rotation": 0, "quality": {"face_px": 4, "eye_px": 2, "sharpness": 10.0,
                                                             "passed": True, "reasons": []}}}]}
    [face] = parse(models.Search, answer).faces
    assert isinstance(face.candidates[0], models.Candidate) and face.candidates[0].face_ids == ["1"]
    assert face.score == 1.0 and isinstance(face.score, float) and face.face.quality.passed
    report = parse(models.GalleryCalibration, {"threshold": 0.5, "target_fpir": 0.01, "fpir": 0.01, "fnir": None,
                                               "model_threshold": None, "at_model_threshold": None, "identities": 3,
                                               "faces": 3, "nonmated_trials": 6, "mated_trials": 0,
                                               "model_version": "m", "created_at": 0.0, "method": "tail"})
    assert report.suspects == [] and report.curve == [] and report.at_model_threshold is None
