"""TFDS builder for DFEW, reader of the official release layout, and a synthetic generator."""
