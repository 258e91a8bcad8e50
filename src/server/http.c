/* `streamdiff serve`: HTTP: the page, /health, /metrics, tokens. */
#include "internal.h"
#include "assets.h"

#include <sys/stat.h>

/* ---------------------------------------------------------------- HTTP */

static const char *mime_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const struct {
        const char *ext, *mime;
    } k[] = {{".html", "text/html; charset=utf-8"},      {".js", "text/javascript; charset=utf-8"},
             {".css", "text/css; charset=utf-8"},        {".json", "application/json"},
             {".png", "image/png"},                      {".svg", "image/svg+xml"},
             {".ico", "image/x-icon"},                   {".txt", "text/plain; charset=utf-8"},
             {".md", "text/plain; charset=utf-8"}};
    for (size_t i = 0; dot && i < SD_ARRAY_LEN(k); i++)
        if (!strcmp(dot, k[i].ext))
            return k[i].mime;
    return "application/octet-stream";
}

static int http_respond(struct lws *wsi, pss *p, unsigned status, const char *mime, const void *body, size_t len,
                        char *owned)
{
    unsigned char buf[LWS_PRE + 1536], *start = buf + LWS_PRE, *q = start, *end = buf + sizeof buf - 1;
    free(p->owned);
    p->owned = owned;
    p->body = body;
    p->len = len;
    p->off = 0;
    static const char *const hdrs[][2] = {
        {"x-content-type-options:", "nosniff"},
        {"cache-control:", "no-store"},
        {"referrer-policy:", "no-referrer"},
        {"x-frame-options:", "DENY"},
        {"content-security-policy:",
         "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
         "connect-src 'self' ws: wss:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"},
    };
    if (lws_add_http_common_headers(wsi, status, mime, len, &q, end))
        return 1;
    for (size_t i = 0; i < SD_ARRAY_LEN(hdrs); i++)
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)hdrs[i][0], (const unsigned char *)hdrs[i][1],
                                        (int)strlen(hdrs[i][1]), &q, end))
            return 1;
    if (lws_finalize_write_http_header(wsi, start, &q, end))
        return 1;
    if (len == 0) {
        free(p->owned);
        p->owned = NULL;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_text(struct lws *wsi, pss *p, unsigned status, const char *text)
{
    return http_respond(wsi, p, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

int srv_http_write(struct lws *wsi, pss *p)
{
    if (!p->body)
        return 0;
    unsigned char buf[LWS_PRE + HTTP_CHUNK];
    size_t n = SD_MIN((size_t)HTTP_CHUNK, p->len - p->off);
    memcpy(buf + LWS_PRE, p->body + p->off, n);
    bool final = p->off + n == p->len;
    if (lws_write(wsi, buf + LWS_PRE, n, final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return 1;
    p->off += n;
    if (!final) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    free(p->owned);
    p->owned = NULL;
    p->body = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static bool token_equal(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < na; i++)
        d |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return d == 0;
}

/* ?token= on the URL, or "Authorization: Bearer <token>". */
bool srv_token_ok(server *S, struct lws *wsi)
{
    if (!S->o.token || !*S->o.token)
        return true;
    char buf[512];
    const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof buf);
    if (v && token_equal(v, S->o.token))
        return true;
    char auth[512];
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 7 && !strncmp(auth, "Bearer ", 7) &&
        token_equal(auth + 7, S->o.token))
        return true;
    return false;
}

static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* `dir`/`name` (a plain_name) when it is a regular file of at most 8 MiB: *data is malloc'd. */
static bool read_web_file(const char *dir, const char *name, char **data, size_t *len)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    struct stat st;
    char *buf = NULL;
    bool ok = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= ((off_t)8 << 20) &&
              (buf = malloc((size_t)st.st_size + 1)) != NULL &&
              fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size;
    fclose(f);
    if (!ok) {
        free(buf);
        return false;
    }
    *data = buf;
    *len = (size_t)st.st_size;
    return true;
}

int srv_http_request(server *S, struct lws *wsi, pss *p, const char *uri)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return http_text(wsi, p, 405, "405 method not allowed: use GET\n");
    if (!uri)
        uri = "/";
    if (!strcmp(uri, "/health")) {
        pthread_mutex_lock(&S->mu);
        srv_gauges g;
        srv_gauges_fill(S, &g);
        pthread_mutex_unlock(&S->mu);
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "status", "ok");
            cJSON_AddStringToObject(o, "version", sd_version());
            cJSON_AddStringToObject(o, "model", S->o.model_name ? S->o.model_name : "");
            cJSON_AddBoolToObject(o, "tiny_model", S->o.tiny_model);
            cJSON_AddNumberToObject(o, "clients_active", g.clients_active);
            cJSON_AddNumberToObject(o, "clients_queued", g.clients_queued);
            cJSON_AddNumberToObject(o, "uptime_s", round(g.uptime_s * 10) / 10);
        }
        char *s = srv_json_print(o);
        if (!s)
            return http_text(wsi, p, 500, "500 out of memory\n");
        return http_respond(wsi, p, 200, "application/json", s, strlen(s), s);
    }
    if (!strcmp(uri, "/metrics")) {
        if (!srv_token_ok(S, wsi))
            return http_text(wsi, p, 401, "401 unauthorized: pass ?token= or an Authorization: Bearer header\n");
        pthread_mutex_lock(&S->mu);
        srv_gauges g;
        srv_gauges_fill(S, &g);
        srv_metrics m = S->met;
        pthread_mutex_unlock(&S->mu);
        char *s = srv_metrics_render(&m, &g);
        if (!s)
            return http_text(wsi, p, 500, "500 out of memory\n");
        return http_respond(wsi, p, 200, "text/plain; version=0.0.4; charset=utf-8", s, strlen(s), s);
    }
    if (!strcmp(uri, "/ws"))
        return http_text(wsi, p, 400, "400 this is the WebSocket endpoint: connect with a WebSocket client\n");
    const char *name = uri[0] == '/' ? uri + 1 : uri;
    if (!*name)
        name = "index.html";
    if (!plain_name(name))
        return http_text(wsi, p, 404, "404 not found\n");
    if (S->o.web_dir) {
        char *data = NULL;
        size_t len = 0;
        if (!read_web_file(S->o.web_dir, name, &data, &len))
            return http_text(wsi, p, 404, "404 not found\n");
        return http_respond(wsi, p, 200, mime_of(name), data, len, data);
    }
    for (size_t i = 0; i < srv_n_assets; i++)
        if (!strcmp(srv_assets[i].name, name))
            return http_respond(wsi, p, 200, mime_of(name), srv_assets[i].data, srv_assets[i].len, NULL);
    return http_text(wsi, p, 404, "404 not found\n");
}
