/* What the CPU can run, checked in plain x86-64 code (CPUID, XCR0, Linux's AMX tile permission), and
 * the reduced-precision kernel sets of each level (cpu_kern.h). Safe on every CPU: no kernel file's
 * instructions run before these checks passed. */
#include "backend/cpu/cpu_kern.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); /* only called when CPUID.OSXSAVE is set */
    return ((uint64_t)hi << 32) | lo;
}

/* AVX-512 usable: the OS saves the ZMM state and the fp32 AVX-512 kernels run */
static bool avx512_usable(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return false;
    if ((xcr0() & 0xE6) != 0xE6) /* SSE, AVX, opmask and ZMM state enabled by the OS */
        return false;
    return sd_cpu_kern_avx512() != NULL;
}

bool sd_cpu_has_avx512bf16(void)
{
    unsigned a, b, c, d;
    if (!avx512_usable() || !__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return false;
    return (a & (1u << 5)) != 0; /* AVX512_BF16 */
}

bool sd_cpu_has_avx512vnni(void)
{
    unsigned a, b, c, d;
    if (!avx512_usable() || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    return (c & (1u << 11)) != 0; /* AVX512_VNNI */
}

/* AMX-TILE and the given AMX bit of CPUID.7.0:EDX, tile state on, and this process allowed the tiles */
static bool amx_usable(unsigned bit)
{
    unsigned a, b, c, d;
    if (!avx512_usable() || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    if (!(d & (1u << 24)) || !(d & (1u << bit))) /* AMX-TILE, AMX-BF16 (22) or AMX-INT8 (25) */
        return false;
    if ((xcr0() & 0x60000) != 0x60000) /* XTILECFG + XTILEDATA enabled by the OS */
        return false;
    /* Linux: the tile data state is off until the process asks (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
     * asking again is harmless */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

bool sd_cpu_has_amx_bf16(void) { return sd_cpu_has_avx512bf16() && amx_usable(22); }
bool sd_cpu_has_amx_int8(void) { return amx_usable(25); }
#else
bool sd_cpu_has_avx512bf16(void) { return false; }
bool sd_cpu_has_avx512vnni(void) { return false; }
bool sd_cpu_has_amx_bf16(void) { return false; }
bool sd_cpu_has_amx_int8(void) { return false; }
#endif

const sd_cpu_bf16_kern *sd_cpu_bf16_kern_select(const char *level)
{
    if (!strcmp(level, "amx"))
        return sd_cpu_bf16_kern_amx() && sd_cpu_has_amx_bf16() ? sd_cpu_bf16_kern_amx() : NULL;
    if (!strcmp(level, "avx512bf16"))
        return sd_cpu_bf16_kern_avx512bf16() && sd_cpu_has_avx512bf16() ? sd_cpu_bf16_kern_avx512bf16() : NULL;
    return NULL;
}

const sd_cpu_int8_kern *sd_cpu_int8_kern_select(const char *level)
{
    const sd_cpu_int8_kern *vnni = sd_cpu_int8_kern_vnni() && sd_cpu_has_avx512vnni() ? sd_cpu_int8_kern_vnni() : NULL;
    if (!strcmp(level, "amx"))
        return sd_cpu_int8_kern_amx() && sd_cpu_has_amx_int8() ? sd_cpu_int8_kern_amx() : vnni;
    if (!strcmp(level, "avx512bf16") || !strcmp(level, "avx512vnni"))
        return vnni;
    return NULL;
}
