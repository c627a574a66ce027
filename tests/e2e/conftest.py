import pytest

from tests.e2e.harness import Pipeline


@pytest.fixture
def pipeline(tmp_path, amqp_url, redis_url, scenario):
    pipe = Pipeline(tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario)
    yield pipe
    pipe.close()
