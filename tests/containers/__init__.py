"""Containers: both images built from their Dockerfiles and run, and docker compose, on a Docker engine."""
