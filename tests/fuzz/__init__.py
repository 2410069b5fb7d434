"""Fuzzing the parsers of outside bytes with atheris; README.md says how to run a campaign."""
