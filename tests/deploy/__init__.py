"""Delivery: images without Docker, the CloudFormation policies proven against moto, workflows."""
