"""A ``ConvPlan`` as plain arrays and back (a convnet run's ``predictor.npz``), checked on the way
in: the kernels index their scratch by the plan's shapes, so a malformed plan is refused here
with a ``ModelError`` rather than run.

The arrays: ``conv_specs`` int64 ``(L, 14)`` (per layer: kind, input H W C, output H W C, kernel
or window H W, top and left padding, activation, kernel size, bias size, -1 for none),
``conv_rates`` float32 ``(L,)`` (dropout on the layer's input; unused in prediction but kept),
``conv_params`` float32 (every kernel and bias, as ``ConvPlan.params``), ``conv_input_shape``
int64 ``(3,)``.
"""

from __future__ import annotations

import math

import numpy as np

from mnistlab.engine.conv_codes import CONV, DENSE, LINEAR, POOL, RELU, SOFTMAX
from mnistlab.engine.conv_plan import ConvPlan, Spec
from mnistlab.errors import ModelError

COLUMNS = 14
MOST = 1 << 24  # no dimension or size of a real MNIST-sized convnet comes near this


def plan_to_arrays(plan: ConvPlan) -> dict[str, np.ndarray]:
    rows = []
    for s in plan.specs:
        k = -1 if s.kernel is None else math.prod(s.kernel.shape)
        b = -1 if s.bias is None else math.prod(s.bias.shape)
        rows.append([s.kind, *s.shape_in, *s.shape_out, *s.kernel_hw, *s.pad, s.act, k, b])
    return {
        "conv_specs": np.array(rows, np.int64),
        "conv_rates": np.array([s.rate for s in plan.specs], np.float32),
        "conv_params": np.asarray(plan.params, np.float32),
        "conv_input_shape": np.array(plan.input_shape, np.int64),
    }


def plan_from_arrays(arrays) -> ConvPlan:
    """The plan ``plan_to_arrays`` wrote (``arrays``: a mapping such as an NpzFile).

    Raises:
        ModelError: a missing array, or a plan whose shapes and sizes do not fit together.
    """
    try:
        specs = np.asarray(arrays["conv_specs"])
        rates = np.asarray(arrays["conv_rates"])
        params = np.asarray(arrays["conv_params"])
        input_shape = tuple(int(d) for d in np.asarray(arrays["conv_input_shape"]))
    except KeyError as e:
        raise ModelError(f"the saved convnet has no {e.args[0]}; the file is incomplete") from None
    if (specs.ndim != 2 or specs.shape[1] != COLUMNS or not len(specs)
            or specs.dtype.kind not in "iu" or rates.shape != (len(specs),)
            or params.ndim != 1 or params.dtype != np.float32 or len(input_shape) != 3):
        raise ModelError("the saved convnet's arrays have the wrong shapes or types")
    out = []
    for j, row in enumerate(specs.tolist()):
        _check(j, row, out[-1].shape_out if out else input_shape, float(rates[j]))
        kind, *dims = row
        k, b = dims[11], dims[12]
        out.append(Spec(kind, tuple(dims[0:3]), tuple(dims[3:6]), tuple(dims[6:8]),
                        tuple(dims[8:10]), dims[10], float(rates[j]),
                        None if k < 0 else np.empty(k, np.float32),
                        None if b < 0 else np.empty(b, np.float32)))
    last = out[-1]
    if last.kind != DENSE or last.act != SOFTMAX:
        raise ModelError("the saved convnet does not end in a softmax Dense layer")
    size = sum(max(r[12], 0) + max(r[13], 0) for r in specs.tolist())
    if size != len(params) or not np.isfinite(params).all():
        raise ModelError(f"the saved convnet's parameters ({len(params)}) do not fit its layers "
                         f"({size}), or are not all finite")
    return ConvPlan(out, params.copy(), [], [], input_shape, last.shape_out[2])


def _check(j: int, row: list[int], shape_in: tuple, rate: float) -> None:
    kind, h, w, ci, ho, wo, co, kh, kw, pt, pl, act, k, b = row
    bad = f"the saved convnet's layer {j} is malformed"
    chained = (h == w == 1 and ci == math.prod(shape_in)) if kind == DENSE \
        else tuple(shape_in) == (h, w, ci)  # a Dense layer takes its input flattened
    if (not chained or min(h, w, ci, ho, wo, co, kh, kw) < 1
            or max(h, w, ci, ho, wo, co, kh, kw, k, b) > MOST or min(pt, pl) < 0
            or act not in (LINEAR, RELU, SOFTMAX) or not 0 <= rate < 1):
        raise ModelError(f"{bad}: shapes {(h, w, ci)} -> {(ho, wo, co)} after {tuple(shape_in)}")
    if kind == CONV:
        valid = pt == pl == 0 and ho <= h - kh + 1 and wo <= w - kw + 1
        same = ho <= h and wo <= w and pt == (kh - 1) // 2 and pl == (kw - 1) // 2
        ok = (valid or same) and k == kh * kw * ci * co and b in (-1, co) and act != SOFTMAX
    elif kind == POOL:
        ok = ho * kh <= h and wo * kw <= w and co == ci and k == b == -1 and act == LINEAR
    elif kind == DENSE:
        ok = ho == wo == 1 and k == ci * co and b in (-1, co) and pt == pl == 0
    else:
        ok = False
    if not ok:
        raise ModelError(f"{bad}: kind {kind}, {(h, w, ci)} -> {(ho, wo, co)}, window "
                         f"{(kh, kw)}, padding {(pt, pl)}, sizes {k}/{b}")
