"""The conformance kit on every backplane: one body, parametrised in conftest.py."""

from __future__ import annotations

import pytest

from liveupdates.testing import BackplaneConformance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(backplane_case: tuple[str, str]) -> str:
    return backplane_case[1]


class TestBackplaneConformance(BackplaneConformance):
    """Every check of `liveupdates.testing`, with the `backplane_factory` of conftest.py."""
