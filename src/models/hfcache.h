/* Resolving a Hugging Face model id ("stabilityai/sd-turbo") to a snapshot
 * folder of the local Hugging Face hub cache. Never downloads anything.
 *
 * Cache root, first that is set (non-empty):
 *   $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE (legacy name), $HF_HOME/hub,
 *   $XDG_CACHE_HOME/huggingface/hub, $HOME/.cache/huggingface/hub.
 * Layout (huggingface_hub): <root>/models--{org}--{name}/refs/<revision> holds
 * a commit hash, <root>/models--{org}--{name}/snapshots/<hash>/ the files.
 */
#ifndef SD_HFCACHE_H
#define SD_HFCACHE_H

#include "core/core.h"

/* Looks up `model_id` ("org/name") at `revision` (NULL = "main"; a branch or
 * tag name from refs/, or a commit hash naming a snapshot folder directly).
 * On success *snapshot_dir is a malloc'd path (free it). Errors:
 *   SD_ERR_INVALID_ARGUMENT  malformed id/revision (not org/name, "..", absolute, odd characters)
 *   SD_ERR_NOT_FOUND         not in the cache: the message says where it looked and
 *                            suggests `huggingface-cli download <id>` or passing a folder. */
sd_status sd_hf_resolve(const char *model_id, const char *revision, char **snapshot_dir);

/* Cache root as above (malloc'd), or NULL when no variable gives one. */
char *sd_hf_cache_dir(void);

/* True for a syntactically valid "org/name" (huggingface_hub's rules: each
 * part of [A-Za-z0-9._-], not starting or ending with '.' or '-', without
 * "--" or "..", 96 characters at most in all) that is not an existing file or
 * folder (so "models/x" on disk stays a path). */
bool sd_looks_like_hf_id(const char *s);

#endif
