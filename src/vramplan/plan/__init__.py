"""What to do about a measurement: targets (GPU catalogue) and the search for what fits."""
