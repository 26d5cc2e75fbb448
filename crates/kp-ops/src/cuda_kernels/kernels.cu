// kp's own CUDA kernels (feature `cuda`), compiled to PTX by kp-ops' build script.
// Each is a grid-stride loop over `n` contiguous f32 elements.

#include <stddef.h>

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (size_t)blockDim.x * gridDim.x)

// y = max(x, 0); NaN stays NaN (as candle's and PyTorch's relu).
extern "C" __global__ void kp_relu_f32(const float *x, float *y, size_t n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

// dx = dy * [y > 0]: the gradient through a ReLU with output y (PyTorch's threshold_backward).
extern "C" __global__ void kp_relu_backward_f32(const float *dy, const float *y, float *dx,
                                                size_t n) {
    GRID_STRIDE(i, n) { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
}

// One Adam step in place, as torch.optim.Adam (AdamW's decoupled weight decay as `decay`):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = decay p - step_size m / (sqrt(v) / sqrt(bc2) + eps),  step_size = lr / bc1
extern "C" __global__ void kp_adam_f32(float *p, float *m, float *v, const float *g, size_t n,
                                       float beta1, float beta2, float step_size,
                                       float inv_sqrt_bc2, float eps, float decay) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
        p[i] = decay * p[i] - step_size * (mi / denom);
    }
}
