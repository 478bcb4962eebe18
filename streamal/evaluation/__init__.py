"""Offline evaluation: the same engine as the service, fed from a labelled stream without Kafka."""
