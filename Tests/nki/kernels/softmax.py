"""Row softmax: out[r, :] = exp(x[r, :] - max(x[r, :])) / sum(exp(x[r, :] - max(x[r, :]))).

x is [rows, columns]; rows go to partitions 128 at a time (masked loads, computations and
stores for a last partial tile), a whole row lies along the free dimension.

* ``softmax_kernel``: nki.language (nl.max, nl.subtract, nl.exp, nl.sum, division).
* ``softmax_isa_kernel``: nki.isa; the negated row max from one tensor_reduce (``negate=True``)
  is the bias of the Scalar Engine exp, so exp(x - max) is one activation instruction.
"""

import math

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def softmax_kernel(a_tensor):
    out_tensor = nl.ndarray(a_tensor.shape, dtype=a_tensor.dtype, buffer=nl.shared_hbm)
    num_rows, num_columns = a_tensor.shape

    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(num_columns)[None, :]

    for i in nl.affine_range(math.ceil(num_rows / 128)):
        row_mask = (i * 128 + i_p < num_rows)
        a_tile = nl.load(a_tensor[i * 128 + i_p, i_f], mask=row_mask)

        # Subtract the row max for numerical stability.
        max_values = nl.max(a_tile, axis=[1], keepdims=True, mask=row_mask)
        shifted = nl.subtract(a_tile, max_values, mask=row_mask)

        numerator = nl.exp(shifted)
        denominator = nl.sum(numerator, axis=[1], keepdims=True)
        probabilities = numerator / denominator

        nl.store(out_tensor[i * 128 + i_p, i_f], value=probabilities, mask=row_mask)

    return out_tensor


@nki.jit
def softmax_isa_kernel(a_tensor):
    out_tensor = nl.ndarray(a_tensor.shape, dtype=a_tensor.dtype, buffer=nl.shared_hbm)
    num_rows, num_columns = a_tensor.shape
    PMAX = nl.tile_size.pmax

    for i in nl.affine_range(math.ceil(num_rows / PMAX)):
        i_p = i * PMAX + nl.arange(PMAX)[:, None]
        i_f = nl.arange(num_columns)[None, :]
        a_tile = nl.load(a_tensor[i_p, i_f], mask=(i_p < num_rows))

        # -max(row), [128, 1]
        negative_max = nisa.tensor_reduce(op=nl.max, data=a_tile, axis=(1,), negate=True, keepdims=True)

        # exp(1.0 * x + (-max)), computed in float32 on the Scalar Engine
        exponentials = nisa.activation(op=nl.exp, data=a_tile, bias=negative_max, scale=1.0, dtype=nl.float32)

        row_sum = nisa.tensor_reduce(op=nl.add, data=exponentials, axis=(1,), keepdims=True)
        inverse_sum = nl.reciprocal(row_sum)

        probabilities = nisa.tensor_scalar(data=exponentials, op0=nl.multiply, operand0=inverse_sum,
                                           dtype=a_tensor.dtype)

        nl.store(out_tensor[i_p, i_f], value=probabilities, mask=(i_p < num_rows))

    return out_tensor


def softmax_reference(x):
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1000)).astype(np.float32)
    expected = softmax_reference(x)

    matches = []
    for name, kernel in (("softmax_kernel", softmax_kernel), ("softmax_isa_kernel", softmax_isa_kernel)):
        out = nki.simulate_kernel(kernel, x)
        match = np.allclose(out, expected, rtol=1e-5, atol=1e-5)
        print(f"{name} (300, 1000):", "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
