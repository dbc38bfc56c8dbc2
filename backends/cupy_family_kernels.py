"""CUDA sources of issue 20's fused kernels (merged into backends/cupy_kernels.py's ELEMENTWISE and
RAW, so that the nvcc check and the CPU simulation cover them): the activations, depthwise,
grouped and transposed convolution (gathers around cuBLAS GEMMs), upsampling, padding, global
max pooling, channel dropout and the per-sample norms (LayerNorm, GroupNorm).

Conventions as there: ``i`` is the output element's flat index, ``raw`` arguments are indexed by
hand, int32 scalars carry sizes, T is float or double; RAW sources get the block-wide sum in
front and run one block per row or per channel.  Nothing here imports CuPy.
"""
from __future__ import annotations

# The activations by code (ops.activation.ACTIVATIONS' order), computed in double.
_ACT_FORWARD = """
const double v = (double)x;
double r;
switch (code) {
    case 0: r = v > 0.0 ? v : v * a; break;
    case 1: r = v > 0.0 ? v : (exp(v < 0.0 ? v : 0.0) - 1.0) * a; break;
    case 2: { const double e = exp(-fabs(v)); r = v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e); } break;
    case 3: r = tanh(v); break;
    case 4: { const double e = exp(-fabs(v)); r = v * (v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e)); } break;
    case 5: r = v * 0.5 * (1.0 + erf(v * 0.7071067811865476)); break;
    case 6: r = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); break;
    case 7: { const double c = v + 3.0 < 0.0 ? 0.0 : (v + 3.0 > 6.0 ? 6.0 : v + 3.0); r = c / 6.0; } break;
    default: { const double c = v + 3.0 < 0.0 ? 0.0 : (v + 3.0 > 6.0 ? 6.0 : v + 3.0); r = v * c / 6.0; }
}
y = (T)r;
"""

_ACT_SLOPE = """
const double v = (double)s;
double d;
switch (code) {
    case 0: d = v > 0.0 ? 1.0 : a; break;
    case 1: d = v > 0.0 ? 1.0 : exp(v < 0.0 ? v : 0.0) * a; break;
    case 2: d = v * (1.0 - v); break;
    case 3: d = 1.0 - v * v; break;
    case 4: { const double e = exp(-fabs(v)); const double g = v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
              d = g * (1.0 + v * (1.0 - g)); } break;
    case 5: d = 0.5 * (1.0 + erf(v * 0.7071067811865476)) + v * exp(-0.5 * v * v) * 0.3989422804014327; break;
    case 6: { const double t = tanh(0.7978845608028654 * (v + 0.044715 * v * v * v));
              d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v); }
            break;
    case 7: d = (v > -3.0 && v < 3.0) ? 1.0 / 6.0 : 0.0; break;
    default: d = v <= -3.0 ? 0.0 : (v < 3.0 ? v / 3.0 + 0.5 : 1.0);
}
dx = (T)((double)dy * d);
"""

FAMILY_ELEMENTWISE = {
    # y = f(x) and dx = dy * f'(s), s being x (or y for sigmoid and tanh): one launch each.
    "activation": ("T x, int32 code, float64 a", "T y", _ACT_FORWARD),
    "activation_backward": ("T dy, T s, int32 code, float64 a", "T dx", _ACT_SLOPE),
    # Depthwise convolution (NCHW): output channel o reads input channel o / (F / C).
    "dw_forward": ("raw T x, raw T w, raw T bias, int32 has_bias, int32 C, int32 H, int32 W, int32 F, int32 OH, "
                   "int32 OW, int32 KH, int32 KW, int32 SH, int32 SW, int32 DH, int32 DW, int32 PT, int32 PL", "T y",
                   """
                   const int ow = i % OW, oh = (i / OW) % OH, o = (i / ((ptrdiff_t)OW * OH)) % F;
                   const ptrdiff_t n = i / ((ptrdiff_t)OW * OH * F);
                   const T* plane = x + (n * C + o / (F / C)) * H * W;
                   T acc = (T)0;
                   for (int a = 0; a < KH; ++a) {
                       const int h = oh * SH + a * DH - PT;
                       if (h < 0 || h >= H) continue;
                       for (int b = 0; b < KW; ++b) {
                           const int ww = ow * SW + b * DW - PL;
                           if (ww < 0 || ww >= W) continue;
                           acc += plane[h * W + ww] * w[(o * KH + a) * KW + b];
                       }
                   }
                   y = has_bias ? acc + bias[o] : acc;
                   """),
    "dw_input_grad": ("raw T dy, raw T w, int32 C, int32 H, int32 W, int32 F, int32 OH, int32 OW, int32 KH, "
                      "int32 KW, int32 SH, int32 SW, int32 DH, int32 DW, int32 PT, int32 PL", "T dx",
                      """
                      const int ww = i % W, h = (i / W) % H, c = (i / ((ptrdiff_t)W * H)) % C;
                      const ptrdiff_t n = i / ((ptrdiff_t)W * H * C);
                      const int m = F / C;
                      T acc = (T)0;
                      for (int k = 0; k < m; ++k) {
                          const int o = c * m + k;
                          const T* g = dy + (n * F + o) * OH * OW;
                          for (int a = 0; a < KH; ++a) {
                              const int t = h + PT - a * DH;
                              if (t < 0 || t % SH != 0 || t / SH >= OH) continue;
                              for (int b = 0; b < KW; ++b) {
                                  const int u = ww + PL - b * DW;
                                  if (u < 0 || u % SW != 0 || u / SW >= OW) continue;
                                  acc += g[(t / SH) * OW + u / SW] * w[(o * KH + a) * KW + b];
                              }
                          }
                      }
                      dx = acc;
                      """),
    # im2col for grouped, dilated, asymmetrically padded convolution: out (G, N*GH*GW, Cg*KH*KW),
    # row (n, gh, gw) of the grid, column (channel in group, kh, kw); src (N, C, H, W).  The
    # transposed convolution's backward pass unfolds dy the same way (its grid is the input's).
    "im2col_g": ("raw T src, int32 N, int32 C, int32 H, int32 W, int32 G, int32 GH, int32 GW, int32 KH, int32 KW, "
                 "int32 SH, int32 SW, int32 DH, int32 DW, int32 PT, int32 PL", "T out",
                 """
                 const int cg = C / G, width = cg * KH * KW;
                 const int col = i % width;
                 const ptrdiff_t m = (ptrdiff_t)N * GH * GW;
                 const ptrdiff_t row = (i / width) % m;
                 const int g = i / (width * m);
                 const int kw = col % KW, kh = (col / KW) % KH, cl = col / (KW * KH);
                 const int gw = row % GW, gh = (row / GW) % GH;
                 const ptrdiff_t n = row / ((ptrdiff_t)GW * GH);
                 const int h = gh * SH + kh * DH - PT, ww = gw * SW + kw * DW - PL;
                 out = (h >= 0 && h < H && ww >= 0 && ww < W) ? src[((n * C + g * cg + cl) * H + h) * W + ww] : (T)0;
                 """),
    # Its adjoint as a gather, plus an optional bias: each (n, c, h, w) of the result (N, C, H, W)
    # sums the column entries that read it.  The grouped convolution's input gradient, and the
    # transposed convolution's forward pass (cropping by PT, PL; output padding past the grid).
    "col2im_g": ("raw T cols, raw T bias, int32 has_bias, int32 N, int32 C, int32 H, int32 W, int32 G, int32 GH, "
                 "int32 GW, int32 KH, int32 KW, int32 SH, int32 SW, int32 DH, int32 DW, int32 PT, int32 PL", "T out",
                 """
                 const int ww = i % W, h = (i / W) % H, c = (i / ((ptrdiff_t)W * H)) % C;
                 const ptrdiff_t n = i / ((ptrdiff_t)W * H * C);
                 const int cg = C / G, g = c / cg, cl = c % cg, width = cg * KH * KW;
                 const ptrdiff_t m = (ptrdiff_t)N * GH * GW;
                 T acc = has_bias ? bias[c] : (T)0;
                 for (int kh = 0; kh < KH; ++kh) {
                     const int t = h + PT - kh * DH;
                     if (t < 0 || t % SH != 0 || t / SH >= GH) continue;
                     for (int kw = 0; kw < KW; ++kw) {
                         const int u = ww + PL - kw * DW;
                         if (u < 0 || u % SW != 0 || u / SW >= GW) continue;
                         const ptrdiff_t row = (n * GH + t / SH) * GW + u / SW;
                         acc += cols[(g * m + row) * width + (cl * KH + kh) * KW + kw];
                     }
                 }
                 out = acc;
                 """),
    # NCHW (N, C, HW) <-> by group, channels last (G, N*HW, C/G) (+ bias on the way back).
    "to_groups": ("raw T src, int32 C, int32 HW, int32 G, int32 M", "T out",
                  """
                  const int cg = C / G, cl = i % cg;
                  const ptrdiff_t r = (i / cg) % M;
                  const int g = i / ((ptrdiff_t)cg * M);
                  out = src[((r / HW) * C + g * cg + cl) * HW + r % HW];
                  """),
    "from_groups": ("raw T src, raw T bias, int32 has_bias, int32 C, int32 HW, int32 G, int32 M", "T out",
                    """
                    const int p = i % HW, c = (i / HW) % C, cg = C / G;
                    const ptrdiff_t n = i / ((ptrdiff_t)HW * C);
                    const T v = src[((c / cg) * (ptrdiff_t)M + n * HW + p) * cg + c % cg];
                    out = has_bias ? v + bias[c] : v;
                    """),
    # Upsampling by integer factors (torch.nn.Upsample, align_corners=False) and its gradients.
    "up_nearest": ("raw T x, int32 H, int32 W, int32 SH, int32 SW", "T y",
                   """
                   const int OW = W * SW, OH = H * SH;
                   const int ow = i % OW, oh = (i / OW) % OH;
                   const ptrdiff_t plane = i / ((ptrdiff_t)OW * OH);
                   y = x[(plane * H + oh / SH) * W + ow / SW];
                   """),
    "up_nearest_backward": ("raw T dy, int32 H, int32 W, int32 SH, int32 SW", "T dx",
                            """
                            const int w = i % W, h = (i / W) % H, OW = W * SW;
                            const ptrdiff_t plane = i / ((ptrdiff_t)W * H);
                            T acc = (T)0;
                            for (int a = 0; a < SH; ++a)
                                for (int b = 0; b < SW; ++b)
                                    acc += dy[(plane * H * SH + h * SH + a) * OW + w * SW + b];
                            dx = acc;
                            """),
    "up_bilinear": ("raw T x, int32 H, int32 W, int32 SH, int32 SW", "T y",
                    """
                    const int OW = W * SW, OH = H * SH;
                    const int ow = i % OW, oh = (i / OW) % OH;
                    const T* p = x + (i / ((ptrdiff_t)OW * OH)) * H * W;
                    double sy = (oh + 0.5) / SH - 0.5, sx = (ow + 0.5) / SW - 0.5;
                    sy = sy < 0.0 ? 0.0 : sy;  sx = sx < 0.0 ? 0.0 : sx;
                    int y0 = (int)sy, x0 = (int)sx;
                    y0 = y0 < H - 1 ? y0 : H - 1;  x0 = x0 < W - 1 ? x0 : W - 1;
                    const int y1 = y0 + 1 < H ? y0 + 1 : H - 1, x1 = x0 + 1 < W ? x0 + 1 : W - 1;
                    const double ly = sy - y0, lx = sx - x0;
                    y = (T)((1.0 - ly) * ((1.0 - lx) * (double)p[y0 * W + x0] + lx * (double)p[y0 * W + x1])
                            + ly * ((1.0 - lx) * (double)p[y1 * W + x0] + lx * (double)p[y1 * W + x1]));
                    """),
    # Its gradient as a gather: each input pixel sums the weights it had in the outputs near it.
    "up_bilinear_backward": ("raw T dy, int32 H, int32 W, int32 SH, int32 SW", "T dx",
                             """
                             const int w = i % W, h = (i / W) % H, OW = W * SW, OH = H * SH;
                             const T* g = dy + (i / ((ptrdiff_t)W * H)) * OH * OW;
                             const int oh0 = (h - 1) * SH > 0 ? (h - 1) * SH : 0;
                             const int oh1 = (h + 2) * SH < OH ? (h + 2) * SH : OH;
                             const int ow0 = (w - 1) * SW > 0 ? (w - 1) * SW : 0;
                             const int ow1 = (w + 2) * SW < OW ? (w + 2) * SW : OW;
                             double acc = 0.0;
                             for (int oh = oh0; oh < oh1; ++oh) {
                                 double sy = (oh + 0.5) / SH - 0.5;  sy = sy < 0.0 ? 0.0 : sy;
                                 int y0 = (int)sy;  y0 = y0 < H - 1 ? y0 : H - 1;
                                 const int y1 = y0 + 1 < H ? y0 + 1 : H - 1;
                                 const double ly = sy - y0;
                                 const double wy = (y0 == h ? 1.0 - ly : 0.0) + (y1 == h ? ly : 0.0);
                                 if (wy == 0.0) continue;
                                 for (int ow = ow0; ow < ow1; ++ow) {
                                     double sx = (ow + 0.5) / SW - 0.5;  sx = sx < 0.0 ? 0.0 : sx;
                                     int x0 = (int)sx;  x0 = x0 < W - 1 ? x0 : W - 1;
                                     const int x1 = x0 + 1 < W ? x0 + 1 : W - 1;
                                     const double lx = sx - x0;
                                     const double wx = (x0 == w ? 1.0 - lx : 0.0) + (x1 == w ? lx : 0.0);
                                     acc += wy * wx * (double)g[oh * OW + ow];
                                 }
                             }
                             dx = (T)acc;
                             """),
    # Padding with a constant (zeros, or -inf before a max-pool), as a gather.
    "pad2d": ("raw T x, int32 H, int32 W, int32 PT, int32 PL, int32 OH, int32 OW, T value", "T y",
              """
              const int ow = i % OW, oh = (i / OW) % OH;
              const ptrdiff_t plane = i / ((ptrdiff_t)OW * OH);
              const int h = oh - PT, w = ow - PL;
              y = (h >= 0 && h < H && w >= 0 && w < W) ? x[(plane * H + h) * W + w] : value;
              """),
    # Global max pooling: each (n, c)'s maximum and its first position (a NaN wins, as in torch).
    "global_max": ("raw T x, int32 HW", "T y, int32 arg",
                   """
                   const T* p = x + i * (ptrdiff_t)HW;
                   T best = p[0];
                   int at = 0;
                   for (int j = 1; j < HW; ++j) {
                       const T v = p[j];
                       if (v > best || (v != v && best == best)) { best = v; at = j; }
                   }
                   y = best; arg = at;
                   """),
    "global_max_backward": ("raw T dy, raw int32 arg, int32 HW", "T dx",
                            """
                            const ptrdiff_t nc = i / HW;
                            dx = (int)(i % HW) == arg[nc] ? dy[nc] : (T)0;
                            """),
    # Channel dropout: one draw per (n, c); the scaled mask broadcasts over the map.
    "channel_mask": ("T u, T rate, T scale", "T mask", "mask = u >= rate ? scale : (T)0;"),
    # The per-sample norms' apply and input gradient, rows of D values (LayerNorm: a sample; GroupNorm:
    # a group of Cg channels of HW pixels); the affine index is j (per element) or the channel.
    "rownorm_apply": ("T x, raw T mean, raw T inv_std, raw T weight, raw T bias, int32 D, int32 G, int32 HW, "
                      "int32 per_element", "T y",
                      """
                      const ptrdiff_t row = i / D;
                      const int j = i % D;
                      const int k = per_element ? j : (int)(row % G) * (D / HW) + j / HW;
                      y = (x - mean[row]) * inv_std[row] * weight[k] + bias[k];
                      """),
    "rownorm_input_grad": ("T dy, T x, raw T mean, raw T inv_std, raw T weight, raw T sums, int32 D, int32 G, "
                           "int32 HW, int32 per_element", "T dx",
                           """
                           const ptrdiff_t row = i / D;
                           const int j = i % D;
                           const int k = per_element ? j : (int)(row % G) * (D / HW) + j / HW;
                           const T xhat = (x - mean[row]) * inv_std[row];
                           dx = inv_std[row] * (dy * weight[k] - sums[2 * row] / D - xhat * sums[2 * row + 1] / D);
                           """),
}

FAMILY_RAW = {
    # Depthwise convolution's weight and bias gradients: one block per output channel o, one
    # block-wide sum per tap over the batch and the output pixels (and one for the bias).
    "dw_weight_grad": """
extern "C" __global__ void dw_weight_grad(const T* x, const T* dy, int N, int C, int H, int W, int F, int OH,
                                          int OW, int KH, int KW, int SH, int SW, int DH, int DW, int PT, int PL,
                                          T* dw, T* db) {
    const int o = blockIdx.x, c = o / (F / C);
    const long long count = (long long)N * OH * OW;
    for (int t = 0; t <= KH * KW; ++t) {
        const int a = t / KW, b = t % KW;
        double s = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            const long long n = j / ((long long)OH * OW);
            const int oh = (int)((j / OW) % OH), ow = (int)(j % OW);
            const double g = (double)dy[(n * F + o) * OH * OW + (long long)oh * OW + ow];
            if (t == KH * KW) { s += g; continue; }
            const int h = oh * SH + a * DH - PT, w = ow * SW + b * DW - PL;
            if (h >= 0 && h < H && w >= 0 && w < W) s += g * (double)x[((n * C + c) * H + h) * W + w];
        }
        s = block_sum(s);
        if (threadIdx.x == 0) { if (t == KH * KW) db[o] = (T)s; else dw[o * KH * KW + t] = (T)s; }
    }
}
""",
    # Per-row mean and 1/sqrt(var + eps) (two passes, in double): one block per row of D values.
    "rownorm_stats": """
extern "C" __global__ void rownorm_stats(const T* x, int D, double eps, T* mean, T* inv_std) {
    const long long row = blockIdx.x;
    const T* p = x + row * D;
    double s = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += (double)p[j];
    const double mu = block_sum(s) / D;
    double q = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) { const double d = (double)p[j] - mu; q += d * d; }
    const double var = block_sum(q) / D;
    if (threadIdx.x == 0) { mean[row] = (T)mu; inv_std[row] = (T)(1.0 / sqrt(var + eps)); }
}
""",
    # Per row: the sums of g = dy * weight and of g * xhat, which the input gradient subtracts.
    "rownorm_row_sums": """
extern "C" __global__ void rownorm_row_sums(const T* dy, const T* x, const T* mean, const T* inv_std,
                                            const T* weight, int D, int G, int HW, int per_element, T* sums) {
    const long long row = blockIdx.x;
    const double mu = (double)mean[row], r = (double)inv_std[row];
    double sg = 0.0, sgx = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const int k = per_element ? j : (int)(row % G) * (D / HW) + j / HW;
        const double g = (double)dy[row * D + j] * (double)weight[k];
        sg += g;
        sgx += g * ((double)x[row * D + j] - mu) * r;
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    if (threadIdx.x == 0) { sums[2 * row] = (T)sg; sums[2 * row + 1] = (T)sgx; }
}
""",
    # The affine parameters' gradients: one block per parameter k, summing dy and dy * xhat over the
    # N samples and (GroupNorm) the HW pixels of channel k.
    "rownorm_param_grads": """
extern "C" __global__ void rownorm_param_grads(const T* dy, const T* x, const T* mean, const T* inv_std, int N,
                                               int G, int D, int HW, int per_element, T* dweight, T* dbias) {
    const int k = blockIdx.x;
    const long long sample = (long long)G * D;
    const int span = per_element ? 1 : HW;
    const long long count = (long long)N * span;
    double sg = 0.0, sgx = 0.0;
    for (long long j = threadIdx.x; j < count; j += blockDim.x) {
        const long long n = j / span;
        const long long at = n * sample + (per_element ? k : (long long)k * HW + j % span);
        const long long row = at / D;
        const double g = (double)dy[at];
        sg += g;
        sgx += g * ((double)x[at] - (double)mean[row]) * (double)inv_std[row];
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    if (threadIdx.x == 0) { dbias[k] = (T)sg; dweight[k] = (T)sgx; }
}
""",
}
