import pytest

from tests.e2e.harness import Pipeline

#: Runs a test over each plan source the product reads: Project Server Subscription Edition
#: (the ProjectServer REST API behind Windows sign-in) and Project Online (ProjectData).
EACH_EDITION = pytest.mark.parametrize("pipeline", ["se", "online"], indirect=True)


@pytest.fixture
def pipeline(request, tmp_path, amqp_url, redis_url, scenario):
    edition = getattr(request, "param", "online")
    pipe = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, edition=edition
    )
    yield pipe
    pipe.close()


@pytest.fixture
def se(tmp_path, amqp_url, redis_url, scenario):
    """A pipeline on the sandbox's Project Server Subscription Edition."""
    pipe = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, edition="se"
    )
    yield pipe
    pipe.close()
