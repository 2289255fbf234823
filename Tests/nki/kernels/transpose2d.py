"""Two kinds of 2D transpose.

* ``transpose2d_free_kernel`` (the transpose2d tutorial's problem): every row of the input,
  one per partition, holds a row-major [X, Y] matrix flattened to X * Y elements; the kernel
  rewrites each row as the flattened [Y, X] transpose. Both axes are free axes, so the
  transpose is an SBUF-to-SBUF copy whose source and destination index tiles walk the
  elements in different orders (3D index tiles from ``nl.arange``).
* ``transpose2d_pf_kernel``: a [R, C] matrix becomes [C, R], a transpose between the partition
  and the free dimension. It goes through 128 x 128 tiles on the Tensor Engine
  (``nisa.nc_transpose``, SBUF in, PSUM out); masks cover the edge tiles when R or C is not a
  multiple of 128.

This file uses the ``neuronxcc.nki`` spelling of the imports.
"""

import math

import numpy as np

import neuronxcc.nki as nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl


@nki.jit
def transpose2d_free_kernel(in_tensor, shape2D):
    """in_tensor: [P, X * Y], P <= 128; shape2D = (X, Y). Returns [P, Y * X], every row transposed."""
    out_tensor = nl.ndarray(in_tensor.shape, dtype=in_tensor.dtype, buffer=nl.shared_hbm)
    size_p, size_f = in_tensor.shape
    size_x, size_y = shape2D
    assert size_f == size_x * size_y
    assert size_p <= nl.tile_size.pmax

    in_tile = nl.load(in_tensor)

    # One partition index and two free indices: a 2D access pattern within every partition.
    i_p = nl.arange(size_p)[:, None, None]
    i_x = nl.arange(size_x)[None, :, None]
    i_y = nl.arange(size_y)[None, None, :]

    # Element (x, y) of a row sits at x * Y + y in the input and at y * X + x in the output.
    out_tile = nl.ndarray((size_p, size_y * size_x), dtype=out_tensor.dtype, buffer=nl.sbuf)
    out_tile[i_p, i_y * size_x + i_x] = nl.copy(in_tile[i_p, i_x * size_y + i_y])

    nl.store(out_tensor, value=out_tile)
    return out_tensor


@nki.jit
def transpose2d_pf_kernel(in_tensor):
    """in_tensor: [R, C] (any R, C). Returns its [C, R] transpose."""
    rows, columns = in_tensor.shape
    out_tensor = nl.ndarray((columns, rows), dtype=in_tensor.dtype, buffer=nl.shared_hbm)

    TILE = nl.tile_size.pmax  # 128: the Tensor Engine transposes at most 128 x 128
    i_p = nl.arange(TILE)[:, None]
    i_f = nl.arange(TILE)[None, :]

    for i in nl.affine_range(math.ceil(rows / TILE)):
        for j in nl.affine_range(math.ceil(columns / TILE)):
            # Edge tiles: zero the whole tile, then load only the part inside the input, so
            # that the transpose never reads unwritten SBUF.
            in_tile = nl.zeros((TILE, TILE), dtype=in_tensor.dtype, buffer=nl.sbuf)
            in_tile[i_p, i_f] = nl.load(in_tensor[i * TILE + i_p, j * TILE + i_f],
                                        mask=(i * TILE + i_p < rows) & (j * TILE + i_f < columns))

            # [input rows, input columns] -> [input columns, input rows], in PSUM
            transposed_psum = nisa.nc_transpose(in_tile)
            transposed = nl.copy(transposed_psum, dtype=out_tensor.dtype)

            nl.store(out_tensor[j * TILE + i_p, i * TILE + i_f], value=transposed,
                     mask=(j * TILE + i_p < columns) & (i * TILE + i_f < rows))

    return out_tensor


if __name__ == "__main__":
    P, X, Y = 5, 3, 4
    a = np.arange(P * X * Y, dtype=np.int8).reshape((P, X * Y))
    a_t = nki.simulate_kernel(transpose2d_free_kernel, a, (X, Y))
    expected = np.transpose(a.reshape(P, X, Y), (0, 2, 1)).reshape(P, Y * X)
    free_match = np.array_equal(a_t, expected)
    print(f"transpose2d_free_kernel ({P}, {X}x{Y}) int8:", "NKI and NumPy match" if free_match else "NKI and NumPy differ")

    rng = np.random.default_rng(0)
    b = rng.standard_normal((200, 300)).astype(np.float32)
    b_t = nki.simulate_kernel(transpose2d_pf_kernel, b)
    pf_match = np.array_equal(b_t, b.T)
    print("transpose2d_pf_kernel (200, 300) float32:", "NKI and NumPy match" if pf_match else "NKI and NumPy differ")

    assert free_match and pf_match
