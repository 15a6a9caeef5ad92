"""sqssvc: JSON messages to SQS, coalesced into SendMessageBatch calls."""
