"""Element-wise addition, the shape of NKI's "getting started" example.

Two kernels:

* ``tensor_add_kernel``: the whole input is a single tile (first dimension, the partition
  dimension, at most 128), loaded into SBUF, added, stored into a new HBM tensor that the
  kernel returns.
* ``tensor_add_spmd_kernel``: the SPMD version. Every instance of a 2D launch grid adds one
  [128, 512] block, found from ``nl.program_id(0)`` and ``nl.program_id(1)``; launch it as
  ``tensor_add_spmd_kernel[rows // 128, columns // 512](a, b)``.

Run this file to check both against numpy on the CPU simulator.
"""

import numpy as np

import nki
import nki.language as nl


@nki.jit
def tensor_add_kernel(a_input, b_input):
    """c = a + b for inputs that fit one tile: shape (P, F) with P <= 128."""
    assert a_input.shape == b_input.shape
    assert a_input.shape[0] <= nl.tile_size.pmax

    # HBM -> SBUF
    a_tile = nl.load(a_input)
    b_tile = nl.load(b_input)

    c_tile = nl.add(a_tile, b_tile)

    # The output lives in HBM; the kernel returns it to the caller.
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)
    nl.store(c_output, value=c_tile)
    return c_output


# One block of the SPMD version: 128 partitions by 512 elements.
BLOCK_ROWS = 128
BLOCK_COLUMNS = 512


@nki.jit
def tensor_add_spmd_kernel(a_input, b_input):
    """c = a + b, one [128, 512] block per program of a 2D launch grid.

    The inputs have shape (N * 128, M * 512); launch with grid (N, M).
    """
    assert a_input.shape == b_input.shape

    # Every program writes its own block of this one shared output.
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)

    first_row = nl.program_id(0) * BLOCK_ROWS
    first_column = nl.program_id(1) * BLOCK_COLUMNS

    # Index tiles: rows on the partition dimension, columns on the free dimension.
    i_row = first_row + nl.arange(BLOCK_ROWS)[:, None]
    i_column = first_column + nl.arange(BLOCK_COLUMNS)[None, :]

    a_tile = nl.load(a_input[i_row, i_column])
    b_tile = nl.load(b_input[i_row, i_column])

    # Operators on tiles are element-wise, like nl.add.
    c_tile = a_tile + b_tile

    nl.store(c_output[i_row, i_column], value=c_tile)
    return c_output


def tensor_add_spmd(a_input, b_input):
    """Launches tensor_add_spmd_kernel on the grid its inputs need (CPU simulator)."""
    grid_rows = a_input.shape[0] // BLOCK_ROWS
    grid_columns = a_input.shape[1] // BLOCK_COLUMNS
    return nki.simulate_kernel(tensor_add_spmd_kernel[grid_rows, grid_columns], a_input, b_input)


if __name__ == "__main__":
    rng = np.random.default_rng(0)

    small_a = rng.random((4, 3)).astype(np.float16)
    small_b = rng.random((4, 3)).astype(np.float16)
    small_c = nki.simulate_kernel(tensor_add_kernel, small_a, small_b)
    small_match = np.allclose(small_c, small_a + small_b, atol=1e-4, rtol=1e-2)
    print("tensor_add_kernel (4, 3) float16:", "NKI and NumPy match" if small_match else "NKI and NumPy differ")

    a = rng.random((256, 1024)).astype(np.float16)
    b = rng.random((256, 1024)).astype(np.float16)
    c = tensor_add_spmd(a, b)
    spmd_match = np.allclose(c, a + b, atol=1e-4, rtol=1e-2)
    print("tensor_add_spmd_kernel[2, 2] (256, 1024) float16:",
          "NKI and NumPy match" if spmd_match else "NKI and NumPy differ")

    assert small_match and spmd_match
