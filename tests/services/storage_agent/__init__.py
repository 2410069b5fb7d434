"""Tests of the storage agent: its pure core, its stores, and the agent as a process."""
