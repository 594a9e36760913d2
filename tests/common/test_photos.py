"""Which files of a folder are photos (common/photos.py): by name or by first bytes, links followed once."""

from pathlib import Path

from common.photos import is_photo, photos_under

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def test_a_photo_by_its_name_or_its_first_bytes_and_nothing_else(tmp_path):
    files = {"a.jpg": JPEG, "IMG_0001": JPEG, "x.jfif": JPEG, "phone.heic": b"\x00\x00\x00\x18ftypheic....",
             "unnamed": b"\x00\x00\x00\x18ftypavif....", "clip": b"\x00\x00\x00\x18ftypisom....",
             "notes.txt": b"met at the fair", "P5.txt": b"P5 is a meeting room", "BM.txt": b"BM and others"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    found = sorted(p.name for p in tmp_path.iterdir() if is_photo(p))
    # a video's ISO media brand and text that starts like a BMP or a PGM are left alone
    assert found == ["IMG_0001", "a.jpg", "phone.heic", "unnamed", "x.jfif"]


def test_links_are_followed_once_and_a_broken_one_is_listed(tmp_path):
    person = tmp_path / "ann"
    (person / ".thumbs").mkdir(parents=True)
    (person / ".thumbs" / "a.jpg").write_bytes(JPEG)  # hidden: left alone
    (person / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "kept" / "2019").mkdir(parents=True)
    (tmp_path / "kept" / "2019" / "b.jpg").write_bytes(JPEG)
    (person / "2019").symlink_to(tmp_path / "kept" / "2019", target_is_directory=True)
    (person / "again").symlink_to(person, target_is_directory=True)  # a loop
    (person / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (person / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    assert [p.relative_to(person) for p in photos_under(person)] == [Path("2019/b.jpg"), Path("gone.jpg")]
