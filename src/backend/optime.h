/* Per-op-kind timers of the op wrappers (a profiling aid, off by default).
 *
 * With the environment variable SD_OP_TIMES set (to anything but "0") when the first activation arena
 * is created, every backend call the op wrappers (ops.c) make is timed by wall clock and by the process's
 * CPU time (all threads: steadier than wall time on a busy machine) and added to its kind (linear, conv
 * 3x3, group norm + SiLU, self-attention, add, ...), with the multiply-adds of the GEMM-like kinds; at
 * process exit the table goes to stderr (sd_optime_print). Off, each wrapper pays one test of a global
 * flag. The times are the host's: exact on the CPU backend (its ops are synchronous), only launch times
 * on CUDA. Forwards on several threads add into the same counters (CPU time then mixes them). */
#ifndef SD_OPTIME_H
#define SD_OPTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum sd_opt_kind {
    SD_OPT_LINEAR,
    SD_OPT_CONV3,     /* 3x3 convolutions (any stride) */
    SD_OPT_CONV1,     /* 1x1 convolutions */
    SD_OPT_CONVX,     /* other kernel sizes */
    SD_OPT_MATMUL,
    SD_OPT_ATT_SELF,  /* attention with as many keys as queries */
    SD_OPT_ATT_CROSS, /* attention over another sequence (text context) */
    SD_OPT_GN,        /* group norm */
    SD_OPT_GN_SILU,   /* group norm + SiLU (fused) */
    SD_OPT_LN,        /* layer norm */
    SD_OPT_SOFTMAX,
    SD_OPT_GEGLU,
    SD_OPT_UNARY,     /* SiLU, GELU, tanh, ... alone */
    SD_OPT_ADD,
    SD_OPT_SUB,
    SD_OPT_MUL,
    SD_OPT_AFFINE,    /* affine and clamp */
    SD_OPT_UPSAMPLE,
    SD_OPT_CONCAT,
    SD_OPT_SLICE,
    SD_OPT_PERMUTE,
    SD_OPT_MOVE,      /* arena moves (sd_keep / scopes) and sd_copy_into */
    SD_OPT_CAST,
    SD_OPT_IMAGE,     /* rgb8 <-> chw frame conversions */
    SD_OPT_OTHER,     /* embeddings, timestep embedding */
    SD_OPT_N
} sd_opt_kind;

/* true while timing is on; read by the wrappers before each backend call */
extern bool sd_optime_on;
/* reads SD_OP_TIMES once (the first call) and, when it is set, registers the print at exit */
void sd_optime_init(void);
typedef struct sd_optime_t0 {
    double wall;       /* sd_time_now() */
    long long cpu_ns;  /* process CPU time */
} sd_optime_t0;
sd_optime_t0 sd_optime_begin(void);
/* adds the time since t0 and `madds` multiply-adds to kind k */
void sd_optime_add(sd_opt_kind k, sd_optime_t0 t0, double madds);
/* clears the counters (e.g. after warm-up runs) */
void sd_optime_reset(void);
/* the table: per kind calls, ms, share of the timed total, GFLOP/s for the GEMM-like kinds; `runs` > 1
 * also gives ms per run */
void sd_optime_print(FILE *f, int runs);

#endif
