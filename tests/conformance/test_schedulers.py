from tests.conformance.helpers import assert_case_passes


def test_schedulers(conformance_dir):
    assert_case_passes(conformance_dir, "schedulers")
