"""The file suffixes of the photos arcmatch takes from a folder. `arcmatch ingest` (embedder/sources.py) and the
client's `enroll_batch` list a folder's photos with the same rule, so one folder means the same photos to both:
a notes.txt beside the photos is left alone, not sent to be refused. (An upload's format is told from its first
bytes, never its name: embedder/formats.py.)"""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pbm", ".pgm", ".ppm", ".tif", ".tiff", ".webp",
                            ".gif"})
