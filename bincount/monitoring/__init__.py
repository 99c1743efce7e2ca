"""Watch a deployed counter: a baseline from the validation split (written at training time into
the model dir), captured traffic (local or S3, SageMaker's DataCaptureConfig layout) and a drift
report comparing the two (``scripts/monitor.py``)."""
