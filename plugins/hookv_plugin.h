/*
 * hookv_plugin.h — the C ABI between hookv and a plugin (ABI version 1).
 *
 * A plugin is a shared library that exports ONE function:
 *
 *     const HookvPlugin *hookv_plugin_descriptor(void);
 *
 * returning a descriptor that stays valid while the library is loaded.
 * The server reads `abi_version` first (every ABI version keeps it as the
 * first field) and refuses to start unless it equals HOOKV_ABI_VERSION.
 * Rust plugins get all of this from the `hookv-plugin` crate
 * (`impl Plugin` + `export_plugin!`); this header is the same contract for
 * C or any language that can export a C function. Only the plain structs
 * below cross the boundary.
 *
 * Lifecycle
 *   1. init(options_json, &state, &error): once per state, before any event
 *      with it. One loaded library may make several states, alive at once
 *      (one per [[hooks]] entry naming it, and one more per reload that
 *      changes its options): keep what belongs to one in *state, not in
 *      globals.
 *      `options_json` is the plugin's [[hooks]] table from config.toml,
 *      without the `plugin` key, as a UTF-8 JSON object (TOML dates become
 *      strings). Return HOOKV_STATUS_OK and set *state (opaque, may be NULL),
 *      or HOOKV_STATUS_ERROR with a UTF-8 message in *error: the server
 *      refuses to start and prints that message.
 *   2. events: each pointer may be NULL = "not handled" (never called, costs
 *      nothing). Events run concurrently on several threads: `state` must be
 *      thread-safe.
 *   3. teardown(state): once, when no event can run any more.
 *
 * Messages
 *   `request` is a protobuf-encoded abi.CommandRequest, `response` an
 *   abi.CommandResponse (empty for on_received), and `out`, when a verdict
 *   carries one, an abi.CommandResponse (see plugins/sdk/proto/abi.proto).
 *
 * Verdicts (the event's return value)
 *                    on_received/on_executed      on_before_send             on_after_send
 *   HOOKV_CONTINUE   go on                        go on; *out, if set,       go on
 *                                                 replaces the response
 *   HOOKV_BREAK      answer with *out             stop this chain; *out,     stop this chain
 *                    (storage untouched when       if set, replaces the
 *                    on_received)                  response
 *   HOOKV_ERROR      500; *out may hold a UTF-8 message, which the server logs
 *   Any other value, or *out bytes that do not decode, count as HOOKV_ERROR:
 *   that request gets a 500, logged with the plugin's name; the server goes on.
 *
 * Memory: each side frees what it allocated.
 *   - Everything the server passes (options, ctx, request, response) is
 *     borrowed for the duration of the call only.
 *   - *out and *error start as {NULL, 0}. A buffer the plugin puts there is
 *     the plugin's: the server reads it, then calls free_buf(buf) once.
 *
 * A C++ or Rust plugin must not let an exception or panic cross these
 * functions (catch it, return HOOKV_ERROR).
 */
#ifndef HOOKV_PLUGIN_H
#define HOOKV_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOOKV_ABI_VERSION 1u
#define HOOKV_DESCRIPTOR_SYMBOL "hookv_plugin_descriptor"

/* Event verdicts. */
#define HOOKV_CONTINUE 0
#define HOOKV_BREAK 1
#define HOOKV_ERROR 2

/* init results. */
#define HOOKV_STATUS_OK 0
#define HOOKV_STATUS_ERROR 1

/* Borrowed bytes or UTF-8 text (not NUL-terminated); ptr may be NULL when len is 0. */
typedef struct HookvBytes {
    const uint8_t *ptr;
    size_t len;
} HookvBytes;

/* A buffer allocated by the plugin, given back through free_buf. {NULL, 0} = nothing. */
typedef struct HookvBuf {
    uint8_t *ptr;
    size_t len;
} HookvBuf;

/* The connection and request an event runs for. */
typedef struct HookvContext HookvContext;
struct HookvContext {
    uint64_t conn_id;    /* unique per server process, in accept order */
    /* ns since the server read the request: call as ctx->elapsed_ns(ctx),
       during the event call only (a function, so only those who ask read a clock) */
    uint64_t (*elapsed_ns)(const HookvContext *ctx);
    const void *server;  /* the server's data for elapsed_ns; opaque */
    HookvBytes peer;     /* "127.0.0.1:5555", "[::1]:5555" */
    HookvBytes principal; /* authenticated user; ptr == NULL when nobody */
};

typedef int32_t (*HookvInitFn)(HookvBytes options_json, void **state, HookvBuf *error);
typedef int32_t (*HookvEventFn)(void *state, const HookvContext *ctx, HookvBytes request,
                                HookvBytes response, HookvBuf *out);
typedef void (*HookvTeardownFn)(void *state);
typedef void (*HookvFreeBufFn)(HookvBuf buf);

typedef struct HookvPlugin {
    uint32_t abi_version;          /* HOOKV_ABI_VERSION; always the first field */
    HookvBytes name;               /* UTF-8, for logs and errors */
    HookvInitFn init;              /* required */
    HookvEventFn on_received;      /* NULL = not handled */
    HookvEventFn on_executed;      /* NULL = not handled */
    HookvEventFn on_before_send;   /* NULL = not handled */
    HookvEventFn on_after_send;    /* NULL = not handled */
    HookvTeardownFn teardown;      /* required */
    HookvFreeBufFn free_buf;       /* required */
} HookvPlugin;

/* The one symbol a plugin exports. */
const HookvPlugin *hookv_plugin_descriptor(void);

#ifdef __cplusplus
}
#endif

#endif /* HOOKV_PLUGIN_H */
