"""Example extensions of fer_jax, each a module that registers itself (load them with FER_JAX_PLUGINS).

    toy_dataset        a 3-class dataset with its own release layout and builder
    constant_modality  a modality that reads nothing from the dataset: a constant vector per frame
    pixel_mean         a generator: the mean colour of a grid of cells of every frame

    FER_JAX_PLUGINS=examples.toy_dataset,examples.pixel_mean python -m tfds_dfew.build --dataset toy3 ...
"""
