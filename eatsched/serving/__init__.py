"""The serving system: host (HTTP API, durable queue, scheduling loop), workers and their backends."""
