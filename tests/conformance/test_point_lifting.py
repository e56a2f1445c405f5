from pathlib import Path

from tests.conformance.helpers import assert_case_passes


def test_point_lifting(conformance_dir: Path) -> None:
    assert_case_passes(conformance_dir, "point_lifting")
