"""Building and loading Hugging Face models: tiny configs, loading a policy and its reference,
fingerprints, and the one KV-cache sampler."""
