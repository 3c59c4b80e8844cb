"""Read a Keras convnet into the conv engine's plan: layer layout, flat float32 parameters.

Supported, in this order: an ``Input`` of shape ``(H, W, C)`` or ``(H, W)`` (then a ``Reshape`` to
``(H, W, 1)`` may follow); any number of ``Conv2D`` (stride 1,
no dilation, one group, ``padding="valid"`` or ``"same"``, relu or linear, channels_last) and
``MaxPooling2D`` (strides equal to the pool size, ``padding="valid"``); ``Flatten``; any number of
``Dense`` layers (relu or linear), the last one softmax. A ``Dropout`` may stand before any of
these layers. Anything else (BatchNormalization, other activations, regularizers, constraints,
frozen or non-float32 layers, branching models) is refused with a ``ModelError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mnistlab.errors import ModelError

# 3x3 convolutions with at least this many input channels run as Winograd F(2x2, 3x3)
WINOGRAD_MIN_CHANNELS = 8
CHUNK = 8  # rows per chunk of a batch (its im2col fits in L2); fixed, so results never depend on the thread count


@dataclass
class Spec:
    """One compute layer: kind, input and output shapes (NHWC per image), kernel, activation."""

    kind: int  # conv_kernels.CONV / POOL / DENSE
    shape_in: tuple[int, int, int]
    shape_out: tuple[int, int, int]
    kernel_hw: tuple[int, int] = (1, 1)  # conv kernel or pool window
    pad: tuple[int, int] = (0, 0)  # top, left
    act: int = 0
    rate: float = 0.0  # dropout on this layer's input
    kernel: object = None  # keras.Variable
    bias: object = None


@dataclass
class ConvPlan:
    """A model read for the conv engine.

    ``params`` (float32 ``(P,)``) holds every kernel and bias, flattened in Keras' own layouts
    (a Conv2D kernel ``(kh, kw, ci, co)`` is the matrix ``(kh*kw*ci, co)`` of the im2col product);
    ``variables``/``offsets`` say where each Keras variable lives in it.
    """

    specs: list[Spec]
    params: np.ndarray
    variables: list
    offsets: list[int]
    input_shape: tuple[int, int, int]
    classes: int
    _layouts: dict = field(default_factory=dict, repr=False)

    @property
    def mask_units(self) -> int:
        return sum(math.prod(s.shape_in) for s in self.specs if s.rate)

    @property
    def keep(self) -> np.ndarray:
        return np.array([1.0 - s.rate for s in self.specs], np.float32)

    def layout(self, chunk: int) -> tuple[np.ndarray, int, int]:
        """``(layout (L, NCOLS) int64, floats per worker, ints per worker)`` for ``chunk`` rows."""
        if chunk not in self._layouts:
            self._layouts[chunk] = _layout(self, chunk)
        return self._layouts[chunk]

    def read_variables(self) -> None:
        """Copy the Keras variables' current values into ``params``."""
        import keras

        for v, off in zip(self.variables, self.offsets, strict=True):
            a = np.asarray(keras.ops.convert_to_numpy(v), np.float32).ravel()
            self.params[off : off + a.size] = a

    def write_variables(self) -> None:
        """Copy ``params`` back into the Keras variables."""
        for v, off in zip(self.variables, self.offsets, strict=True):
            size = math.prod(v.shape)
            v.assign(self.params[off : off + size].reshape(v.shape))


def _layout(plan: ConvPlan, chunk: int) -> tuple[np.ndarray, int, int]:
    from mnistlab.engine import conv_kernels as K

    rows = []
    top = chunk * math.prod(plan.input_shape)  # the input region comes first
    itop = 0
    prev_out, prev_dout, moff = 0, -1, 0
    weight = 0
    dcols = 0
    for j, s in enumerate(plan.specs):
        r = np.full(K.NCOLS, -1, np.int64)
        r[[K.KIND, K.H, K.W, K.CI]] = (s.kind, *s.shape_in)
        r[[K.HO, K.WO, K.CO, K.KH, K.KW, K.PT, K.PL, K.ACT]] = (
            *s.shape_out, *s.kernel_hw, *s.pad, s.act
        )
        size_out = chunk * math.prod(s.shape_out)
        r[K.IN], r[K.DIN] = prev_out, prev_dout
        r[K.OUT], r[K.DOUT] = top, top + size_out
        top += 2 * size_out
        if s.kind == K.POOL:
            r[K.AUX] = itop
            itop += size_out
        elif s.kind == K.CONV and _winograd(s):
            (ho, wo, co), ci = s.shape_out, s.shape_in[2]
            tiles = chunk * ((ho + 1) // 2) * ((wo + 1) // 2)
            u_size, v_size, m_size = K.wino_sizes(ci, co, tiles)
            r[K.AUX], r[K.WINO] = top, top + v_size
            top += v_size + u_size
            dcols = max(dcols, m_size)
        elif s.kind == K.CONV:
            k = s.kernel_hw[0] * s.kernel_hw[1] * s.shape_in[2]
            r[K.AUX] = top
            top += chunk * s.shape_out[0] * s.shape_out[1] * k
            if j:
                dcols = max(dcols, chunk * s.shape_out[0] * s.shape_out[1] * k)
        if s.kernel is not None:
            r[K.WOFF] = weight
            weight += math.prod(s.kernel.shape)
            if s.bias is not None:
                r[K.BOFF] = weight
                weight += s.bias.shape[0]
        if s.rate:
            r[K.MOFF] = moff
            moff += math.prod(s.shape_in)
        # a pool routes gradients only to positive maxima when its input was relu'd: then the
        # producing layer need not mask its gradient again
        nxt = plan.specs[j + 1] if j + 1 < len(plan.specs) else None
        r[K.RELU_DONE] = int(nxt is not None and nxt.kind == K.POOL and s.act == K.RELU)
        # a conv (or dense) straight into a pool leaves its bias and activation to the pool:
        # one pass less over its big output
        r[K.FUSED] = int(nxt is not None and nxt.kind == K.POOL and nxt.rate == 0)
        if s.kind == K.POOL:
            r[K.RELU_DONE] = int(j > 0 and plan.specs[j - 1].act == K.RELU)
            if j > 0 and rows[-1][K.FUSED]:
                r[K.BOFF], r[K.ACT] = rows[-1][K.BOFF], rows[-1][K.ACT]
            else:
                r[K.BOFF], r[K.ACT] = -1, K.LINEAR
        rows.append(r)
        prev_out, prev_dout = r[K.OUT], r[K.DOUT]
    layout = np.stack(rows)
    layout[:, K.DCOLS] = top
    return layout, top + dcols, max(itop, 1)


def _winograd(s: Spec) -> bool:
    """Does this convolution run as Winograd F(2x2, 3x3)? 3x3 kernels with several input
    channels. A grayscale first layer stays on im2col: with one input channel the 16 products
    would be outer products and their outputs 4x the layer's (the threshold 8 is not tuned)."""
    return s.kernel_hw == (3, 3) and s.shape_in[2] >= WINOGRAD_MIN_CHANNELS


def _check_common(layer, kind: str) -> None:
    extras = [
        n
        for n in (
            "kernel_regularizer",
            "bias_regularizer",
            "activity_regularizer",
            "kernel_constraint",
            "bias_constraint",
        )
        if getattr(layer, n, None) is not None
    ]
    if extras or getattr(layer, "lora_enabled", False):
        raise ModelError(
            f"the conv engine does not apply {extras or 'LoRA'}; remove them or use loop='fit'. "
            f"Received {kind} layer {layer.name!r}"
        )
    if not layer.trainable or layer.kernel.dtype != "float32":
        raise ModelError(
            f"the conv engine trains float32, trainable layers; layer {layer.name!r} has "
            f"trainable={layer.trainable}, dtype={layer.kernel.dtype}. Use loop='fit'"
        )


def _activation(layer, allowed: dict[str, int]) -> int:
    import keras

    name = getattr(layer.activation, "__name__", "")
    try:
        known = keras.activations.get(name) is layer.activation
    except ValueError:
        known = False
    if not known or name not in allowed:
        raise ModelError(
            f"layer {layer.name!r} uses activation {name or layer.activation!r}; the conv engine "
            f"supports {sorted(allowed)} here. Use loop='fit' for others"
        )
    return allowed[name]


def _conv(layer, shape, rate):
    from mnistlab.engine import conv_kernels as K

    _check_common(layer, "Conv2D")
    if (
        tuple(layer.strides) != (1, 1)
        or tuple(layer.dilation_rate) != (1, 1)
        or layer.groups != 1
        or layer.data_format != "channels_last"
        or layer.padding not in ("valid", "same")
    ):
        raise ModelError(
            "the conv engine supports Conv2D with strides 1, no dilation, groups=1, "
            "channels_last and padding 'valid' or 'same'; received "
            f"{layer.name!r} with strides={layer.strides}, dilation_rate={layer.dilation_rate}, "
            f"groups={layer.groups}, data_format={layer.data_format}, padding={layer.padding!r}"
        )
    kh, kw = layer.kernel_size
    h, w, _ = shape
    if layer.padding == "same":
        out, pad = (h, w, layer.filters), ((kh - 1) // 2, (kw - 1) // 2)
    else:
        out, pad = (h - kh + 1, w - kw + 1, layer.filters), (0, 0)
    if out[0] < 1 or out[1] < 1:
        raise ModelError(f"layer {layer.name!r} gets a {h}x{w} input, smaller than its kernel")
    act = _activation(layer, {"relu": K.RELU, "linear": K.LINEAR})
    bias = layer.bias if layer.use_bias else None
    return Spec(K.CONV, shape, out, (kh, kw), pad, act, rate, layer.kernel, bias)


def _pool(layer, shape, rate):
    from mnistlab.engine import conv_kernels as K

    ph, pw = layer.pool_size
    if (
        tuple(layer.strides) != (ph, pw)
        or layer.padding != "valid"
        or layer.data_format != "channels_last"
    ):
        raise ModelError(
            "the conv engine supports MaxPooling2D with strides equal to pool_size, padding "
            f"'valid', channels_last; received {layer.name!r} with pool_size={layer.pool_size}, "
            f"strides={layer.strides}, padding={layer.padding!r}, data_format={layer.data_format}"
        )
    h, w, c = shape
    return Spec(K.POOL, shape, (h // ph, w // pw, c), (ph, pw), (0, 0), 0, rate)


def _dense(layer, shape, rate):
    from mnistlab.engine import conv_kernels as K

    _check_common(layer, "Dense")
    if shape[0] != 1 or shape[1] != 1:
        raise ModelError(
            f"Dense layer {layer.name!r} gets a {shape} input; put a Flatten before it "
            "(the conv engine applies Dense layers to flat inputs only)"
        )
    act = _activation(layer, {"relu": K.RELU, "linear": K.LINEAR, "softmax": K.SOFTMAX})
    bias = layer.bias if layer.use_bias else None
    return Spec(K.DENSE, shape, (1, 1, layer.units), (1, 1), (0, 0), act, rate, layer.kernel, bias)


def _chain(model) -> list:
    """The model's layers in order, refusing branching functional models."""
    import keras

    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    prev = model.inputs[0] if len(model.inputs) == 1 else None
    for la in layers:
        if prev is None or la.input is not prev:
            raise ModelError(
                "the conv engine trains a single chain of layers (Sequential, or a functional "
                f"model without branches); layer {la.name!r} does not follow its predecessor"
            )
        prev = la.output
    return layers


def _crop_to_pools(specs: list[Spec]) -> None:
    """A convolution straight into a max pool computes only the outputs the pool's windows
    cover: an 11x11 output pooled by 2 is 5x5 from its first 10x10 (Keras drops the last row and
    column). The rest get no gradient either, so the results are the same and the three matrix
    products of that layer 17 % smaller (keras-io's second conv)."""
    from mnistlab.engine import conv_kernels as K

    for conv, pool in zip(specs, specs[1:], strict=False):
        if conv.kind == K.CONV and pool.kind == K.POOL and not pool.rate:
            (ho, wo, co), (ph, pw) = conv.shape_out, pool.kernel_hw
            cropped = (ho // ph * ph, wo // pw * pw, co)
            conv.shape_out = pool.shape_in = cropped


def _same_pixels(target, cur) -> bool:
    """Is a Reshape to ``target`` a no-op on images of shape ``cur`` (adds or drops the channel
    axis of a one-channel image)?"""
    target = tuple(int(d) for d in target)
    return target == cur or (cur[2] == 1 and target == cur[:2])


def _input_shape(model) -> tuple[int, int, int]:
    """The model's ``(H, W, C)`` input (an ``(H, W)`` input has one channel)."""
    if not model.built or not getattr(model, "inputs", None):
        raise ModelError(
            "the conv engine needs a built model with a known input shape; start it with "
            "keras.Input(shape=(H, W, C))"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or None in shape:
        raise ModelError(f"the conv engine needs an (H, W, C) image input; received {shape}")
    return tuple(int(d) for d in shape)


def read_plan(model) -> ConvPlan:
    """Read a built Keras convnet into a ``ConvPlan`` (its current weights copied in).

    Args:
        model: a built ``keras.Model`` of the layers listed in the module docstring.

    Returns:
        The plan; ``plan.params`` holds the model's current weights.

    Raises:
        ModelError: the model is not built, or has a layer or setting the engine does not support.
    """
    import keras

    from mnistlab.engine import conv_kernels as K

    input_shape = cur = _input_shape(model)
    specs: list[Spec] = []
    rate = 0.0
    readers = {
        keras.layers.Conv2D: _conv,
        keras.layers.MaxPooling2D: _pool,
        keras.layers.Dense: _dense,
    }
    for layer in _chain(model):
        if isinstance(layer, keras.layers.Dropout):
            if rate or layer.noise_shape is not None:
                raise ModelError(
                    "the conv engine supports one Dropout (without noise_shape) before a layer; "
                    f"received {layer.name!r} (noise_shape={layer.noise_shape})"
                )
            rate = float(layer.rate)
            continue
        if isinstance(layer, keras.layers.Flatten):
            cur = (1, 1, math.prod(cur))
            continue
        if isinstance(layer, keras.layers.Reshape) and _same_pixels(layer.target_shape, cur):
            continue  # (H, W) -> (H, W, 1): the flat NHWC rows do not change
        reader = next((r for t, r in readers.items() if type(layer) is t), None)
        if reader is None:
            raise ModelError(
                "the conv engine trains Conv2D / MaxPooling2D / Flatten / Dropout / Dense "
                f"models; use loop='fit' for others. Received layer {layer.name!r} of type "
                f"{type(layer).__name__}"
            )
        spec = reader(layer, cur, rate)
        specs.append(spec)
        cur, rate = spec.shape_out, 0.0
    if not specs or specs[-1].kind != K.DENSE or specs[-1].act != K.SOFTMAX:
        raise ModelError(
            "the conv engine trains with categorical cross-entropy on a softmax output; the last "
            "layer must be Dense(activation='softmax')"
        )
    if rate:
        raise ModelError("a Dropout after the output layer has no effect in fit; remove it")
    _crop_to_pools(specs)
    variables, offsets, top = [], [], 0
    for s in specs:
        for v in (s.kernel, s.bias):
            if v is not None:
                variables.append(v)
                offsets.append(top)
                top += math.prod(v.shape)
    if {id(v) for v in model.trainable_variables} != {id(v) for v in variables}:
        raise ModelError(
            "the model has trainable variables outside its Conv2D/Dense layers; use loop='fit'"
        )
    plan = ConvPlan(specs, np.zeros(top, np.float32), variables, offsets, input_shape,
                    specs[-1].shape_out[2])
    plan.read_variables()
    return plan
