"""The reliability suite shares the service tests' real slice model (one pipeline run per test session)."""

from tests.service.conftest import served_workspace  # noqa: F401  (a fixture, re-exported for this folder)
