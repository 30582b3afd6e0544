"""OpenTelemetry traces in, usage events out: OTLP/HTTP decoding and the GenAI span mapping (extra `otlp`)."""
