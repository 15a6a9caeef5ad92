"""The same integrity, readiness and FIFO tests against LocalStack, a backend that checks."""
