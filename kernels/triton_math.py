"""Device functions shared by the Triton kernels of both recurrences."""

import triton
import triton.language as tl


@triton.jit
def logsigmoid(x):
    # log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)): finite for large |x| (no overflow), 0 at x = +inf.
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))
