"""The committed copy of the reference vectors is the published one."""

import pytest

from jobs_testkit import vectors


@pytest.mark.parametrize("name", ["replicate-openapi.json", "standard-webhooks.json"])
def test_the_copy_matches_the_published_vectors(name: str) -> None:
    copy = (vectors.COPY_DIR / name).read_bytes()
    published = vectors.published_dir()
    assert copy, "the copy is empty"
    if published is not None:  # a clone without shared/ beside it tests against the copy
        assert (published / name).read_bytes() == copy, f"{name}: copy out of date"
