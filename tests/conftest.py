import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WMHLOC_SHARED", REPO.parent / "shared")) / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only). Absent in a user's clone: tests that need it skip."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set WMHLOC_SHARED to the folder holding data/)")
    return SHARED
