/* `streamdiff serve`: JSON messages built from the server's state (hello, stats, the LoRA
 * scales in force). */
#include "internal.h"

/* "lora_scales": [..] (the scales in force) when the server has LoRAs. */
void srv_add_lora_scales(server *S, cJSON *o)
{
    if (S->lora_on.n <= 0)
        return;
    cJSON *a = cJSON_AddArrayToObject(o, "lora_scales");
    for (int i = 0; a && i < S->lora_on.n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(round((double)S->lora_on.scale[i] * 1e4) / 1e4));
}

/* "controlnets": [{"name":..,"from_frame":..}] (the server's nets; a client's settings are in its config). */
void srv_add_controlnets(server *S, cJSON *o)
{
    cJSON *a = cJSON_AddArrayToObject(o, "controlnets");
    for (int k = 0; a && k < S->o.n_controls; k++) {
        cJSON *n = cJSON_CreateObject();
        if (!n)
            break;
        cJSON_AddStringToObject(n, "name", S->o.control_names && S->o.control_names[k] ? S->o.control_names[k] : "");
        cJSON_AddBoolToObject(n, "from_frame", S->o.controls[k].image == NULL);
        cJSON_AddItemToArray(a, n);
    }
}

char *srv_stats_json(server *S, client *c, double now)
{
    double dt = now - c->stats_t;
    double fps = dt > 0 ? (double)(c->frames_out - c->stats_frames) / dt : 0;
    c->stats_t = now;
    c->stats_frames = c->frames_out;
    int active = 0, queued = 0;
    for (client *o = S->clients; o; o = o->next)
        if (!o->closed) {
            active += o->active;
            queued += !o->active;
        }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "type", "stats");
    cJSON_AddNumberToObject(o, "fps", round(fps * 100) / 100);
    cJSON_AddNumberToObject(o, "latency_ms", round(c->lat_ema_ms * 10) / 10);
    cJSON_AddNumberToObject(o, "inference_ms", round(c->infer_ema_ms * 10) / 10);
    cJSON_AddNumberToObject(o, "batch_frames", round(c->batch_ema * 100) / 100);
    cJSON_AddNumberToObject(o, "frames_in", (double)c->frames_in);
    cJSON_AddNumberToObject(o, "frames_out", (double)c->frames_out);
    cJSON_AddNumberToObject(o, "skipped", (double)c->skipped);
    cJSON_AddNumberToObject(o, "dropped", (double)c->dropped);
    cJSON_AddNumberToObject(o, "clients_active", active);
    cJSON_AddNumberToObject(o, "clients_queued", queued);
    cJSON_AddNumberToObject(o, "width", c->scfg.width);
    cJSON_AddNumberToObject(o, "height", c->scfg.height);
    cJSON_AddStringToObject(o, "mode", srv_mode_name(c->scfg.mode));
    srv_add_lora_scales(S, o);
    return srv_json_print(o);
}

char *srv_hello_json(server *S, client *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "type", "hello");
    cJSON_AddStringToObject(o, "server", "streamdiff");
    cJSON_AddStringToObject(o, "version", sd_version());
    cJSON_AddNumberToObject(o, "client_id", (double)c->id);
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    if (m) {
        cJSON_AddStringToObject(m, "name", S->o.model_name ? S->o.model_name : "");
        cJSON_AddStringToObject(m, "arch", S->info.arch ? S->info.arch : "");
        cJSON_AddNumberToObject(m, "native_size", S->info.native_size);
        cJSON_AddBoolToObject(m, "taesd", S->info.has_taesd);
        cJSON_AddStringToObject(m, "precision", S->info.precision ? S->info.precision : "");
        cJSON_AddBoolToObject(m, "tiny", S->o.tiny_model);
    }
    if (S->o.tiny_model)
        cJSON_AddStringToObject(
            o, "notice",
            "This server runs on the bundled tiny test model (random weights): the output is noise, not pictures. "
            "For real images download weights once, e.g. `huggingface-cli download stabilityai/sd-turbo` and "
            "`huggingface-cli download madebyollin/taesd`, then start `make run` again (or set STREAMDIFF_MODEL to a "
            "diffusers folder or .safetensors file).");
    cJSON_AddItemToObject(o, "limits", srv_limits_json(&S->o.limits));
    cJSON_AddItemToObject(o, "config", srv_config_json(&c->cfg));
    cJSON_AddItemToObject(o, "loras", srv_loras_json(&S->lora_on));
    srv_add_controlnets(S, o);
    cJSON_AddStringToObject(o, "state", c->active ? "active" : "queued");
    cJSON_AddNumberToObject(o, "max_sessions", S->o.max_sessions);
    cJSON_AddNumberToObject(o, "max_batch", S->o.max_batch);
    return srv_json_print(o);
}
