"""LayerNorm over the last dimension: out = (x - mean) / sqrt(var + epsilon) * gamma + beta.

x is [rows, hidden]; gamma and beta are [hidden]. Rows go to partitions 128 at a time, with
masked loads and stores for a last partial tile.

* ``layernorm_kernel_v1``: nki.language only; the variance as mean(x^2) - mean(x)^2.
* ``layernorm_kernel_v2``: mean and variance with nki.isa instructions (two passes: the mean,
  then the mean of the squared deviations), and the shift-and-scale as a single
  ``nisa.tensor_scalar`` with two operators: (x - mean) * rstd.
"""

import math

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def layernorm_kernel_v1(input_tensor, epsilon, gamma_vector, beta_vector):
    output_tensor = nl.ndarray(input_tensor.shape, dtype=input_tensor.dtype, buffer=nl.shared_hbm)

    num_rows, hidden = input_tensor.shape
    assert gamma_vector.shape[0] == hidden and beta_vector.shape[0] == hidden
    PMAX = nl.tile_size.pmax

    i_p = nl.arange(PMAX)[:, None]
    i_f = nl.arange(hidden)[None, :]
    i_param = nl.arange(1)[:, None]

    # gamma and beta: loaded once as [1, hidden], broadcast over the partitions.
    gamma = nl.load(gamma_vector.reshape((1, hidden))[i_param, i_f]).broadcast_to((PMAX, hidden))
    beta = nl.load(beta_vector.reshape((1, hidden))[i_param, i_f]).broadcast_to((PMAX, hidden))

    for i in nl.affine_range(math.ceil(num_rows / PMAX)):
        row_mask = (i * PMAX + i_p < num_rows)
        x = nl.load(input_tensor[i * PMAX + i_p, i_f], mask=row_mask)

        mean = nl.mean(x, axis=[1], keepdims=True)
        var = nl.mean(nl.square(x), axis=[1], keepdims=True) - mean * mean

        normalized = (x - mean) * nl.rsqrt(var + epsilon)
        y = normalized * gamma + beta

        nl.store(output_tensor[i * PMAX + i_p, i_f], value=y, mask=row_mask)

    return output_tensor


@nki.jit
def layernorm_kernel_v2(input_tensor, epsilon, gamma_vector, beta_vector):
    output_tensor = nl.ndarray(input_tensor.shape, dtype=input_tensor.dtype, buffer=nl.shared_hbm)

    num_rows, hidden = input_tensor.shape
    assert gamma_vector.shape[0] == hidden and beta_vector.shape[0] == hidden
    PMAX = nl.tile_size.pmax

    i_p = nl.arange(PMAX)[:, None]
    i_f = nl.arange(hidden)[None, :]
    i_param = nl.arange(1)[:, None]

    gamma = nl.load(gamma_vector.reshape((1, hidden))[i_param, i_f]).broadcast_to((PMAX, hidden))
    beta = nl.load(beta_vector.reshape((1, hidden))[i_param, i_f]).broadcast_to((PMAX, hidden))

    # epsilon as a per-partition [128, 1] bias operand of the Scalar Engine.
    epsilon_column = nl.full((PMAX, 1), epsilon, dtype=nl.float32)

    for i in nl.affine_range(math.ceil(num_rows / PMAX)):
        row_mask = (i * PMAX + i_p < num_rows)
        x = nl.load(input_tensor[i * PMAX + i_p, i_f], mask=row_mask)

        # mean = sum(x) / hidden, [128, 1]
        row_sum = nisa.tensor_reduce(op=nl.add, data=x, axis=(1,), keepdims=True, dtype=nl.float32)
        mean = nisa.tensor_scalar(data=row_sum, op0=nl.multiply, operand0=1.0 / hidden)

        # var = sum((x - mean)^2) / hidden
        centered = nisa.tensor_scalar(data=x, op0=nl.subtract, operand0=mean, dtype=nl.float32)
        squared = nisa.activation(op=nl.square, data=centered)
        square_sum = nisa.tensor_reduce(op=nl.add, data=squared, axis=(1,), keepdims=True)

        # rstd = 1 / sqrt(square_sum * (1 / hidden) + epsilon): scale and bias of one activation.
        rstd = nisa.activation(op=nl.rsqrt, data=square_sum, scale=1.0 / hidden, bias=epsilon_column)

        # (x - mean) * rstd in one Vector Engine instruction, then gamma and beta.
        normalized = nisa.tensor_scalar(data=x, op0=nl.subtract, operand0=mean,
                                        op1=nl.multiply, operand1=rstd)
        scaled = nisa.tensor_tensor(data1=normalized, data2=gamma, op=nl.multiply)
        y = nisa.tensor_tensor(data1=scaled, data2=beta, op=nl.add, dtype=output_tensor.dtype)

        nl.store(output_tensor[i * PMAX + i_p, i_f], value=y, mask=row_mask)

    return output_tensor


def layernorm_reference(x, epsilon, gamma, beta):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    var = x64.var(axis=1, keepdims=True)
    return (x64 - mean) / np.sqrt(var + epsilon) * gamma.astype(np.float64) + beta.astype(np.float64)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    num_rows, hidden = 300, 1000
    x = rng.random((num_rows, hidden)).astype(np.float32)
    gamma = rng.random(hidden).astype(np.float32)
    beta = rng.random(hidden).astype(np.float32)
    epsilon = 1e-5
    expected = layernorm_reference(x, epsilon, gamma, beta)

    matches = []
    for name, kernel in (("layernorm_kernel_v1", layernorm_kernel_v1), ("layernorm_kernel_v2", layernorm_kernel_v2)):
        out = nki.simulate_kernel(kernel, x, epsilon, gamma, beta)
        match = np.allclose(out, expected, atol=1e-3, rtol=1e-2)
        print(f"{name} ({num_rows}, {hidden}):", "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
