import pytest

from gitops_agent.sandbox.choose import bwrap_works
from tests.security.harness import World

# The suite is about the real boundary: it runs where bubblewrap works (.ci/run installs it).
pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is missing or cannot create namespaces here")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(
                pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is missing or cannot create namespaces here")
            )
