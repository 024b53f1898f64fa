"""The chart's workloads from the real images (`podman kube play`, see pods.py) behind
nginx: the end-to-end journey, as item 1 measures it, labelled "images" in the report.
The graceful-shutdown test runs against them too (test_shutdown.py, [images])."""

from collections.abc import Iterator

import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack
from tests.e2e.journey import the_whole_journey
from tests.e2e.pods import PodReplica, run_pods
from tests.e2e.report import Reliability
from tests.images.engine import ServiceImages

pytestmark = [pytest.mark.e2e, pytest.mark.images]


@pytest.fixture(scope="module")
def pods(cluster: PrivateCluster, service_images: ServiceImages) -> Iterator[Stack[PodReplica]]:
    with run_pods(cluster, service_images) as stack:
        yield stack


def test_the_whole_journey_through_the_gateway_to_the_charts_pods(
    pods: Stack[PodReplica], reliability: Reliability
) -> None:
    the_whole_journey(pods, reliability)


def test_the_pods_run_as_their_specs_say(pods: Stack[PodReplica]) -> None:
    for replica in pods.processes():
        inspected = replica.process.container.inspect()
        host = inspected["HostConfig"]
        assert inspected["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "host"
        assert "no-new-privileges" in host["SecurityOpt"]
        assert inspected["EffectiveCaps"] in (None, [])
        assert replica.process.poll() is None
