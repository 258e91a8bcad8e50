/* exp on 16 floats for the AVX-512 kernel files (cpu_kern_avx512.c, the bf16 kernels): include it after
 * the file's target flags and its vector helpers (V, vset1, vmax, vmin, vmul, vfma, vfnma, vadd). */
#ifndef SD_CPU_KERN_VEXP512_H
#define SD_CPU_KERN_VEXP512_H

/* exp(x), about 1 ulp (Cephes polynomial); scalef does the 2^n scaling with correct
 * overflow to inf and underflow through the denormals to 0; NaN stays NaN. */
static inline V vexp(V x)
{
    x = vmax(vset1(-120.0f), x);
    x = vmin(vset1(88.8f), x);
    V n = _mm512_roundscale_ps(vmul(x, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = vfnma(n, vset1(0.693359375f), x);
    r = vfnma(n, vset1(-2.12194440e-4f), r);
    V p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
    return _mm512_scalef_ps(p, n);
}

#endif
