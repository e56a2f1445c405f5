from .helpers import assert_case_passes


def test_misc_case(conformance_dir):
    assert_case_passes(conformance_dir, "misc")
