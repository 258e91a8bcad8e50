/* Which model family a LoRA file is for (sd_lora_family, lora.h): the named error for a LoRA of another
 * architecture. */
#include "models/lora.h"

#include <stdio.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

const char *sd_lora_family(const sd_safetensors *st, char *why, size_t cap)
{
    static const char *const marks[][2] = {{"lora_te2_", "second text encoder"},
                                           {"text_encoder_2.", "second text encoder"},
                                           {"add_embedding", "added embedding"},
                                           {"label_emb", "added embedding"}};
    for (size_t i = 0; i < st->n_tensors; i++)
        for (size_t k = 0; k < SD_ARRAY_LEN(marks); k++)
            if (has(st->tensors[i].name, marks[k][0])) {
                snprintf(why, cap, "'%s': SDXL's %s", st->tensors[i].name, marks[k][1]);
                return "sdxl";
            }
    for (size_t i = 0; i < st->n_tensors; i++) { /* the prompt width a cross-attention K/V down matrix reads */
        const sd_st_tensor *t = &st->tensors[i];
        const char *n = t->name;
        bool kv = has(n, "attn2") && (has(n, "to_k") || has(n, "to_v"));
        bool down = has(n, "lora_down.") || has(n, "lora_A.") || has(n, "lora.down.") || has(n, "down.weight");
        if (!kv || !down || t->ndim != 2)
            continue;
        int64_t w = t->shape[1];
        const char *fam = w == 768 ? "sd1" : w == 1024 ? "sd2" : w == 2048 ? "sdxl" : NULL;
        if (fam)
            snprintf(why, cap, "'%s' reads a %lld-wide prompt", n, (long long)w);
        return fam;
    }
    return NULL;
}
