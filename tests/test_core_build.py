"""The extension that `make test` built is the release build the benchmarks expect."""

from oxipost import _core


def test_extension_is_release_build():
    assert _core.build_profile() == "release"


def test_corrupt_error_is_an_exception():
    assert issubclass(_core.CorruptError, Exception)
