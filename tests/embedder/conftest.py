"""The face detection and alignment tests use `shared_models`, `yunet` and `lfw_image` from tests/conftest.py."""
