/* The ControlNet part of the `streamdiff serve` protocol (docs/protocol.md, "controlnet"): a client's live
 * settings of the server's ControlNets (scale, guidance window, preprocessor and its thresholds), parsed
 * all-or-nothing and checked by the library's rule (sd_stream_control_validate), and their JSON. */
#include "protocol.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void srv_cnet_to_stream(const srv_cnet *n, sd_stream_control *out)
{
    memset(out, 0, sizeof *out);
    out->scale = n->scale;
    out->guidance_start = n->guidance_start;
    out->guidance_end = n->guidance_end;
    out->preprocess = n->pp;
}

/* The fields of a "controlnet" message, in the order of docs/protocol.md. */
static const char *const k_cnet_fields[] = {"type",       "net",       "scale",     "guidance_start", "guidance_end",
                                            "preprocess", "canny_low", "canny_high", "threshold"};

bool srv_parse_controlnet(const cJSON *root, const srv_config *cur, srv_msg *msg, srv_config *next, srv_error *err)
{
    if (cur->n_cnet <= 0) {
        srv_error_set(err, "bad_value", "this server has no ControlNets (start it with --control NET:input)");
        return false;
    }
    const char *names[SD_PREPROCESS_TILE + 1];
    for (int i = 0; i <= SD_PREPROCESS_TILE; i++)
        names[i] = sd_preprocess_name((sd_preprocess)i);
    const cJSON *v[SD_ARRAY_LEN(k_cnet_fields)] = {NULL};
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        int f = -1;
        for (int i = 0; it->string && i < (int)SD_ARRAY_LEN(k_cnet_fields); i++)
            if (!strcmp(it->string, k_cnet_fields[i]))
                f = i;
        if (f < 0) {
            srv_error_set(err, "unknown_field", "unknown field '%.40s' in \"controlnet\" (see docs/protocol.md)",
                          it->string ? it->string : "");
            return false;
        }
        if (v[f]) {
            srv_error_set(err, "duplicate_field", "field '%s' appears twice", k_cnet_fields[f]);
            return false;
        }
        v[f] = it;
    }
    double d;
    int k = 0, e;
    if (v[1]) {
        if (!srv_get_number(v[1], "net", 0, cur->n_cnet - 1, true, &d, err))
            return false;
        k = (int)d;
    } else if (cur->n_cnet > 1) {
        srv_error_set(err, "bad_value", "\"controlnet\" needs \"net\": this server has %d ControlNets (0..%d)",
                      cur->n_cnet, cur->n_cnet - 1);
        return false;
    }
    srv_cnet n = cur->cnet[k];
    float *fl[] = {&n.scale, &n.guidance_start, &n.guidance_end};
    static const double hi[] = {10, 1, 1};
    for (int i = 0; i < 3; i++)
        if (v[2 + i]) {
            if (!srv_get_number(v[2 + i], k_cnet_fields[2 + i], 0, hi[i], false, &d, err))
                return false;
            *fl[i] = (float)d;
        }
    if (v[5]) {
        if (!srv_get_enum(v[5], "preprocess", names, SD_PREPROCESS_TILE + 1, &e, err))
            return false;
        n.pp.kind = (sd_preprocess)e;
    }
    int *in[] = {&n.pp.canny_low, &n.pp.canny_high, &n.pp.threshold};
    for (int i = 0; i < 3; i++)
        if (v[6 + i]) {
            if (!srv_get_number(v[6 + i], k_cnet_fields[6 + i], 0, i < 2 ? 2040 : 255, true, &d, err))
                return false;
            *in[i] = (int)d;
        }
    sd_stream_control sc; /* the library's rule on the whole (start < end, low <= high, ...) */
    srv_cnet_to_stream(&n, &sc);
    if (sd_stream_control_validate(&sc) != SD_OK) {
        srv_error_set(err, "bad_value", "ControlNet %d: %s", k, sd_last_error());
        return false;
    }
    memset(msg, 0, sizeof *msg);
    msg->type = SRV_MSG_CONTROLNET;
    *next = *cur;
    next->cnet[k] = n;
    return true;
}

cJSON *srv_cnet_json(const srv_config *c)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; a && k < c->n_cnet; k++) {
        const srv_cnet *n = &c->cnet[k];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddNumberToObject(o, "scale", round((double)n->scale * 1e4) / 1e4);
        cJSON_AddNumberToObject(o, "guidance_start", round((double)n->guidance_start * 1e4) / 1e4);
        cJSON_AddNumberToObject(o, "guidance_end", round((double)n->guidance_end * 1e4) / 1e4);
        cJSON_AddStringToObject(o, "preprocess", sd_preprocess_name(n->pp.kind));
        cJSON_AddNumberToObject(o, "canny_low", n->pp.canny_low);
        cJSON_AddNumberToObject(o, "canny_high", n->pp.canny_high);
        cJSON_AddNumberToObject(o, "threshold", n->pp.threshold);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}
