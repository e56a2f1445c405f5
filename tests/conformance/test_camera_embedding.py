from .helpers import assert_case_passes


def test_camera_embedding_case(conformance_dir):
    assert_case_passes(conformance_dir, "camera_embedding")
