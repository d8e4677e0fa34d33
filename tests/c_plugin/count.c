/* A hookv plugin in C at ABI version 2, written against
 * plugins/hookv_plugin.h only: it calls back into the server. At init it
 * registers the counter `c_requests_total` and logs "c-count ready"; on
 * every request it adds one to the counter and logs "c-count saw a request"
 * with the request's context (so the line carries the connection), then
 * lets the request go on. tests/ build it with `cc` and load it like any
 * plugin. */
#include <stdlib.h>
#include <string.h>

#include "hookv_plugin.h"

typedef struct {
    const HookvHost *host;
    uint32_t requests;
} State;

static HookvBytes text(const char *s) {
    HookvBytes b = {(const uint8_t *)s, strlen(s)};
    return b;
}

static int32_t init(HookvBytes options, const HookvHost *host, void **state, HookvBuf *error) {
    State *st = malloc(sizeof *st);
    (void)options;
    (void)error;
    if (st == NULL || host == NULL) {
        free(st);
        return HOOKV_STATUS_ERROR;
    }
    st->host = host;
    st->requests = host->register_metric(host, HOOKV_METRIC_COUNTER, text("c_requests_total"),
                                         text("Requests the C plugin saw."));
    host->log(host, NULL, HOOKV_LOG_INFO, text("c-count ready"));
    *state = st;
    return HOOKV_STATUS_OK;
}

static int32_t on_received(void *state, const HookvContext *ctx, HookvBytes request,
                           HookvBytes response, HookvBuf *out) {
    const State *st = state;
    (void)request;
    (void)response;
    (void)out;
    st->host->counter_add(st->host, st->requests, 1);
    st->host->log(st->host, ctx, HOOKV_LOG_INFO, text("c-count saw a request"));
    return HOOKV_CONTINUE;
}

static void teardown(void *state) { free(state); }

static void free_buf(HookvBuf buf) { free(buf.ptr); }

static const HookvPlugin DESCRIPTOR = {
    HOOKV_ABI_VERSION,
    {(const uint8_t *)"c-count", 7},
    init,
    on_received,
    NULL,
    NULL,
    NULL,
    teardown,
    free_buf,
};

const HookvPlugin *hookv_plugin_descriptor(void) { return &DESCRIPTOR; }
