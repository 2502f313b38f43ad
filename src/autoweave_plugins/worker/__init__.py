"""The worker process: entry point, assignment payload and hook runtime (sandbox side)."""
