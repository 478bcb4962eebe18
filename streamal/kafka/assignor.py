"""One active learner: every partition goes to one member of the group, the others wait as standbys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata


class SingleActiveAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assigns every partition of every subscribed topic to one member (the first by member id).

    The learner must be a single writer of the model; a second learner in the same group gets nothing
    until the active one leaves or dies, and then takes over everything at the next rebalance.
    """

    name = "streamal-single-active"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        active = min(members)
        topics: set[str] = set()
        for metadata in members.values():
            topics.update(metadata.subscription)
        owned = sorted((t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics)
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, owned if member == active else [], b"")
            for member in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
