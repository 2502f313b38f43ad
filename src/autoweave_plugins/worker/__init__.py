"""The worker process: entry point, hook runtime and inbound HTTP server (sandbox side)."""
