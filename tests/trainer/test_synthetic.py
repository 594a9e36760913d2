import numpy as np

from trainer.synthetic import make_identity, render, write_dataset


def test_identities_are_fixed_and_distinct():
    assert make_identity(0, 3) == make_identity(0, 3)
    assert make_identity(0, 3) != make_identity(0, 4)
    assert make_identity(0, 3) != make_identity(1, 3)


def test_images_of_one_identity_vary():
    ident = make_identity(0, 0)
    rng = np.random.default_rng(0)
    a, b = render(ident, rng, 48), render(ident, rng, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_write_dataset_is_deterministic(tmp_path):
    first = write_dataset(tmp_path / "a", range(2), 3, seed=5, size=32)
    second = write_dataset(tmp_path / "b", range(2), 3, seed=5, size=32, workers=2)  # one identity per process
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert len(first) == 6
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(first, second, strict=True))
    assert sorted(d.name for d in (tmp_path / "a").iterdir()) == ["person_00000", "person_00001"]


def test_a_photo_says_where_its_occluder_is():
    from trainer.synthetic import draw

    ident = make_identity(0, 1)
    photos = [draw(ident, np.random.default_rng([0, n]), 64) for n in range(60)]
    occluded = [p for p in photos if p.occluder is not None]
    assert 8 <= len(occluded) <= 30  # about 30% of photos
    for photo in occluded:
        left, top, right, bottom = photo.occluder
        assert 12 <= right - left <= 32 and 12 <= bottom - top <= 32
        patch = photo.image[top:bottom, left:right].reshape(-1, 3)
        assert (patch == patch[0]).all()  # one solid colour (it is drawn last)
    rng, again = np.random.default_rng(7), np.random.default_rng(7)
    assert np.array_equal(render(ident, rng, 32), draw(ident, again, 32).image)
