from .helpers import assert_case_passes


def test_retrieval_case(conformance_dir):
    assert_case_passes(conformance_dir, "retrieval")
