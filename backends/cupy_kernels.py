"""Fused CUDA kernels for the CuPy backend (the sources, and their lazy construction).

Each hot operation of a training step becomes one or two launches here instead
of the dozen small element-wise launches of its generic array-API version
(backends/ops): at batch 128 a convnet step is launch-bound, not compute-bound.

- ``ELEMENTWISE``: bodies for ``cupy.ElementwiseKernel`` (one thread per output
  element; ``i`` is its flat index; ``raw`` arguments are indexed by hand).
- ``RAW``: whole ``cupy.RawKernel`` sources, one block per channel (BatchNorm's
  reductions) or one block for the batch (softmax cross-entropy); ``T`` is the
  element type, set by a ``typedef`` in front.

Nothing is compiled, and CuPy is not imported, until a kernel is first asked
for (``elementwise(name)``, ``raw(name, dtype)``).  Every reduction sums in a
fixed order (no atomics), so results are deterministic.
scripts/check_kernels_nvcc.py compiles all of these sources with nvcc (no GPU needed).
"""
from __future__ import annotations

import functools

BLOCK = 256        # threads per block of the RAW kernels (a multiple of 32: they reduce by warps)

# name -> (input params, output params, body).  int32 scalars carry sizes; T is float32 or float64.
ELEMENTWISE = {
    # ReLU with its cap, and the mask its backward reads (1 byte per value).
    "relu": ("T x, T cap", "T y, bool m",
             "const T p = x > (T)0 ? x : (T)0; y = p < cap ? p : cap; m = x > (T)0 && x < cap;"),
    "masked": ("T dy, bool m", "T dx", "dx = m ? dy : (T)0;"),
    # Inverted dropout from uniform draws u: the scaled mask is kept for backward (dy * mask).
    "dropout": ("T x, T u, T rate, T scale", "T y, T mask",
                "mask = u >= rate ? scale : (T)0; y = x * mask;"),
    # Max-pool over one k x k window per output (NCHW); the first maximum in row-major
    # order wins (torch); its index within the H*W plane is kept for backward.
    "max_pool": ("raw T x, int32 H, int32 W, int32 OH, int32 OW, int32 k, int32 s", "T y, int32 arg",
                 """
                 const int ow = i % OW, oh = (i / OW) % OH;
                 const ptrdiff_t base = (i / ((ptrdiff_t)OW * OH)) * H * W;
                 int best_at = oh * s * W + ow * s;
                 T best = x[base + best_at];
                 for (int a = 0; a < k; ++a) {
                     for (int b = 0; b < k; ++b) {
                         const int at = (oh * s + a) * W + ow * s + b;
                         const T v = x[base + at];
                         if (v > best) { best = v; best_at = at; }
                     }
                 }
                 y = best; arg = best_at;
                 """),
    # Its backward as a gather: each input pixel sums the gradients of the windows that
    # chose it (overlapping windows add; no atomics, no zero-fill).
    "max_pool_backward": ("raw T dy, raw int32 arg, int32 H, int32 W, int32 OH, int32 OW, int32 k, int32 s",
                          "T dx",
                          """
                          const int w = i % W, h = (i / W) % H;
                          const ptrdiff_t plane = (i / ((ptrdiff_t)W * H)) * OH * OW;
                          const int at = h * W + w;
                          const int oh0 = h >= k ? (h - k) / s + 1 : 0, oh1 = h / s < OH - 1 ? h / s : OH - 1;
                          const int ow0 = w >= k ? (w - k) / s + 1 : 0, ow1 = w / s < OW - 1 ? w / s : OW - 1;
                          T acc = (T)0;
                          for (int oh = oh0; oh <= oh1; ++oh) {
                              for (int ow = ow0; ow <= ow1; ++ow) {
                                  const ptrdiff_t o = plane + oh * OW + ow;
                                  if (arg[o] == at) acc += dy[o];
                              }
                          }
                          dx = acc;
                          """),
    # BatchNorm's normalise-scale-shift (+ ReLU) with per-channel statistics (NCHW).
    "bn_apply": ("T x, raw T mean, raw T inv_std, raw T weight, raw T bias, int32 HW, int32 C, T cap, int32 relu",
                 "T y",
                 """
                 const int c = (i / HW) % C;
                 T v = (x - mean[c]) * inv_std[c] * weight[c] + bias[c];
                 if (relu) { v = v > (T)0 ? v : (T)0; v = v < cap ? v : cap; }
                 y = v;
                 """),
    "inv_std": ("T var, T eps", "T r", "r = (T)1 / sqrt(var + eps);"),
    # BatchNorm's input gradient, the ReLU's mask read off the output y.
    "bn_backward": ("T dy, T x, T y, raw T mean, raw T inv_std, raw T weight, raw T dweight, raw T dbias, "
                    "int32 HW, int32 C, T count, T cap, int32 relu, int32 training", "T dx",
                    """
                    const int c = (i / HW) % C;
                    const T g = (relu && !(y > (T)0 && y < cap)) ? (T)0 : dy;
                    const T scale = weight[c] * inv_std[c];
                    if (training) {
                        const T xhat = (x - mean[c]) * inv_std[c];
                        dx = scale * (g - dbias[c] / count - xhat * dweight[c] / count);
                    } else {
                        dx = g * scale;
                    }
                    """),
    # im2col for NCHW input: row (n, oh, ow), column (c, kh, kw) so that the weight's
    # (F, C*K*K) reshape is a free view; an optional last column of ones carries the bias.
    "im2col": ("raw T x, int32 C, int32 H, int32 W, int32 K, int32 S, int32 P, int32 OH, int32 OW, int32 width",
               "T out",
               """
               const int col = i % width;
               const ptrdiff_t row = i / width;
               if (col >= C * K * K) {
                   out = (T)1;
               } else {
                   const int ow = row % OW, oh = (row / OW) % OH;
                   const ptrdiff_t n = row / ((ptrdiff_t)OW * OH);
                   const int kw = col % K, kh = (col / K) % K, c = col / (K * K);
                   const int h = oh * S + kh - P, w = ow * S + kw - P;
                   out = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
               }
               """),
    # col2im as a gather: each input pixel sums the column-gradient entries that read it.
    "col2im": ("raw T dcols, int32 C, int32 H, int32 W, int32 K, int32 S, int32 P, int32 OH, int32 OW", "T dx",
               """
               const int w = i % W, h = (i / W) % H;
               const int c = (i / ((ptrdiff_t)W * H)) % C;
               const ptrdiff_t n = i / ((ptrdiff_t)W * H * C);
               const int width = C * K * K;
               T acc = (T)0;
               for (int kh = 0; kh < K; ++kh) {
                   const int hh = h + P - kh;
                   if (hh < 0 || hh % S != 0 || hh / S >= OH) continue;
                   for (int kw = 0; kw < K; ++kw) {
                       const int ww = w + P - kw;
                       if (ww < 0 || ww % S != 0 || ww / S >= OW) continue;
                       acc += dcols[((n * OH + hh / S) * OW + ww / S) * width + (c * K + kh) * K + kw];
                   }
               }
               dx = acc;
               """),
    # The optimisers over one flat buffer (torch.optim's rules), updated in place.
    "sgd": ("T grad, T lr, T wd", "T param", "param -= lr * (grad + wd * param);"),
    "sgd_momentum": ("T grad, T lr, T wd, T momentum, int32 nesterov", "T param, T buf",
                     """
                     const T g = grad + wd * param;
                     buf = momentum * buf + g;
                     param -= lr * (nesterov ? g + momentum * buf : buf);
                     """),
    # decay = 1 - lr * weight_decay (AdamW) or 1; l2 = weight_decay (Adam) or 0;
    # step_size = lr / (1 - beta1^t), root_bc2 = sqrt(1 - beta2^t): host-side numbers.
    "adam": ("T grad, T decay, T l2, T beta1, T beta2, T root_bc2, T step_size, T eps", "T param, T m, T v",
             """
             const T g = grad + l2 * param;
             param *= decay;
             m = beta1 * m + ((T)1 - beta1) * g;
             v = beta2 * v + ((T)1 - beta2) * (g * g);
             param -= step_size * (m / (sqrt(v) / root_bc2 + eps));
             """),
}

_BLOCK_SUM = """
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ double block_sum(double v) {
    __shared__ double partial[33];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) partial[32] = v;
    }
    __syncthreads();
    v = partial[32];
    __syncthreads();   // partial is reused by the next call
    return v;
}
"""

RAW = {
    # Per-channel batch mean and variance (two passes over the channel, in double), the
    # running statistics' update (unbiased variance, as torch) and 1/sqrt(var + eps):
    # one block per channel, one launch for the whole layer.
    "bn_stats": _BLOCK_SUM + """
extern "C" __global__ void bn_stats(const T* x, int N, int C, int HW, double momentum, double eps,
                                    T* running_mean, T* running_var, T* mean_out, T* inv_std_out) {
    const int c = blockIdx.x;
    const long long count = (long long)N * HW;
    double s = 0.0;
    for (long long j = threadIdx.x; j < count; j += blockDim.x)
        s += (double)x[((j / HW) * C + c) * HW + j % HW];
    const double mean = block_sum(s) / count;
    double q = 0.0;
    for (long long j = threadIdx.x; j < count; j += blockDim.x) {
        const double d = (double)x[((j / HW) * C + c) * HW + j % HW] - mean;
        q += d * d;
    }
    const double var = block_sum(q) / count;
    if (threadIdx.x == 0) {
        mean_out[c] = (T)mean;
        inv_std_out[c] = (T)(1.0 / sqrt(var + eps));
        running_mean[c] = (T)((1.0 - momentum) * (double)running_mean[c] + momentum * mean);
        running_var[c] = (T)((1.0 - momentum) * (double)running_var[c]
                             + momentum * var * ((double)count / (double)(count - 1)));
    }
}
""",
    # BatchNorm's parameter gradients: per channel, the sums of g and g * xhat, where g
    # is dy through the fused ReLU's mask (read off the output y).
    "bn_backward_reduce": _BLOCK_SUM + """
extern "C" __global__ void bn_backward_reduce(const T* dy, const T* x, const T* y, const T* mean,
                                              const T* inv_std, int N, int C, int HW, int relu, double cap,
                                              T* dweight, T* dbias) {
    const int c = blockIdx.x;
    const long long count = (long long)N * HW;
    const double m = (double)mean[c], r = (double)inv_std[c];
    double sg = 0.0, sgx = 0.0;
    for (long long j = threadIdx.x; j < count; j += blockDim.x) {
        const long long at = ((j / HW) * C + c) * HW + j % HW;
        const double yv = (double)y[at];
        const double g = (relu && !(yv > 0.0 && yv < cap)) ? 0.0 : (double)dy[at];
        sg += g;
        sgx += g * ((double)x[at] - m) * r;
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    if (threadIdx.x == 0) { dbias[c] = (T)sg; dweight[c] = (T)sgx; }
}
""",
    # Softmax cross-entropy against integer labels: the mean loss, dL/dlogits and the
    # number of rows whose first arg-max is the label, in one block for the batch.
    "sce_labels": _BLOCK_SUM + """
extern "C" __global__ void sce_labels(const T* logits, const long long* labels, int N, int K,
                                      T* loss, T* grad, long long* correct) {
    double total = 0.0, hits = 0.0;
    for (int r = threadIdx.x; r < N; r += blockDim.x) {
        const T* z = logits + (long long)r * K;
        T top = z[0];
        int best = 0;
        for (int j = 1; j < K; ++j) if (z[j] > top) { top = z[j]; best = j; }
        double se = 0.0;
        for (int j = 0; j < K; ++j) se += exp((double)(z[j] - top));
        const double lse = log(se);
        const long long t = labels[r];
        if (t >= 0 && t < K) total += (double)(z[t] - top) - lse;
        hits += (best == t) ? 1.0 : 0.0;
        for (int j = 0; j < K; ++j)
            grad[(long long)r * K + j] = (T)((exp((double)(z[j] - top) - lse) - (j == t ? 1.0 : 0.0)) / N);
    }
    total = block_sum(total);
    hits = block_sum(hits);
    if (threadIdx.x == 0) { *loss = (T)(-total / N); *correct = (long long)hits; }
}
""",
    # The same against target distributions (one-hot or soft): terms where a target is 0
    # count 0; a row is correct when the logits' and the target's first arg-max agree.
    "sce_targets": _BLOCK_SUM + """
extern "C" __global__ void sce_targets(const T* logits, const T* targets, int N, int K,
                                       T* loss, T* grad, long long* correct) {
    double total = 0.0, hits = 0.0;
    for (int r = threadIdx.x; r < N; r += blockDim.x) {
        const T* z = logits + (long long)r * K;
        const T* y = targets + (long long)r * K;
        T top = z[0], ytop = y[0];
        int best = 0, label = 0;
        for (int j = 1; j < K; ++j) {
            if (z[j] > top) { top = z[j]; best = j; }
            if (y[j] > ytop) { ytop = y[j]; label = j; }
        }
        double se = 0.0;
        for (int j = 0; j < K; ++j) se += exp((double)(z[j] - top));
        const double lse = log(se);
        for (int j = 0; j < K; ++j) {
            const double lp = (double)(z[j] - top) - lse;
            if (y[j] > (T)0) total += (double)y[j] * lp;
            grad[(long long)r * K + j] = (T)((exp(lp) - (double)y[j]) / N);
        }
        hits += (best == label) ? 1.0 : 0.0;
    }
    total = block_sum(total);
    hits = block_sum(hits);
    if (threadIdx.x == 0) { *loss = (T)(-total / N); *correct = (long long)hits; }
}
""",
}

# Issue 20's kernels (activations, depthwise/grouped/transposed convolution, resampling, norms).
from .cupy_family_kernels import FAMILY_ELEMENTWISE, FAMILY_RAW  # noqa: E402

ELEMENTWISE.update(FAMILY_ELEMENTWISE)
RAW.update({name: _BLOCK_SUM + source for name, source in FAMILY_RAW.items()})

C_TYPES = {"float32": "float", "float64": "double"}


def raw_source(name: str, dtype_name: str) -> str:
    """The complete CUDA source of RAW kernel ``name`` for element type ``dtype_name``."""
    return f"typedef {C_TYPES[dtype_name]} T;\n" + RAW[name]


@functools.cache
def elementwise(name: str):
    """The ``cupy.ElementwiseKernel`` for ``name``, built on first use (compiled on first call)."""
    import cupy
    in_params, out_params, body = ELEMENTWISE[name]
    return cupy.ElementwiseKernel(in_params, out_params, body, f"dcnn_{name}")


@functools.cache
def raw(name: str, dtype_name: str):
    """The ``cupy.RawKernel`` for ``name`` and element type ``dtype_name``, built on first use."""
    import cupy
    if dtype_name not in C_TYPES:
        raise TypeError(f"the CuPy kernels take float32 or float64 arrays; got {dtype_name}")
    return cupy.RawKernel(raw_source(name, dtype_name), name)
