from tests.conformance.helpers import assert_case_passes


def test_transformer_memory_update_ref(conformance_dir):
    assert_case_passes(conformance_dir, "transformer_memory_update_ref")
