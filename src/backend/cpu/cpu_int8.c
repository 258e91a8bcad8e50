/* Precision int8 on the CPU: weights quantised (symmetric, one scale per output channel) into the
 * packed tiles of the int8 kernels (cpu_kern_int8_impl.h), once, into a buffer prepared at load by the
 * backend's weight_prepare (linear and pointwise conv weights: sd_i8w_bytes / sd_i8w_view /
 * sd_i8w_quantise; k x k conv weights: the direct convolution's, sd_i8_dconv_weight); a weight not
 * prepared (row-major) takes the bf16 path. Also the per-pixel activation maxima the GEMM convolutions'
 * column scales come from and the direct convolution's driver. Plain C. */
#include "backend/cpu/cpu_int8.h"
#include "backend/cpu/cpu_backend_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float wval(const sd_tensor *w, int64_t i)
{
    if (w->dtype == SD_F16)
        return sd_f16_to_f32(((const uint16_t *)w->data)[i]);
    if (w->dtype == SD_BF16)
        return sd_bf16_to_f32(((const uint16_t *)w->data)[i]);
    return ((const float *)w->data)[i];
}

/* The weight quantisation rule (every int8 weight): one scale per output channel, max |w| / 127 over its n
 * values from i0 (0 for a channel of zeros or a non-finite maximum; *inv = 127 / max, or 0), and each value
 * rounded to nearest even from w * inv, saturated to [-127, 127]. */
static float wscale(const sd_tensor *w, int64_t i0, int64_t n, float *inv)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(wval(w, i0 + i)));
    *inv = amax > 0.0f && isfinite(amax) ? 127.0f / amax : 0.0f;
    return *inv > 0.0f ? amax / 127.0f : 0.0f;
}

static int8_t wq(const sd_tensor *w, int64_t i, float inv)
{
    float r = nearbyintf(wval(w, i) * inv);
    return (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : r);
}

size_t sd_i8w_bytes(int64_t O, int64_t K)
{
    size_t Op = (size_t)((O + 31) / 32 * 32), Kp = (size_t)((K + 63) / 64 * 64);
    return Op * Kp + 2 * Op * 4;
}

void sd_i8w_view(sd_i8w *v, const void *buf, int64_t O, int64_t K, bool as_b)
{
    int64_t Op = (O + 31) / 32 * 32, Kp = (K + 63) / 64 * 64;
    uint8_t *p = (uint8_t *)(uintptr_t)buf; /* the kernels only read it */
    *v = (sd_i8w){.O = O, .K = K, .Kp = Kp, .as_b = as_b, .q = (int8_t *)p, .scale = (float *)(p + Op * Kp),
                  .colsum = (int32_t *)(p + Op * Kp + Op * 4)};
}

void sd_i8w_quantise(const sd_tensor *w, bool shift, const sd_i8w *out, int nthreads)
{
    int64_t O = out->O, K = out->K, Op = (O + 31) / 32 * 32, Kp = out->Kp, nkb = Kp / 64;
    bool as_b = out->as_b;
    memset(out->q, 0, (size_t)(Op * Kp));
    memset(out->scale, 0, (size_t)Op * sizeof(float));
    memset(out->colsum, 0, (size_t)Op * sizeof(int32_t));
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t o = 0; o < O; o++) {
        float inv;
        out->scale[o] = wscale(w, o * K, K, &inv);
        int32_t sum = 0;
        int8_t *tiles = out->q + (o / 16) * nkb * 1024;
        for (int64_t k = 0; k < K; k++) {
            int8_t v = wq(w, o * K + k, inv);
            sum += v;
            int8_t *tile = tiles + (k / 64) * 1024;
            if (as_b) /* B tile: depth quad rows, the 4 bytes of column o%16 together */
                tile[(k % 64) / 4 * 64 + (o % 16) * 4 + k % 4] = v;
            else /* A tile: row o%16, 64 depth bytes (VNNI: as u8, q + 128) */
                tile[(o % 16) * 64 + k % 64] = (int8_t)(shift ? (uint8_t)(v + 128) : (uint8_t)v);
        }
        out->colsum[o] = 128 * sum;
    }
}

void sd_i8_pixmax(float *dst, const float *x, int64_t C, int64_t HW, int nthreads)
{
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p0 = 0; p0 < HW; p0 += 256) {
        int64_t p1 = p0 + 256 < HW ? p0 + 256 : HW;
        for (int64_t p = p0; p < p1; p++)
            dst[p] = 0.0f;
        for (int64_t c = 0; c < C; c++)
            for (int64_t p = p0; p < p1; p++)
                dst[p] = fmaxf(dst[p], fabsf(x[c * HW + p]));
    }
}

/* ------------------------------------------------------------------ the direct convolution (kxk) */

void sd_i8_dconv_weight(void *dst, const sd_tensor *w, int nthreads)
{
    int64_t O = w->ne[0], C = w->ne[1], taps = w->ne[2] * w->ne[3], K = C * taps;
    sd_dconv d;
    sd_dconv_geom_blk(&d, SD_I8_CBLK, C, 1, 1, O, w->ne[2], w->ne[3], 1, 1, 1, 0, 0);
    int8_t *q = dst;
    float *ws = (float *)(q + d.w_elems);
    int32_t *wsum = (int32_t *)(ws + (O + 31) / 32 * 32);
    memset(dst, 0, sd_i8_dconv_wbytes(&d));
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t o = 0; o < O; o++) {
        float inv;
        ws[o] = wscale(w, o * K, K, &inv);
        int32_t sum = 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < taps; t++) {
                int8_t v = wq(w, o * K + c * taps + t, inv);
                sum += v;
                q[sd_i8_dconv_widx(&d, o, c, t)] = v;
            }
        wsum[o] = sum;
    }
}

/* the geometry of a conv on these tensors at stride s, and its scratch: the image copy, the bias and the
 * kernel's workspace for nt threads */
static size_t i8_dconv_geom(const sd_cpu_int8_kern *ik, sd_dconv *d, const sd_tensor *x, const sd_tensor *w,
                            const sd_tensor *y, int s, const int pads[2], int nt)
{
    sd_dconv_geom_blk(d, SD_I8_CBLK, x->ne[1], x->ne[2], x->ne[3], w->ne[0], w->ne[2], w->ne[3], y->ne[2], y->ne[3],
                      s, pads[0], pads[1]);
    return (d->x_elems + 63) / 64 * 64 + ((size_t)d->O * sizeof(float) + 63) / 64 * 64 + ik->dconv_ws(d, nt);
}

size_t sd_cpu_conv_i8_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    const sd_cpu_int8_kern *ik = ((const cpu_impl *)be->impl)->ik;
    /* the stride is not known here: 2 only when the output is smaller than the input */
    int smax = y->ne[2] < x->ne[2] || y->ne[3] < x->ne[3] ? 2 : 1;
    static const int nopad[2] = {0, 0};
    size_t n = 0;
    for (int s = 1; ik && s <= smax; s++) {
        sd_dconv d;
        size_t b = i8_dconv_geom(ik, &d, x, w, y, s, nopad, nthreads(be));
        n = b > n ? b : n;
    }
    return n;
}

bool sd_cpu_conv_i8(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                    int stride, const int pads[4], const sd_tensor *res, int act, void *scratch)
{
    const sd_cpu_int8_kern *ik = ((const cpu_impl *)be->impl)->ik;
    sd_dconv d;
    int nt = nthreads(be);
    if (!ik || !scratch || (stride != 1 && stride != 2) || x->layout || y->layout || (res && res->layout) ||
        i8_dconv_geom(ik, &d, x, w, y, stride, pads, nt) > sd_cpu_conv_i8_scratch(be, x, w, y))
        return false;
    uint8_t *xp = scratch;
    float *bias = (float *)(xp + (d.x_elems + 63) / 64 * 64);
    void *ws = (uint8_t *)bias + ((size_t)d.O * sizeof(float) + 63) / 64 * 64;
    for (int64_t o = 0; b && o < d.O; o++)
        bias[o] = ldp(b, o);
    int64_t chw = d.C * d.H * d.W, ohw = d.O * d.HO * d.WO;
    for (int64_t n = 0; n < x->ne[0]; n++) { /* one scale and zero point per image: a row's result is its own */
        int32_t zp;
        float xs = ik->dconv_image(xp, CF(x) + n * chw, &d, &zp, nt);
        sd_dconv_out out = {.y = F(y) + n * ohw, .res = res ? CF(res) + n * ohw : NULL, .bias = b ? bias : NULL,
                            .relu = act == SD_UNARY_RELU};
        ik->dconv(&out, xp, xs, zp, w->data, &d, ws, nt);
    }
    if (act >= 0 && act != SD_UNARY_RELU) /* other activations: as sd_unary_inplace */
        sd_cpu_unary(be, y, y, (sd_unary_op)act);
    return true;
}
