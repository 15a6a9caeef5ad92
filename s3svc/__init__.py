"""s3svc: streams multipart/form-data uploads into S3 with bounded memory."""
