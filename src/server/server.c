/* `streamdiff serve`: options, the libwebsockets context and event loop, the callback that hands
 * each event to http.c / ws.c, and the engine worker's thread (worker.c). The files and who owns
 * what: server/internal.h. */
#include "internal.h"

#include <signal.h>

static volatile sig_atomic_t g_signal;
static struct lws_context *volatile g_ctx;

void srv_options_default(srv_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    srv_limits_default(&o->limits);
    o->max_sessions = 4;
    o->max_clients = 16;
    srv_config_default(&o->defaults, 512, 512);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    server *S = ctx ? lws_context_user(ctx) : NULL;
    pss *p = user;
    if (!S)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return p ? srv_http_request(S, wsi, p, in) : -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return p ? srv_http_write(wsi, p) : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (p && !p->c) {
            free(p->owned);
            p->owned = NULL;
            p->body = NULL;
        }
        break;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return srv_ws_filter(S, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        if (!p)
            return -1;
        memset(p, 0, sizeof *p);
        return srv_ws_open(S, wsi, p);
    case LWS_CALLBACK_RECEIVE:
        return p ? srv_ws_receive(S, wsi, p, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return p ? srv_ws_writable(S, wsi, p) : -1;
    case LWS_CALLBACK_CLOSED:
        if (p)
            srv_ws_closed(S, p);
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        srv_on_wake(S);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---------------------------------------------------------------- run */

static void on_signal(int sig)
{
    (void)sig;
    g_signal = 1;
    if (g_ctx)
        lws_cancel_service(g_ctx);
}

static bool is_loopback(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

int srv_run(sd_model *m, const srv_options *o)
{
    server *S = calloc(1, sizeof *S);
    if (!S) {
        fprintf(stderr, "streamdiff serve: out of memory\n");
        return 1;
    }
    S->o = *o;
    S->m = m;
    if (S->o.max_sessions < 1)
        S->o.max_sessions = 1;
    if (S->o.max_batch <= 0 || S->o.max_batch > S->o.max_sessions)
        S->o.max_batch = S->o.max_sessions;
    if (!S->o.host || !*S->o.host || !strcmp(S->o.host, "localhost"))
        S->o.host = "127.0.0.1";
    if (sd_model_get_info(m, &S->info) != SD_OK) {
        fprintf(stderr, "streamdiff serve: %s\n", sd_last_error());
        free(S);
        return 1;
    }
    for (int i = 0; i < S->o.n_loras; i++)
        if (!S->o.loras || !srv_loras_add(&S->lora_on, S->o.loras[i].path, S->o.loras[i].scale)) {
            fprintf(stderr, "streamdiff serve: LoRA %d: at most %d LoRAs with scales in -%g..%g and a file name\n",
                    i + 1, SRV_MAX_LORAS, SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX);
            free(S);
            return 1;
        }
    S->lora_req = S->lora_on;
    pthread_mutex_init(&S->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S->cv, &ca);
    pthread_condattr_destroy(&ca);
    S->start_t = now_s();

    static const struct lws_protocols protocols[] = {
        {"streamdiff", callback, sizeof(pss), RX_CHUNK, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = S->o.port;
    info.iface = S->o.host;
    info.protocols = protocols;
    info.user = S;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.max_http_header_data = 4096;
    info.timeout_secs = 10;
    info.server_string = "streamdiff";
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(S->o.host, ':'))
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_DISABLE_IPV6;
    lws_set_log_level(S->o.verbose > 1 ? LLL_ERR | LLL_WARN | LLL_NOTICE : LLL_ERR, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    S->ctx = lws_create_context(&info);
    if (!S->ctx) {
        fprintf(stderr, "streamdiff serve: cannot listen on %s port %d (in use, or not an address of this machine?)\n",
                S->o.host, S->o.port);
        pthread_cond_destroy(&S->cv);
        pthread_mutex_destroy(&S->mu);
        free(S);
        return 1;
    }
    g_ctx = S->ctx;
    struct lws_vhost *vh = lws_get_vhost_by_name(S->ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : S->o.port;

    /* the worker gets no SIGINT/SIGTERM: the event loop handles them */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t worker;
    int perr = pthread_create(&worker, NULL, srv_worker_main, S);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (perr) {
        fprintf(stderr, "streamdiff serve: cannot start the engine thread: %s\n", strerror(perr));
        g_ctx = NULL;
        lws_context_destroy(S->ctx);
        free(S);
        return 1;
    }

    if (!is_loopback(S->o.host) && (!S->o.token || !*S->o.token))
        fprintf(stderr,
                "streamdiff serve: WARNING: listening on %s without --token: anyone who can reach this address can "
                "use the server and its compute. Pass --token SECRET (then open the page with ?token=SECRET) or bind "
                "127.0.0.1.\n",
                S->o.host);
    const char *shown = !strcmp(S->o.host, "0.0.0.0") ? "127.0.0.1" : S->o.host;
    printf("streamdiff serve: model %s (%s, precision %s on %s kernels%s), streams %dx%d, up to %d clients served "
           "at once, %s\n",
           S->o.model_name ? S->o.model_name : "?", S->info.arch ? S->info.arch : "?",
           S->info.precision ? S->info.precision : "?", S->info.kernels ? S->info.kernels : "?",
           S->o.tiny_model ? ", tiny test model: output is noise" : "", S->o.defaults.width, S->o.defaults.height,
           S->o.max_sessions, S->o.max_batch > 1 ? "their frames batched" : "each frame alone");
    printf("streamdiff serve: open http://%s%s%s:%d/%s%s in a browser (Ctrl-C stops)\n",
           strchr(shown, ':') ? "[" : "", shown, strchr(shown, ':') ? "]" : "", port,
           S->o.token && *S->o.token ? "?token=" : "", S->o.token && *S->o.token ? S->o.token : "");
    fflush(stdout);

    while (!g_signal && !atomic_load(&S->stop))
        if (lws_service(S->ctx, 0) < 0)
            break;

    pthread_mutex_lock(&S->mu);
    atomic_store(&S->stop, true);
    pthread_cond_broadcast(&S->cv);
    pthread_mutex_unlock(&S->mu);
    pthread_join(worker, NULL);
    g_ctx = NULL;
    lws_context_destroy(S->ctx); /* closes the connections (LWS_CALLBACK_CLOSED frees their clients) */
    while (S->clients) {
        client *c = S->clients;
        S->clients = c->next;
        srv_client_free(c);
    }
    for (int i = 0; i < S->n_grp; i++)
        sd_stream_group_free(S->grp[i].g);
    printf("streamdiff serve: stopped (%llu frames in, %llu out, %llu dropped, %llu skipped)\n",
           (unsigned long long)S->met.frames_in, (unsigned long long)S->met.frames_out,
           (unsigned long long)S->met.frames_dropped, (unsigned long long)S->met.frames_skipped);
    fflush(stdout);
    pthread_cond_destroy(&S->cv);
    pthread_mutex_destroy(&S->mu);
    free(S);
    return 0;
}
