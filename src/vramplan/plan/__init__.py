"""What to do about a measurement: targets (GPU catalogue), the search for what fits, sharding over GPUs,
engine configs that start the run."""
