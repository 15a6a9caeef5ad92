"""Runtime shared by both services: config, logging, AWS clients, HTTP shell, errors."""
