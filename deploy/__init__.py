"""Infrastructure and delivery: the CloudFormation stack, its policies, the roll-out script, the devstack."""
