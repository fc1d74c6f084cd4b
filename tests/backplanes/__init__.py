"""Backplane tests: the conformance kit on every backplane, and Redis faults."""
