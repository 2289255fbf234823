"""2D average pooling with a square window and a stride equal to the window.

Channels go to partitions (at most 128); a channel's H x W image lies along the free
dimension. Pooling needs no data movement: an ``nl.mgrid`` index pattern views the [C, H, W]
tile as a 5D tile with the pooling window in two of its axes, and a reduction over those
axes averages the windows.

* ``avgpool2d_kernel``: one [C, H, W] image; the 5D view is [C, H/p, p, W/p, p], reduced
  over axes 2 and 4 with ``nl.sum`` and divided by p * p.
* ``avgpool2d_batched_kernel``: a batch [N, C, H, W], one image per program of a 1D launch
  grid (``avgpool2d_batched_kernel[N](x, p)``); its 5D view is [C, H/p, W/p, p, p], so the
  window axes are the last two and ``nl.mean`` reduces them.

This file uses the ``neuronxcc.nki`` spelling of the imports, with the tutorial's tile type
annotations from ``neuronxcc.nki.typing``.
"""

import numpy as np

import neuronxcc.nki as nki
import neuronxcc.nki.language as nl
from neuronxcc.nki.typing import tensor


@nki.jit
def avgpool2d_kernel(in_tensor, pool_size):
    """in_tensor: [C, H, W] with C <= 128 and H, W multiples of pool_size. Returns [C, H/p, W/p]."""
    size_c, size_h, size_w = in_tensor.shape
    assert size_c <= nl.tile_size.pmax
    assert size_h % pool_size == 0 and size_w % pool_size == 0
    out_h = size_h // pool_size
    out_w = size_w // pool_size

    out_tensor = nl.ndarray((size_c, out_h, out_w), dtype=in_tensor.dtype, buffer=nl.shared_hbm)

    # i_oh/i_ow pick the window, i_ph/i_pw the element inside it.
    i_c, i_oh, i_ph, i_ow, i_pw = nl.mgrid[0:size_c, 0:out_h, 0:pool_size, 0:out_w, 0:pool_size]

    in_tile: tensor[size_c, size_h, size_w] = nl.load(in_tensor)

    windows = in_tile[i_c, pool_size * i_oh + i_ph, pool_size * i_ow + i_pw]
    out_tile: tensor[size_c, out_h, out_w] = nl.sum(windows, axis=[2, 4]) / (pool_size * pool_size)

    nl.store(out_tensor, value=out_tile)
    return out_tensor


@nki.jit
def avgpool2d_batched_kernel(in_tensor, pool_size):
    """in_tensor: [N, C, H, W], one image per program of a grid of N. Returns [N, C, H/p, W/p]."""
    batch, size_c, size_h, size_w = in_tensor.shape
    assert size_c <= nl.tile_size.pmax
    assert size_h % pool_size == 0 and size_w % pool_size == 0
    out_h = size_h // pool_size
    out_w = size_w // pool_size

    out_tensor = nl.ndarray((batch, size_c, out_h, out_w), dtype=in_tensor.dtype, buffer=nl.shared_hbm)

    image = nl.program_id(0)
    in_tile = nl.load(in_tensor[image])

    # The window axes last: [C, H/p, W/p, p, p].
    i_c, i_oh, i_ow, i_ph, i_pw = nl.mgrid[0:size_c, 0:out_h, 0:out_w, 0:pool_size, 0:pool_size]
    out_tile = nl.mean(in_tile[i_c, pool_size * i_oh + i_ph, pool_size * i_ow + i_pw], axis=[3, 4])

    nl.store(out_tensor[image], value=out_tile)
    return out_tensor


def avgpool2d_reference(x, pool_size):
    """Average pooling of [..., H, W] in numpy (float64)."""
    *lead, h, w = x.shape
    windows = x.astype(np.float64).reshape(*lead, h // pool_size, pool_size, w // pool_size, pool_size)
    return windows.mean(axis=(-3, -1))


if __name__ == "__main__":
    # The tutorial's case: exact for small integers in float16.
    pool = 2
    c, h, w = 2, 6, 6
    x = np.arange(c * h * w, dtype=np.float16).reshape(c, h, w)
    out = nki.simulate_kernel(avgpool2d_kernel, x, pool)
    exact = np.array_equal(out, avgpool2d_reference(x, pool).astype(np.float16))
    print("avgpool2d_kernel (2, 6, 6) float16, pool 2:", "NKI and NumPy match" if exact else "NKI and NumPy differ")

    rng = np.random.default_rng(0)
    batch_x = rng.standard_normal((3, 64, 16, 24)).astype(np.float32)
    batch_out = nki.simulate_kernel(avgpool2d_batched_kernel[batch_x.shape[0]], batch_x, 4)
    close = np.allclose(batch_out, avgpool2d_reference(batch_x, 4), atol=1e-5, rtol=1e-5)
    print("avgpool2d_batched_kernel[3] (3, 64, 16, 24) float32, pool 4:",
          "NKI and NumPy match" if close else "NKI and NumPy differ")

    assert exact and close
