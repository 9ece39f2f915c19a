"""fer_jax: dynamic facial emotion recognition on DFEW with JAX and Flax NNX."""

__version__ = "0.1.0"
