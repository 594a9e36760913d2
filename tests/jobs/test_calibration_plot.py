"""The calibration's picture (`calibrate --plot`): FNIR against FPIR, or, where no identity has two faces, FPIR
against the threshold; no warning, and the title whole."""

import warnings

import numpy as np
import pytest
from PIL import Image

from indexer.calibration import calibrate
from jobs.calibration_plot import plot
from tests.helpers import people

pytestmark = pytest.mark.stores("lite")


@pytest.mark.parametrize("photos", [1, 2])
def test_a_gallery_of_one_photo_each_is_drawn_against_the_threshold(new_collection, tmp_path, photos):
    index = new_collection(16, 0.3)
    index.upsert(people(40, photos, spread=0.3))
    index.flush()
    found = calibrate(index, 0.05, sample=200)
    assert (found.fnir is None) == (photos == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found to put in legend" leaked before
        path = plot(found, tmp_path / "c.png", "a_long_gallery_name__of_a_model_with_a_long_version_0123456789: "
                                               "FPIR target 0.05")
    picture = np.asarray(Image.open(path).convert("L"))
    assert picture.shape == (480, 660) and (picture < 128).mean() > 0.01  # drawn, not an empty frame
