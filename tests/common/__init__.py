"""Tests of the shared runtime in common/."""
