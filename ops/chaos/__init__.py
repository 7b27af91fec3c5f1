"""Fault injection for the chaos tests: the three-node Kafka cluster and Toxiproxy."""
