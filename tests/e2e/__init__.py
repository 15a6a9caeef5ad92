"""End-to-end tests: services as processes, the devstack, curl."""
