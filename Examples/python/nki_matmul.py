"""An NKI kernel, written as NKI's tutorials write it, run on a virtual NeuronCore by vtrn.nki.

    python3 Examples/python/nki_matmul.py                  # 512 x 1024 @ 1024 x 1024, float32
    python3 Examples/python/nki_matmul.py 256 512 2048     # M K N
    python3 Examples/python/nki_matmul.py 256 512 2048 trace.json   # and a Perfetto trace

The kernel below is plain NKI (it would run unchanged under AWS's neuronxcc): tiles of 128 x 128
of lhsT and 128 x 512 of rhs are loaded by DMA, multiplied on the tensor engine into a PSUM
accumulator over K, copied to SBUF and stored. vtrn.nki records it once, gives its tiles SBUF and
PSUM places, orders the engines with semaphores, and runs it; the report shows the estimated
device time and how busy each engine was.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn.nki  # noqa: E402

vtrn.nki.install_import_shim()   # `import nki` means vtrn.nki where AWS's package is absent

import nki  # noqa: E402
import nki.isa as nisa  # noqa: E402
import nki.language as nl  # noqa: E402


@nki.jit
def matmul_kernel(lhsT, rhs):
    """result[M, N] = lhsT[K, M].T @ rhs[K, N]; M, K multiples of 128, N of 512."""
    K, M = lhsT.shape
    _, N = rhs.shape
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // 128):
        for n in nl.affine_range(N // 512):
            acc = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // 128):
                lhsT_tile = nl.load(lhsT[k * 128:(k + 1) * 128, m * 128:(m + 1) * 128])
                rhs_tile = nl.load(rhs[k * 128:(k + 1) * 128, n * 512:(n + 1) * 512])
                acc += nisa.nc_matmul(lhsT_tile, rhs_tile)
            nl.store(result[m * 128:(m + 1) * 128, n * 512:(n + 1) * 512], value=nl.copy(acc, dtype=result.dtype))
    return result


def main(arguments):
    m, k, n = (int(value) for value in arguments[:3]) if len(arguments) >= 3 else (512, 1024, 1024)
    trace = arguments[3] if len(arguments) > 3 else None
    rng = np.random.default_rng(0)
    lhsT = rng.standard_normal((k, m), dtype=np.float32)
    rhs = rng.standard_normal((k, n), dtype=np.float32)
    result, report = vtrn.nki.simulate_with_report(matmul_kernel, lhsT, rhs, trace_file=trace)
    expected = lhsT.T.astype(np.float64) @ rhs
    error = np.abs(result - expected).max()
    if not np.allclose(result, expected, atol=1e-3, rtol=1e-4):
        print(f"result differs from numpy: max error {error}")
        return 1
    print(report)
    print(f"{m} x {k} @ {k} x {n}: verified against numpy (max error {error:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
