/* JSON configuration files (config.json, model_index.json, scheduler_config.json,
 * fixture manifests) through Debian's cJSON, with typed getters.
 *
 * Getters take a default used when the key is absent or null (diffusers writes
 * null for "use the default"). A present key of the wrong type is an error
 * whose message names the file and the key. Floats accept the strings "inf",
 * "-inf" and "nan" (how the fixtures write non-finite values). */
#ifndef SD_CONFIG_H
#define SD_CONFIG_H

#include "core/core.h"
#include <cjson/cJSON.h>

#define SD_CONFIG_MAX_BYTES (16u * 1024 * 1024)

typedef struct sd_config {
    cJSON *root;      /* owned only when `owner` */
    const char *path; /* label used in messages */
    char *path_owned;
    bool owner;
} sd_config;

sd_status sd_config_load(const char *path, sd_config *out);
sd_status sd_config_parse(const char *text, size_t len, const char *label, sd_config *out);
void sd_config_free(sd_config *c);

/* A view of a nested object (not owning). Absent or null -> SD_ERR_NOT_FOUND. */
sd_status sd_config_sub(const sd_config *c, const char *key, sd_config *out);

bool sd_config_has(const sd_config *c, const char *key); /* present and not null */
sd_status sd_config_int(const sd_config *c, const char *key, int64_t def, int64_t *out);
sd_status sd_config_float(const sd_config *c, const char *key, double def, double *out);
sd_status sd_config_bool(const sd_config *c, const char *key, bool def, bool *out);
/* The returned string is owned by the config. */
sd_status sd_config_str(const sd_config *c, const char *key, const char *def, const char **out);
/* An integer list; a scalar is broadcast to `broadcast_n` entries when broadcast_n > 0.
 * Fails if there are more than `max` entries. */
sd_status sd_config_int_list(const sd_config *c, const char *key, int64_t *out, int max, int broadcast_n, int *count);
/* A string list; pointers owned by the config. */
sd_status sd_config_str_list(const sd_config *c, const char *key, const char **out, int max, int *count);

#endif
