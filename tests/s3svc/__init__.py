"""Tests of s3svc."""
