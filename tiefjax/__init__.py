"""tiefjax: visual product search on JAX/Flax."""
