"""Capacity planning: turn measured throughput into instances and dollars for a target traffic."""
