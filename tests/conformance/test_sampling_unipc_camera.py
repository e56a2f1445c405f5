from tests.conformance.helpers import assert_case_passes


def test_sampling_unipc_camera(conformance_dir):
    assert_case_passes(conformance_dir, "sampling_unipc_camera")
