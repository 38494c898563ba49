"""``modelserve tune``: the fastest web tier and batching settings within memory and latency limits."""
