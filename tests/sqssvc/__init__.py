"""Tests of sqssvc."""
