"""Experiment configs (ml_collections): one file per experiment family, `get_config(arg)`.

A config file given by path (`--config configs/demo.py:face`) may import its siblings as
`from configs import fusion`: the CLIs put the folder above `configs/` on the import path.
"""
