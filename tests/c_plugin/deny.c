/* A hookv plugin in C, written against plugins/hookv_plugin.h only: it
 * answers every request with 403 "c says no", a CommandResponse encoded by
 * hand (field 1 status = 403, field 2 message). tests/plugins.rs builds it
 * with `cc` and loads it like any plugin. It stays at ABI version 1 (as it
 * was written before version 2), to show a version 1 plugin still loads. */
#include <stdlib.h>
#include <string.h>

#define HOOKV_PLUGIN_V1
#include "hookv_plugin.h"

static int32_t init(HookvBytes options, void **state, HookvBuf *error) {
    (void)options;
    (void)error;
    *state = NULL;
    return HOOKV_STATUS_OK;
}

static int32_t on_received(void *state, const HookvContext *ctx, HookvBytes request,
                           HookvBytes response, HookvBuf *out) {
    static const char message[] = "c says no";
    const size_t n = sizeof message - 1;
    uint8_t *buf = malloc(5 + n);
    (void)state;
    (void)request;
    (void)response;
    if (buf == NULL || ctx->elapsed_ns == NULL) {
        free(buf);
        return HOOKV_ERROR;
    }
    (void)ctx->elapsed_ns(ctx);
    buf[0] = 0x08; /* field 1, varint: status */
    buf[1] = 0x93; /* 403 = 0x193 as a varint */
    buf[2] = 0x03;
    buf[3] = 0x12; /* field 2, length-delimited: message */
    buf[4] = (uint8_t)n;
    memcpy(buf + 5, message, n);
    out->ptr = buf;
    out->len = 5 + n;
    return HOOKV_BREAK;
}

static void teardown(void *state) { (void)state; }

static void free_buf(HookvBuf buf) { free(buf.ptr); }

static const HookvPluginV1 DESCRIPTOR = {
    HOOKV_ABI_VERSION_1,
    {(const uint8_t *)"c-deny", 6},
    init,
    on_received,
    NULL,
    NULL,
    NULL,
    teardown,
    free_buf,
};

const HookvPluginV1 *hookv_plugin_descriptor(void) { return &DESCRIPTOR; }
