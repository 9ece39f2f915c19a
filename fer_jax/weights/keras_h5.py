"""Read Keras HDF5 (.h5 / .hdf5) weight files with h5py and copy them into Flax NNX modules.

Keras 2 files and Keras 3 files written in the legacy HDF5 format keep one group per layer
(under `model_weights/` for a whole saved model, at the root for `save_weights`), each with
a `weight_names` attribute. A model states which Keras layer feeds which of its submodules
with a `layer_map: {keras_layer_name: nnx.Module}`; the target's type picks the converter:

  nnx.Conv       <- Conv2D               kernel f32[kh, kw, in, out] (same layout), bias
  nnx.Linear     <- Dense                kernel f32[in, out] (same layout), bias
  nnx.BatchNorm  <- BatchNormalization   gamma->scale, beta->bias, moving_mean->mean,
                                         moving_variance->var
  separable      <- SeparableConv2D      any module with nnx.Conv attributes `depthwise`
                                         (feature_group_count = in) and `pointwise`:
                                         depthwise_kernel f32[kh, kw, C, m] becomes the grouped
                                         kernel f32[kh, kw, 1, C*m]; the bias goes to pointwise.

Loading checks every shape (and, where the file holds the model config, each layer's class,
strides, padding, dilation and BatchNorm epsilon) before it changes anything, so a refused
file leaves the model as it was. It returns a `LoadReport` of loaded / missing / unexpected
layers; `KerasH5Error` names the file and the first mismatch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fer_jax.errors import BadInputError

__all__ = [
    "KerasH5Error",
    "KerasH5Weights",
    "LoadReport",
    "load_keras_h5",
    "read_keras_h5",
]


class KerasH5Error(BadInputError):
    """A Keras .h5 file that cannot be read, or does not fit the model it is loaded into."""


@dataclasses.dataclass(frozen=True)
class KerasH5Weights:
    """The weights of a Keras .h5 file, per layer, in the file's layer order.

    layers:  {layer_name: {short_weight_name: float32 ndarray}}, only layers that hold weights;
             short names drop the scope and the `:0` suffix ("kernel", "moving_mean", ...).
    configs: {layer_name: (class_name, layer config dict)} from the `model_config` attribute;
             empty for weights-only files.
    """

    path: str
    layers: dict[str, dict[str, np.ndarray]]
    configs: dict[str, tuple[str, dict[str, Any]]]
    keras_version: str | None
    backend: str | None


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_keras_h5` did: Keras layer names loaded, missing from the file, or unused."""

    path: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    num_arrays: int

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        lines = [
            f"{self.path}: loaded {len(self.loaded)} layers ({self.num_arrays} arrays), "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}"
        ]
        if self.missing:
            lines.append("  missing (model keeps its own values): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("  unexpected (in the file, unused): " + ", ".join(self.unexpected))
        return "\n".join(lines)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _short_name(weight_name: str) -> str:
    name = weight_name.rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def _layer_configs(model_config: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    if model_config is None:
        return {}
    body = json.loads(_text(model_config)).get("config", {})
    # A Keras 2 Sequential stores a bare list of layers; Functional models a dict with "layers".
    layers = body if isinstance(body, list) else body.get("layers", [])
    out = {}
    for layer in layers:
        layer_config = layer.get("config", {})
        name = layer.get("name", layer_config.get("name"))
        if name is not None:
            out[name] = (layer.get("class_name", ""), layer_config)
    return out


def read_keras_h5(path: str | os.PathLike) -> KerasH5Weights:
    """Reads every layer's weights from a Keras HDF5 file (a saved model or `save_weights`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Keras weights file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise KerasH5Error(f"{path}: not an HDF5 file ({err}); expected a Keras .h5/.hdf5 file.") from err
    with handle as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            if "layers" in f:
                hint = "this looks like a Keras 3 `.weights.h5` file; re-save the model with `model.save('x.h5')`"
            else:
                hint = "no `layer_names` attribute"
            raise KerasH5Error(f"{path}: not a Keras HDF5 weights file ({hint}).")
        layers: dict[str, dict[str, np.ndarray]] = {}
        for layer_name in (_text(n) for n in root.attrs["layer_names"]):
            group = root[layer_name]
            weight_names = [_text(n) for n in group.attrs.get("weight_names", [])]
            if not weight_names:
                continue
            arrays = {}
            for weight_name in weight_names:
                short = _short_name(weight_name)
                if short in arrays:
                    raise KerasH5Error(f"{path}: layer {layer_name!r} has two weights named {short!r}.")
                arrays[short] = np.asarray(group[weight_name], dtype=np.float32)
            layers[layer_name] = arrays
        configs = _layer_configs(f.attrs.get("model_config"))
        keras_version = root.attrs.get("keras_version", f.attrs.get("keras_version"))
        backend = root.attrs.get("backend", f.attrs.get("backend"))
    return KerasH5Weights(
        path=path,
        layers=layers,
        configs=configs,
        keras_version=None if keras_version is None else _text(keras_version),
        backend=None if backend is None else _text(backend),
    )


# -- converters: (keras layer weights, target module) -> [(variable, array)] -----------------

_CONV_CLASSES = ("Conv2D", "Convolution2D")
_SEPARABLE_CLASSES = ("SeparableConv2D", "SeparableConvolution2D")
_DENSE_CLASSES = ("Dense",)
_BATCHNORM_CLASSES = ("BatchNormalization",)


def _pair(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _padding(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _Mismatch(Exception):
    pass


def _check_conv_config(conv: nnx.Conv, config: Mapping[str, Any], what: str) -> None:
    if "strides" in config and _pair(config["strides"]) != _pair(conv.strides or 1):
        raise _Mismatch(f"{what} strides are {tuple(config['strides'])} in the file, "
                        f"{_pair(conv.strides or 1)} in the model")
    if "padding" in config and _padding(config["padding"]) != _padding(conv.padding):
        raise _Mismatch(f"{what} padding is {config['padding']!r} in the file, "
                        f"{conv.padding!r} in the model")
    if "dilation_rate" in config and _pair(config["dilation_rate"]) != _pair(conv.kernel_dilation or 1):
        raise _Mismatch(f"{what} dilation is {tuple(config['dilation_rate'])} in the file, "
                        f"{_pair(conv.kernel_dilation or 1)} in the model")


def _take(arrays: dict[str, np.ndarray], names: tuple[str, ...], optional: tuple[str, ...] = ()):
    unknown = sorted(set(arrays) - set(names) - set(optional))
    if unknown:
        raise _Mismatch(f"unexpected weights {unknown} (expected {list(names + optional)})")
    absent = [n for n in names if n not in arrays]
    if absent:
        raise _Mismatch(f"weights {absent} are absent (found {sorted(arrays)})")


def _assign(variable: nnx.Variable, array: np.ndarray, weight: str) -> tuple[nnx.Variable, np.ndarray]:
    if tuple(variable.shape) != tuple(array.shape):
        raise _Mismatch(f"weight {weight!r} has shape {tuple(array.shape)} in the file, "
                        f"the model expects {tuple(variable.shape)}")
    return variable, array


def _bias(module: nnx.Module, arrays: dict[str, np.ndarray]) -> list:
    has_bias = getattr(module, "bias", None) is not None
    if has_bias != ("bias" in arrays):
        raise _Mismatch(f"the file {'has' if 'bias' in arrays else 'has no'} bias, "
                        f"the model {'has' if has_bias else 'has no'} bias")
    return [_assign(module.bias, arrays["bias"], "bias")] if has_bias else []


def _convert_conv(conv: nnx.Conv, arrays, config) -> list:
    _take(arrays, ("kernel",), ("bias",))
    if config is not None:
        _check_conv_config(conv, config, "conv")
    if conv.feature_group_count != 1:
        raise _Mismatch("a Conv2D layer cannot fill a grouped nnx.Conv")
    return [_assign(conv.kernel, arrays["kernel"], "kernel")] + _bias(conv, arrays)


def _convert_linear(linear: nnx.Linear, arrays, config) -> list:
    _take(arrays, ("kernel",), ("bias",))
    return [_assign(linear.kernel, arrays["kernel"], "kernel")] + _bias(linear, arrays)


def _convert_batchnorm(bn: nnx.BatchNorm, arrays, config) -> list:
    scale, bias = getattr(bn, "scale", None), getattr(bn, "bias", None)
    names = (("gamma",) if scale is not None else ()) + (("beta",) if bias is not None else ())
    _take(arrays, names + ("moving_mean", "moving_variance"))
    if config is not None and "epsilon" in config and not np.isclose(config["epsilon"], bn.epsilon):
        raise _Mismatch(f"epsilon is {config['epsilon']} in the file, {bn.epsilon} in the model")
    pairs = [
        _assign(bn.mean, arrays["moving_mean"], "moving_mean"),
        _assign(bn.var, arrays["moving_variance"], "moving_variance"),
    ]
    if scale is not None:
        pairs.append(_assign(scale, arrays["gamma"], "gamma"))
    if bias is not None:
        pairs.append(_assign(bias, arrays["beta"], "beta"))
    return pairs


def _convert_separable(module: nnx.Module, arrays, config) -> list:
    depthwise, pointwise = module.depthwise, module.pointwise
    _take(arrays, ("depthwise_kernel", "pointwise_kernel"), ("bias",))
    if config is not None:
        _check_conv_config(depthwise, config, "depthwise")
    dw = arrays["depthwise_kernel"]
    if dw.ndim != 4:
        raise _Mismatch(f"weight 'depthwise_kernel' has shape {dw.shape}, expected [kh, kw, C, m]")
    kh, kw, channels, multiplier = dw.shape
    if depthwise.feature_group_count != channels:
        raise _Mismatch(f"weight 'depthwise_kernel' has {channels} input channels in the file, "
                        f"the model's depthwise conv has {depthwise.feature_group_count} groups")
    # Keras output channel c*m + j (channel c, multiplier j) is grouped-conv output c*m + j.
    grouped = dw.reshape(kh, kw, 1, channels * multiplier)
    return ([_assign(depthwise.kernel, grouped, "depthwise_kernel")]
            + [_assign(pointwise.kernel, arrays["pointwise_kernel"], "pointwise_kernel")]
            + _bias(pointwise, arrays))


def _converter(module: nnx.Module):
    if isinstance(module, nnx.Conv):
        return _convert_conv, _CONV_CLASSES
    if isinstance(module, nnx.Linear):
        return _convert_linear, _DENSE_CLASSES
    if isinstance(module, nnx.BatchNorm):
        return _convert_batchnorm, _BATCHNORM_CLASSES
    if isinstance(getattr(module, "depthwise", None), nnx.Conv) and isinstance(
        getattr(module, "pointwise", None), nnx.Conv
    ):
        return _convert_separable, _SEPARABLE_CLASSES
    raise TypeError(f"no Keras converter for {type(module).__name__}")


def load_keras_h5(
    layer_map: Mapping[str, nnx.Module],
    path: str | os.PathLike | KerasH5Weights,
    *,
    strict: bool = True,
) -> LoadReport:
    """Copies a Keras .h5 file's weights into the modules of `layer_map`, in place.

    layer_map: {keras_layer_name: target module}, in model order.
    strict:    refuse a file that lacks a mapped layer or holds weighted layers the map does
               not name. With strict=False such layers are only reported. Shape or
               configuration mismatches are always refused.
    Raises KerasH5Error naming the file and the first mismatch; nothing is changed then.
    The modules may be abstract (built under `nnx.eval_shape`): loaded variables are replaced
    by concrete arrays, so a model need not be randomly initialised first.
    """
    weights = path if isinstance(path, KerasH5Weights) else read_keras_h5(path)
    where = weights.path

    def refuse(message: str) -> KerasH5Error:
        return KerasH5Error(
            f"{where}: {message}. This file does not hold the weights of this architecture; "
            "pass a Keras .h5 file saved from the same model."
        )

    pairs: list[tuple[nnx.Variable, np.ndarray]] = []
    loaded, missing = [], []
    for layer_name, module in layer_map.items():
        convert, classes = _converter(module)
        if layer_name not in weights.layers:
            if strict:
                known = ", ".join(list(weights.layers)[:8])
                raise refuse(f"the file has no weighted layer {layer_name!r} "
                             f"(its first layers: {known or 'none'})")
            missing.append(layer_name)
            continue
        class_name, config = weights.configs.get(layer_name, (None, None))
        if class_name is not None and class_name not in classes:
            raise refuse(f"layer {layer_name!r} is a {class_name} in the file, "
                         f"the model expects a {classes[0]}")
        try:
            pairs.extend(convert(module, weights.layers[layer_name], config))
        except _Mismatch as err:
            raise refuse(f"layer {layer_name!r}: {err}") from None
        loaded.append(layer_name)
    unexpected = [name for name in weights.layers if name not in layer_map]
    if strict and unexpected:
        raise refuse(f"the file holds weighted layers the model does not use: {', '.join(unexpected)}")
    for variable, array in pairs:
        variable.set_value(jnp.asarray(array, dtype=variable.dtype))
    return LoadReport(
        path=where,
        loaded=tuple(loaded),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        num_arrays=len(pairs),
    )
