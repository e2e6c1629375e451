"""Studies: what each stage needs, built once and reused across methods."""
