/*
 * hookv_plugin.h — the C ABI between hookv and a plugin (ABI version 2;
 * version 1, which servers still load, at the end).
 *
 * A plugin is a shared library that exports ONE function:
 *
 *     const HookvPlugin *hookv_plugin_descriptor(void);
 *
 * returning a descriptor that stays valid while the library is loaded.
 * The server reads `abi_version` first (every ABI version keeps it as the
 * first field) and refuses to start unless it speaks that version: a server
 * of ABI version 2 loads HOOKV_ABI_VERSION (2) and HOOKV_ABI_VERSION_1
 * plugins; one of version 1 refuses version 2 plugins, naming the file.
 * A version 1 plugin defines HOOKV_PLUGIN_V1 before including this header
 * and exports a HookvPluginV1, whose init (a HookvInitFnV1) gets no host;
 * nothing else differs.
 * Rust plugins get all of this from the `hookv-plugin` crate
 * (`impl Plugin` + `export_plugin!`); this header is the same contract for
 * C or any language that can export a C function. Only the plain structs
 * below cross the boundary.
 *
 * Lifecycle
 *   1. init(options_json, host, &state, &error): once per state, before any event
 *      with it. One loaded library may make several states, alive at once
 *      (one per [[hooks]] entry naming it, and one more per reload that
 *      changes its options): keep what belongs to one in *state, not in
 *      globals.
 *      `options_json` is the plugin's [[hooks]] table from config.toml,
 *      without the `plugin` key and the server's `tables` and `on_panic`,
 *      as a UTF-8 JSON object (TOML dates become strings). `host` is the
 *      server's callbacks (below); keep the pointer. Return HOOKV_STATUS_OK
 *      and set *state (opaque, may be NULL),
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
 * Host callbacks (version 2)
 *   `host` stays valid, with everything it points to, until the process
 *   exits; its functions may be called from any thread, at any time (from
 *   init on, also from threads the plugin starts). Each takes the host as
 *   its first argument: host->log(host, ...).
 *   - log(host, ctx, level, message): a line in the server's log (target
 *     hookv::plugin) with the plugin's name; pass the event's ctx to add the
 *     connection, NULL elsewhere (init). Levels HOOKV_LOG_ERROR..TRACE. The
 *     server writes a burst of lines per plugin, then about one a second,
 *     and says how many it left out.
 *   - register_metric(host, kind, name, help) -> id: a counter, gauge or
 *     histogram (HOOKV_METRIC_*) named [a-zA-Z_][a-zA-Z0-9_]* (at most 100
 *     bytes), exported as hookv_plugin_<name>{plugin="<plugin name>"}. The
 *     same name and kind give the same id; 0 = refused (bad name, another
 *     kind under that name, more than HOOKV_MAX_METRICS): updates of id 0 do
 *     nothing. Registering takes a lock: do it in init, keep the id.
 *   - counter_add(host, id, n), gauge_set(host, id, v), gauge_add(host, id,
 *     v), histogram_record(host, id, v): cheap, lock-free updates.
 *   A plugin that never calls back costs what a version 1 plugin costs.
 *
 * Verdicts (the event's return value)
 *                    on_received/on_executed      on_before_send             on_after_send
 *   HOOKV_CONTINUE   go on                        go on; *out, if set,       go on
 *                                                 replaces the response
 *   HOOKV_BREAK      answer with *out             stop this chain; *out,     stop this chain
 *                    (storage untouched when       if set, replaces the
 *                    on_received)                  response
 *   HOOKV_ERROR      500; *out may hold a UTF-8 message, which the server logs
 *   HOOKV_PANIC      as HOOKV_ERROR, counted as a panic: the plugin caught a
 *                    panic or exception at its boundary (version 2)
 *   Any other value, or *out bytes that do not decode, count as HOOKV_ERROR:
 *   that request gets a 500, logged with the plugin's name; the server goes on.
 *   Each of these is a failure, which the entry's on_panic = "fail_open"
 *   turns into "continue" (logged and counted all the same).
 *
 * Memory: each side frees what it allocated.
 *   - Everything the server passes (options, ctx, request, response) is
 *     borrowed for the duration of the call only.
 *   - *out and *error start as {NULL, 0}. A buffer the plugin puts there is
 *     the plugin's: the server reads it, then calls free_buf(buf) once.
 *
 * A C++ or Rust plugin must not let an exception or panic cross these
 * functions (catch it, return HOOKV_PANIC).
 */
#ifndef HOOKV_PLUGIN_H
#define HOOKV_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOOKV_ABI_VERSION 2u
#define HOOKV_ABI_VERSION_1 1u
#define HOOKV_DESCRIPTOR_SYMBOL "hookv_plugin_descriptor"

/* Event verdicts. */
#define HOOKV_CONTINUE 0
#define HOOKV_BREAK 1
#define HOOKV_ERROR 2
#define HOOKV_PANIC 3

/* log levels. */
#define HOOKV_LOG_ERROR 1
#define HOOKV_LOG_WARN 2
#define HOOKV_LOG_INFO 3
#define HOOKV_LOG_DEBUG 4
#define HOOKV_LOG_TRACE 5

/* register_metric kinds, and the most metrics one plugin may register. */
#define HOOKV_METRIC_COUNTER 1
#define HOOKV_METRIC_GAUGE 2
#define HOOKV_METRIC_HISTOGRAM 3
#define HOOKV_MAX_METRICS 256u

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

/* The server's callbacks (version 2): see "Host callbacks" above. */
typedef struct HookvHost HookvHost;
struct HookvHost {
    const void *server; /* the server's data; opaque */
    void (*log)(const HookvHost *host, const HookvContext *ctx, int32_t level,
                HookvBytes message);
    uint32_t (*register_metric)(const HookvHost *host, int32_t kind, HookvBytes name,
                                HookvBytes help);
    void (*counter_add)(const HookvHost *host, uint32_t id, uint64_t n);
    void (*gauge_set)(const HookvHost *host, uint32_t id, double value);
    void (*gauge_add)(const HookvHost *host, uint32_t id, double delta);
    void (*histogram_record)(const HookvHost *host, uint32_t id, double value);
};

typedef int32_t (*HookvInitFn)(HookvBytes options_json, const HookvHost *host, void **state,
                               HookvBuf *error);
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

/* ABI version 1 (still loaded): the same, but init gets no host. */
typedef int32_t (*HookvInitFnV1)(HookvBytes options_json, void **state, HookvBuf *error);

typedef struct HookvPluginV1 {
    uint32_t abi_version;          /* HOOKV_ABI_VERSION_1; always the first field */
    HookvBytes name;
    HookvInitFnV1 init;
    HookvEventFn on_received;
    HookvEventFn on_executed;
    HookvEventFn on_before_send;
    HookvEventFn on_after_send;
    HookvTeardownFn teardown;
    HookvFreeBufFn free_buf;
} HookvPluginV1;

/* The one symbol a plugin exports. */
#ifdef HOOKV_PLUGIN_V1
const HookvPluginV1 *hookv_plugin_descriptor(void);
#else
const HookvPlugin *hookv_plugin_descriptor(void);
#endif

#ifdef __cplusplus
}
#endif

#endif /* HOOKV_PLUGIN_H */
