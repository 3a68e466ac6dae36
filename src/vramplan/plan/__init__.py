"""What to do about a measurement: sharding over GPUs, engine configs that start the run."""
