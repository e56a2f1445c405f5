from tests.conformance.helpers import assert_case_passes


def test_transformer_camera(conformance_dir):
    assert_case_passes(conformance_dir, "transformer_camera")
