/* The direct bf16 convolution (sd_dconv, cpu_kern.h), part of cpu_kern_bf16_impl.h (included there, inside
 * its target flags). The image once into its channels-last bf16 copy: from NCHW F32 (dconv_image), or from
 * an SD_LAYOUT_BF16_IMAGE activation (dconv_image_cl; a 3x3 stride-1 conv reads that one in place, the caller
 * decides); the weight into B tiles; then per task (32 output pixels x 32 output channels) one micro-kernel
 * call over every tap and channel block, and the epilogue (sd_dconv_out: + bias, + residual, ReLU) writing
 * the 32x32 fp32 block once: transposed into NCHW F32 rows, or as the bf16 pixels of an image-layout output. */

static void BK_FN(dconv_image)(uint16_t *xp, const float *x, const sd_dconv *d, int nthreads)
{
    int64_t s = d->stride, Cp = d->Cp, ncb = Cp / 32, Wps = d->Wps, rows = s * s * d->Hps;
    size_t used = (size_t)(rows * Wps * Cp);
    memset(xp + used, 0, (d->x_elems - used) * 2); /* the tail the last pixel blocks read */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t pr = 0; pr < rows; pr++) {
        int64_t plane = pr / d->Hps, ph = plane / s, pw = plane % s, ih = (pr % d->Hps) * s + ph - d->pad_t;
        uint16_t *dst = xp + pr * Wps * Cp;
        if (ih < 0 || ih >= d->H) {
            memset(dst, 0, (size_t)(Wps * Cp) * 2);
            continue;
        }
        for (int64_t cb = 0; cb < ncb; cb++)
            for (int64_t j0 = 0; j0 < Wps; j0 += 16) {
                __m512i r[16];
                for (int64_t p = 0; p < 16; p++) { /* row p: channels 2p, 2p+1 of the 16 pixels as pairs */
                    int64_t c = cb * 32 + 2 * p;
                    __m512 v0 = c < d->C ? dc_ld16(x + (c * d->H + ih) * d->W, d, j0, pw) : _mm512_setzero_ps();
                    __m512 v1 = c + 1 < d->C ? dc_ld16(x + ((c + 1) * d->H + ih) * d->W, d, j0, pw) : _mm512_setzero_ps();
                    r[p] = pair_interleave(to_bf16x32(v0, v1));
                }
                transpose16x16_epi32(r); /* r[j]: the 32 channels of pixel j0 + j */
                for (int64_t j = 0; j < bmin(16, Wps - j0); j++)
                    _mm512_storeu_si512(dst + (j0 + j) * Cp + cb * 32, r[j]);
            }
    }
}


/* from an image-layout activation (backend.h: C channels padded to Cp, a one-pixel zero border, W + 2 pixels
 * per row); the padding reads beyond that border are zeros */
static void BK_FN(dconv_image_cl)(uint16_t *xp, const uint16_t *x, const sd_dconv *d, int nthreads)
{
    int64_t s = d->stride, Cp = d->Cp, Wps = d->Wps, rows = s * s * d->Hps, Wl = d->W + 2;
    size_t used = (size_t)(rows * Wps * Cp);
    memset(xp + used, 0, (d->x_elems - used) * 2);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t pr = 0; pr < rows; pr++) {
        int64_t plane = pr / d->Hps, ph = plane / s, pw = plane % s, ih = (pr % d->Hps) * s + ph - d->pad_t;
        uint16_t *dst = xp + pr * Wps * Cp;
        for (int64_t j = 0; j < Wps; j++) {
            int64_t iw = j * s + pw - d->pad_l;
            bool in = ih >= -1 && ih <= d->H && iw >= -1 && iw <= d->W;
            const uint16_t *src = x + ((ih + 1) * Wl + iw + 1) * Cp;
            for (int64_t c = 0; c < Cp; c += 32)
                _mm512_storeu_si512(dst + j * Cp + c, in ? _mm512_loadu_si512(src + c) : _mm512_setzero_si512());
        }
    }
}

static void BK_FN(dconv_weight)(uint16_t *wp, const void *w, sd_dtype dt, const sd_dconv *d, int nthreads)
{
    int64_t taps = d->KH * d->KW, ncb = d->Cp / 32, nob = (d->O + 31) / 32 * 2, C = d->C;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t ob = 0; ob < nob; ob++) {
        uint16_t *blk = wp + ob * taps * ncb * TILE;
        memset(blk, 0, (size_t)(taps * ncb * TILE) * 2);
        for (int64_t n = 0; n < 16 && ob * 16 + n < d->O; n++) {
            int64_t o = ob * 16 + n;
            for (int64_t c = 0; c < C; c++)
                for (int64_t t = 0; t < taps; t++) {
                    size_t i = (size_t)((o * C + c) * taps + t);
                    uint16_t v = dt == SD_BF16 ? ((const uint16_t *)w)[i]
                                 : dt == SD_F16 ? sd_f32_to_bf16(sd_f16_to_f32(((const uint16_t *)w)[i]))
                                                : sd_f32_to_bf16(((const float *)w)[i]);
                    int64_t k = c % 32;
                    blk[(t * ncb + c / 32) * TILE + (k / 2) * 32 + n * 2 + k % 2] = v;
                }
        }
    }
}

/* 16 bf16 as fp32 */
static inline __m512 bf16x16_f32(const uint16_t *p)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* NCHW output: the 16x16 block cb (rows: output pixels q0.., columns: output channels o0..) into o->y with
 * the bias and the epilogue */
static inline void dc_write(const sd_dconv_out *o, const float *cb, const sd_dconv *d, int64_t q0, int64_t o0)
{
    int64_t seg_j[16], seg_n[16], seg_off[16], ns = 0, Wps = d->Wps, WO = d->WO;
    for (int64_t j = 0; j < 16 && q0 + j < d->Q;) { /* runs of pixels inside one output row */
        int64_t q = q0 + j, oh = q / Wps, ow = q % Wps, len = bmin(16 - j, Wps - ow);
        if (ow < WO) {
            seg_j[ns] = j;
            seg_n[ns] = bmin(len, WO - ow);
            seg_off[ns++] = oh * WO + ow;
        }
        j += len;
    }
    if (!ns)
        return;
    __m512i r[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_si512(cb + i * 32);
    transpose16x16_epi32(r); /* r[n]: output channel o0 + n at the 16 pixels */
    int64_t HWO = d->HO * WO;
    for (int64_t n = 0; n < 16 && o0 + n < d->O; n++) {
        __m512 v = _mm512_add_ps(_mm512_castsi512_ps(r[n]), _mm512_set1_ps(o->bias ? o->bias[o0 + n] : 0.0f));
        float *yo = (float *)o->y + (o0 + n) * HWO;
        const float *ro = o->res ? (const float *)o->res + (o0 + n) * HWO : NULL;
        for (int64_t k = 0; k < ns; k++) {
            __mmask16 m = bm16(seg_n[k]);
            __m512 c = seg_j[k] == 0 ? v : _mm512_maskz_compress_ps((__mmask16)(bm16(seg_j[k] + seg_n[k]) & ~bm16(seg_j[k])), v);
            c = dc_epi(c, o, ro ? _mm512_maskz_loadu_ps(m, ro + seg_off[k]) : _mm512_setzero_ps());
            if (seg_n[k] == 16)
                _mm512_storeu_ps(yo + seg_off[k], c);
            else
                _mm512_mask_storeu_ps(yo + seg_off[k], m, c);
        }
    }
}

/* image-layout output: rows [0, nrows) of the 32x32 block cb (row i: output pixel (oh, ow) + i along rows of
 * `pitch` pixels, of which the first WO are real; columns: output channels o0..) as bf16 pixels (32 channels,
 * one cache line each) with the bias and the epilogue; channels past O stay zero */
static inline void dc_write_cl(const sd_dconv_out *o, const float *cb, const sd_dconv *d, int64_t oh, int64_t ow,
                               int64_t pitch, int64_t nrows, int64_t o0)
{
    int64_t WO = d->WO, Wl = WO + 2, Cpo = (d->O + 31) / 32 * 32;
    __mmask16 m0 = bm16(d->O - o0), m1 = bm16(d->O - o0 - 16);
    __m512 b0 = o->bias ? _mm512_maskz_loadu_ps(m0, o->bias + o0) : _mm512_setzero_ps();
    __m512 b1 = o->bias ? _mm512_maskz_loadu_ps(m1, o->bias + o0 + 16) : _mm512_setzero_ps();
    uint16_t *y = o->y;
    const uint16_t *res = o->res;
    for (int64_t i = 0; i < nrows; i++, ow++) {
        if (ow == pitch) {
            ow = 0;
            oh++;
        }
        if (ow >= WO)
            continue;
        int64_t at = ((oh + 1) * Wl + ow + 1) * Cpo + o0;
        __m512 v0 = _mm512_add_ps(_mm512_loadu_ps(cb + i * 32), b0);
        __m512 v1 = _mm512_add_ps(_mm512_loadu_ps(cb + i * 32 + 16), b1);
        v0 = dc_epi(v0, o, res ? bf16x16_f32(res + at) : _mm512_setzero_ps());
        v1 = dc_epi(v1, o, res ? bf16x16_f32(res + at + 16) : _mm512_setzero_ps());
        _mm512_storeu_si512(y + at, to_bf16x32(_mm512_maskz_mov_ps(m0, v0), _mm512_maskz_mov_ps(m1, v1)));
    }
}

#ifdef BK_ROW_PTRS
/* NCHW output, dense blocks: the nr (<= 32) rows of block cb (rows: the dense output pixels p0.., columns:
 * output channels o0..) into o->y with the bias and the epilogue: per output channel, nr consecutive floats */
static inline void dc_write_dense(const sd_dconv_out *o, const float *cb, const sd_dconv *d, int64_t p0, int64_t nr,
                                  int64_t o0)
{
    int64_t HWO = d->HO * d->WO;
    for (int64_t h = 0; h * 16 < nr; h++)
        for (int64_t g = 0; g < 2; g++) {
            __m512i r[16];
            for (int i = 0; i < 16; i++)
                r[i] = _mm512_loadu_si512(cb + (h * 16 + i) * 32 + g * 16);
            transpose16x16_epi32(r); /* r[n]: output channel o0 + 16g + n at the 16 pixels */
            __mmask16 m = bm16(nr - h * 16);
            for (int64_t n = 0; n < 16 && o0 + g * 16 + n < d->O; n++) {
                int64_t at = (o0 + g * 16 + n) * HWO + p0 + h * 16;
                __m512 v = _mm512_add_ps(_mm512_castsi512_ps(r[n]), _mm512_set1_ps(o->bias ? o->bias[o0 + g * 16 + n] : 0.0f));
                v = dc_epi(v, o, o->res ? _mm512_maskz_loadu_ps(m, (const float *)o->res + at) : _mm512_setzero_ps());
                _mm512_mask_storeu_ps((float *)o->y + at, m, v);
            }
        }
}
#endif

/* task -> (pixel block, output block): the operand read from memory once goes outside, the image when it is
 * the larger (qmajor), in chunks of DC_QCH pixel blocks, each chunk once per output block (that block's
 * weight tiles stay in cache while the chunk's pixels come from L2) */
#define DC_QCH 8
static inline void dc_task(int64_t task, int64_t nb, int64_t no, bool qmajor, int64_t *qb, int64_t *ob)
{
    *qb = task % nb;
    *ob = task / nb;
    if (qmajor) {
        int64_t c0 = task / (DC_QCH * no) * DC_QCH, r = task % (DC_QCH * no), qn = bmin(DC_QCH, nb - c0);
        *qb = c0 + r % qn;
        *ob = r / qn;
    }
}

static void BK_FN(dconv_thread)(const sd_dconv_out *o, const uint16_t *xp, const uint16_t *wp, const sd_dconv *d,
                                int tid, int nt)
{
    int64_t s = d->stride, Cp = d->Cp, taps = d->KH * d->KW, ncb = Cp / 32, no = (d->O + 31) / 32;
    int64_t plane = d->Hps * d->Wps, toff[SD_DCONV_MAX_TAPS];
    for (int64_t kh = 0; kh < d->KH; kh++)
        for (int64_t kw = 0; kw < d->KW; kw++)
            toff[kh * d->KW + kw] = (((kh % s) * s + kw % s) * plane + (kh / s) * d->Wps + kw / s) * Cp;
    bool qmajor = (double)d->x_elems > (double)d->w_elems;
    float cbuf[32 * 32] __attribute__((aligned(64)));
#ifdef BK_ROW_PTRS
    /* A rows at any addresses (VDPBF16PS): the blocks hold only the HO x WO real output pixels, dense
     * (p = oh * WO + ow: pixel q = oh * Wps + ow of the planes), nothing for the Wps - WO columns past each
     * output row nor past the last pixel (in groups of 8 rows) */
    int64_t P = d->HO * d->WO, np = (P + 31) / 32, tasks = np * no, t0 = tasks * tid / nt, t1 = tasks * (tid + 1) / nt;
    memset(cbuf, 0, sizeof cbuf); /* the rows past a short block are transposed with the others, never stored */
    for (int64_t task = t0; task < t1; task++) {
        int64_t pb, ob;
        dc_task(task, np, no, qmajor, &pb, &ob);
        int64_t p0 = pb * 32, nr = bmin(32, P - p0);
        const uint16_t *rows[32], *B0 = wp + ob * 2 * taps * ncb * TILE;
        for (int64_t i = 0; i < 32; i++) {
            int64_t p = p0 + bmin(i, nr - 1);
            rows[i] = xp + ((p / d->WO) * d->Wps + p % d->WO) * Cp;
        }
        bk_ukr_rows(rows, nr, toff, taps, ncb, 32, B0, B0 + taps * ncb * TILE, cbuf, 32);
        if (o->cl)
            dc_write_cl(o, cbuf, d, p0 / d->WO, p0 % d->WO, d->WO, nr, ob * 32);
        else
            dc_write_dense(o, cbuf, d, p0, nr, ob * 32);
    }
#else
    int64_t tasks = d->nq * no, t0 = tasks * tid / nt, t1 = tasks * (tid + 1) / nt;
    bk_begin();
    for (int64_t task = t0; task < t1; task++) {
        int64_t qb, ob;
        dc_task(task, d->nq, no, qmajor, &qb, &ob);
        const uint16_t *A0 = xp + qb * 32 * Cp, *B0 = wp + ob * 2 * taps * ncb * TILE;
        const uint16_t *B1 = d->O - ob * 32 > 16 ? B0 + taps * ncb * TILE : NULL; /* NULL: zero columns */
        bk_ukr_x(A0, A0 + 16 * Cp, Cp, toff, taps, ncb, 32, B0, B1, cbuf, 32, 0);
        if (o->cl) {
            dc_write_cl(o, cbuf, d, qb * 32 / d->Wps, qb * 32 % d->Wps, d->Wps, bmin(32, d->Q - qb * 32), ob * 32);
            continue;
        }
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 2; g++)
                dc_write(o, cbuf + h * 16 * 32 + g * 16, d, qb * 32 + h * 16, ob * 32 + g * 16);
    }
    bk_end();
#endif
}

static void BK_FN(dconv)(const sd_dconv_out *o, const uint16_t *xp, const uint16_t *wp, const sd_dconv *d,
                         int nthreads)
{
#ifdef BK_ROW_PTRS
    int64_t tasks = (d->HO * d->WO + 31) / 32 * ((d->O + 31) / 32);
#else
    int64_t tasks = d->nq * ((d->O + 31) / 32);
#endif
    int nt = nthreads > 1 && tasks > 1 ? (int)bmin(nthreads, tasks) : 1;
    if (nt == 1) {
        BK_FN(dconv_thread)(o, xp, wp, d, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    BK_FN(dconv_thread)(o, xp, wp, d, omp_get_thread_num(), omp_get_num_threads());
}
