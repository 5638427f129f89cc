"""The AWS adapters of recsys.ports: DynamoDB, Kinesis, SQS and S3. Only this package
(and ops/) imports boto3 or pynamodb; recsys.wiring builds them from settings."""
