"""The llm-token-exporter service: OTLP/HTTP receiver, trace assembly, durable ledger, CLI."""
