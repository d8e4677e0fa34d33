//! The server's side of the plugin C ABI: the only `unsafe` code in hookv.
//!
//! [`Library`] is a loaded shared library, [`Instance`] a plugin initialised
//! from one (ABI version 1 or 2), and [`Instance::call`] one event call;
//! the `host_*` functions are the callbacks a version 2 plugin may call,
//! each turning its raw arguments into a call on the plugin's safe
//! [`PluginHost`]. Everything that touches raw pointers is here, each
//! `unsafe` block with the reason it is sound; the contract those reasons
//! rely on is `hookv_plugin::abi` (and the same text in
//! `plugins/hookv_plugin.h`). The safe wrapper that turns calls into
//! [`Hook`](crate::hooks::Hook) methods is the parent module.
//!
//! # Hosts are never freed
//!
//! A plugin may call its host from any thread at any time, even after its
//! teardown (a thread it spawned), so the [`HookvHost`] handed to `init`,
//! and the [`PluginHost`] behind it, live until the process exits: one of
//! each per plugin name, made on first use and reused by every instance of
//! that name (so it costs a few kilobytes per plugin, once).
//!
//! # Libraries are never unloaded
//!
//! A [`Library`] is shared (`Arc`) by the [`Instance`]s made from it, so the
//! code stays mapped while any of them can run. When the last reference
//! goes, the library is deliberately leaked, not `dlclose`d: unloading a
//! Rust `cdylib` is unsound in practice (thread-local destructors registered
//! by the plugin's std, panic hooks and any thread it spawned would point
//! into unmapped code, and glibc silently keeps such libraries anyway). The
//! cost is one mapping per build a process loads; the parent module reuses
//! a build's library and bounds how many builds are loaded.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hookv_plugin::abi::{
    v1, DescriptorFn, EventFn, FreeBufFn, HookvBuf, HookvBytes, HookvContext, HookvHost, InitFn,
    TeardownFn, ABI_VERSION, DESCRIPTOR_SYMBOL, STATUS_OK,
};

use super::host::{PluginHost, ValueOp};

/// Why a library cannot be used as a plugin (the caller adds the path).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// `dlopen` failed.
    #[error("{0}")]
    Open(String),
    /// No `hookv_plugin_descriptor` symbol.
    #[error("no `{DESCRIPTOR_SYMBOL}` symbol")]
    NoSymbol,
    /// The descriptor function returned NULL.
    #[error("`{DESCRIPTOR_SYMBOL}` returned NULL")]
    NullDescriptor,
    /// Built against another ABI version.
    #[error("plugin ABI version {0}")]
    Version(u32),
    /// A required entry point is NULL.
    #[error("its descriptor has no `{0}` function")]
    Missing(&'static str),
}

/// A loaded shared library; never unloaded (see the module docs).
pub(crate) struct Library {
    lib: ManuallyDrop<libloading::Library>,
}

impl Library {
    /// Loads the library at `path`, resolving all its symbols now.
    pub(crate) fn open(path: &Path) -> Result<Arc<Self>, LoadError> {
        // SAFETY: loading runs the library's initialisers. A plugin is code
        // the operator chose to run inside the server (as trusted as the
        // server's own binary); the ABI asks nothing of its initialisers.
        let lib = unsafe { open(path) }.map_err(|e| {
            // libloading puts the loader's own words in `source`.
            let words =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            LoadError::Open(words)
        })?;
        Ok(Arc::new(Self {
            lib: ManuallyDrop::new(lib),
        }))
    }
}

#[cfg(unix)]
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: forwarded to the caller. RTLD_NOW: report unresolved symbols
    // at start-up, not as a crash mid-request; RTLD_LOCAL: the plugin's
    // symbols do not leak into other plugins.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: forwarded to the caller.
    unsafe { libloading::Library::new(path) }
}

/// `init` of either version.
#[derive(Clone, Copy)]
enum Init {
    V1(v1::InitFn),
    V2(InitFn),
}

/// A plugin's entry points, checked: the required ones are present.
#[derive(Clone, Copy)]
struct Entries {
    on_received: Option<EventFn>,
    on_executed: Option<EventFn>,
    on_before_send: Option<EventFn>,
    on_after_send: Option<EventFn>,
    teardown: TeardownFn,
    free_buf: FreeBufFn,
}

/// An initialised plugin: its state and entry points, and the library they
/// live in.
pub(crate) struct Instance {
    name: String,
    /// The ABI version of the plugin's descriptor (1 or 2).
    version: u32,
    entries: Entries,
    /// The plugin's opaque state from `init`, handed back on every call.
    state: *mut c_void,
    /// Keeps the code mapped for as long as this instance can be called.
    _library: Arc<Library>,
}

// SAFETY: the ABI contract requires the plugin's state and entry points to
// be usable from any thread, concurrently; the rest is plain data.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// The events, to pick an entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Received,
    Executed,
    BeforeSend,
    AfterSend,
}

impl Event {
    /// The event's name, for logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Event::Received => "on_received",
            Event::Executed => "on_executed",
            Event::BeforeSend => "on_before_send",
            Event::AfterSend => "on_after_send",
        }
    }
}

/// What one event call answered: the verdict code and the plugin's `out`
/// buffer, if it filled one.
pub(crate) struct Answer {
    pub(crate) verdict: i32,
    pub(crate) out: Option<PluginBuf>,
}

/// A buffer the plugin allocated; given back to it on drop.
pub(crate) struct PluginBuf {
    buf: HookvBuf,
    free: FreeBufFn,
}

impl PluginBuf {
    /// Takes ownership of `buf` (if it holds anything).
    fn adopt(buf: HookvBuf, free: FreeBufFn) -> Option<Self> {
        (!buf.ptr.is_null()).then_some(Self { buf, free })
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: per the contract the plugin's buffer holds `len` readable
        // bytes until we give it back with `free_buf`, which only `drop`
        // does; `ptr` is not NULL (checked in `adopt`).
        unsafe { std::slice::from_raw_parts(self.buf.ptr, self.buf.len) }
    }
}

impl Drop for PluginBuf {
    fn drop(&mut self) {
        let buf = HookvBuf {
            ptr: self.buf.ptr,
            len: self.buf.len,
        };
        // SAFETY: the buffer came from this plugin and is given back once.
        unsafe { (self.free)(buf) }
    }
}

/// What every event receives, borrowed for the call.
pub(crate) struct Args<'a> {
    pub(crate) conn_id: u64,
    pub(crate) started: Instant,
    pub(crate) peer: &'a str,
    pub(crate) principal: Option<&'a str>,
    pub(crate) request: &'a [u8],
    pub(crate) response: &'a [u8],
}

impl Instance {
    /// Finds and checks the descriptor of `library`, then runs the plugin's
    /// `init` with `options_json`. `Err(Ok(_))`: not a usable plugin;
    /// `Err(Err((name, message)))`: `init` refused.
    pub(crate) fn init(
        library: Arc<Library>,
        options_json: &str,
    ) -> Result<Self, Result<LoadError, (String, String)>> {
        let descriptor = descriptor(&library).map_err(Ok)?;
        // SAFETY: the name bytes are static data of the library, which stays
        // mapped (it is never unloaded).
        let name = String::from_utf8_lossy(unsafe { borrowed(descriptor.name) }).into_owned();
        let (Some(init), Some(teardown), Some(free_buf)) =
            (descriptor.init, descriptor.teardown, descriptor.free_buf)
        else {
            let missing = match (descriptor.init, descriptor.teardown) {
                (None, _) => "init",
                (_, None) => "teardown",
                _ => "free_buf",
            };
            return Err(Ok(LoadError::Missing(missing)));
        };
        let entries = Entries {
            on_received: descriptor.on_received,
            on_executed: descriptor.on_executed,
            on_before_send: descriptor.on_before_send,
            on_after_send: descriptor.on_after_send,
            teardown,
            free_buf,
        };
        let mut state: *mut c_void = std::ptr::null_mut();
        let mut error = HookvBuf::empty();
        let options = HookvBytes::from_slice(options_json.as_bytes());
        let status = match init {
            // SAFETY: `init` follows the contract: the options are borrowed
            // for the call, `state` and `error` point to our own slots.
            Init::V1(init) => unsafe { init(options, &mut state, &mut error) },
            // SAFETY: as above; the host lives until the process exits.
            Init::V2(init) => unsafe {
                init(
                    options,
                    c_host(PluginHost::of(&name)),
                    &mut state,
                    &mut error,
                )
            },
        };
        let error = PluginBuf::adopt(error, free_buf);
        if status != STATUS_OK {
            let message = match &error {
                Some(buf) => String::from_utf8_lossy(buf.bytes()).into_owned(),
                None => format!("init failed (status {status}) without a message"),
            };
            return Err(Err((name, message)));
        }
        Ok(Self {
            name,
            version: descriptor.version,
            entries,
            state,
            _library: library,
        })
    }

    /// The plugin's name from its descriptor.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The ABI version the plugin was built for.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// Whether the plugin handles `event`.
    pub(crate) fn handles(&self, event: Event) -> bool {
        self.entry(event).is_some()
    }

    fn entry(&self, event: Event) -> Option<EventFn> {
        match event {
            Event::Received => self.entries.on_received,
            Event::Executed => self.entries.on_executed,
            Event::BeforeSend => self.entries.on_before_send,
            Event::AfterSend => self.entries.on_after_send,
        }
    }

    /// Calls the plugin's `event` entry; `None` if it does not handle it.
    pub(crate) fn call(&self, event: Event, args: &Args<'_>) -> Option<Answer> {
        let entry = self.entry(event)?;
        let ctx = HookvContext {
            conn_id: args.conn_id,
            elapsed_ns: Some(elapsed_ns),
            server: std::ptr::from_ref(&args.started).cast::<c_void>(),
            peer: HookvBytes::from_slice(args.peer.as_bytes()),
            principal: args
                .principal
                .map_or(HookvBytes::EMPTY, |p| HookvBytes::from_slice(p.as_bytes())),
        };
        let mut out = HookvBuf::empty();
        // SAFETY: the entry point follows the contract: `state` is what
        // `init` returned and teardown has not run (it runs in `drop`, so
        // not while `&self` is borrowed); `ctx`, the request and response
        // bytes live until the call returns; `out` is our own slot.
        let verdict = unsafe {
            entry(
                self.state,
                &ctx,
                HookvBytes::from_slice(args.request),
                HookvBytes::from_slice(args.response),
                &mut out,
            )
        };
        Some(Answer {
            verdict,
            out: PluginBuf::adopt(out, self.entries.free_buf),
        })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `state` came from `init`; with `&mut self` no call is in
        // flight and none can follow, so the plugin may free it. The
        // library is still mapped (`_library` drops after this).
        unsafe { (self.entries.teardown)(self.state) }
    }
}

/// [`HookvContext::elapsed_ns`]: the age of the request whose context
/// this is. A function rather than a number, so that only plugins that ask
/// read the clock.
unsafe extern "C" fn elapsed_ns(ctx: *const HookvContext) -> u64 {
    // SAFETY: per the contract the plugin calls this during the event call,
    // with the context we passed it, whose `server` points to the request's
    // start `Instant` in `Args`, alive until the call returns. NULLs are
    // tolerated.
    let started = unsafe {
        ctx.as_ref()
            .and_then(|c| c.server.cast::<Instant>().as_ref())
    };
    started.map_or(0, |s| {
        u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX)
    })
}

/// A descriptor of either version, read into one shape.
struct Descriptor {
    version: u32,
    name: HookvBytes,
    init: Option<Init>,
    on_received: Option<EventFn>,
    on_executed: Option<EventFn>,
    on_before_send: Option<EventFn>,
    on_after_send: Option<EventFn>,
    teardown: Option<TeardownFn>,
    free_buf: Option<FreeBufFn>,
}

/// The checked descriptor of `library`.
fn descriptor(library: &Library) -> Result<Descriptor, LoadError> {
    // SAFETY: the symbol's type is fixed by the ABI; a library that exports
    // the name with another type breaks the contract it claims by its name.
    let get = unsafe { library.lib.get::<DescriptorFn>(DESCRIPTOR_SYMBOL) }
        .map_err(|_| LoadError::NoSymbol)?;
    // SAFETY: a `DescriptorFn` takes nothing and returns a pointer.
    let ptr = unsafe { get() };
    if ptr.is_null() {
        return Err(LoadError::NullDescriptor);
    }
    // SAFETY: per the contract the descriptor is valid while the library is
    // loaded (forever, here). Its first field is `abi_version` in every ABI
    // version, so reading just that is sound before we know the version.
    let version = unsafe { ptr.cast::<u32>().read() };
    match version {
        ABI_VERSION => {
            // SAFETY: version 2, so the struct has version 2's layout; it
            // lives as long as `library` (never unloaded).
            let d = unsafe { &*ptr };
            Ok(Descriptor {
                version,
                name: d.name,
                init: d.init.map(Init::V2),
                on_received: d.on_received,
                on_executed: d.on_executed,
                on_before_send: d.on_before_send,
                on_after_send: d.on_after_send,
                teardown: d.teardown,
                free_buf: d.free_buf,
            })
        }
        v1::ABI_VERSION => {
            // SAFETY: version 1, so the struct has version 1's layout (the
            // same fields, `init` taking no host); it lives as long as
            // `library`.
            let d = unsafe { &*ptr.cast::<v1::HookvPlugin>() };
            Ok(Descriptor {
                version,
                name: d.name,
                init: d.init.map(Init::V1),
                on_received: d.on_received,
                on_executed: d.on_executed,
                on_before_send: d.on_before_send,
                on_after_send: d.on_after_send,
                teardown: d.teardown,
                free_buf: d.free_buf,
            })
        }
        other => Err(LoadError::Version(other)),
    }
}

/// The [`HookvHost`] a version 2 plugin gets, made once per plugin host and
/// kept until the process exits (see the module docs).
struct CHost(HookvHost);

// SAFETY: a `CHost` is never changed after it is made; its `server` points
// to a `PluginHost`, which is `Sync` and lives until the process exits, and
// its functions may be called from any thread.
unsafe impl Sync for CHost {}
// SAFETY: as above.
unsafe impl Send for CHost {}

/// The C face of `host`.
fn c_host(host: &'static PluginHost) -> &'static HookvHost {
    /// At most one per plugin name (as many as `PluginHost`s): a `Vec`.
    static MADE: Mutex<Vec<&'static CHost>> = Mutex::new(Vec::new());
    let server = std::ptr::from_ref(host).cast::<c_void>();
    // The list is whole after any panic (a push is its only change).
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = made.iter().find(|c| c.0.server == server) {
        return &found.0;
    }
    let c: &'static CHost = Box::leak(Box::new(CHost(HookvHost {
        server,
        log: Some(host_log),
        register_metric: Some(host_register_metric),
        counter_add: Some(host_counter_add),
        gauge_set: Some(host_gauge_set),
        gauge_add: Some(host_gauge_add),
        histogram_record: Some(host_histogram_record),
    })));
    made.push(c);
    &c.0
}

/// The plugin host behind `host`.
///
/// # Safety
///
/// `host` must be NULL or a host made by [`c_host`] (what the contract asks
/// a plugin to pass back).
unsafe fn plugin_host<'a>(host: *const HookvHost) -> Option<&'a PluginHost> {
    // SAFETY: per the contract, `host` is one of ours: a leaked `CHost`
    // whose `server` is a leaked `PluginHost`; both live until exit.
    unsafe { host.as_ref()?.server.cast::<PluginHost>().as_ref() }
}

/// [`HookvHost::log`]. Must not unwind (it is `extern "C"`): nothing here
/// panics.
unsafe extern "C" fn host_log(
    host: *const HookvHost,
    ctx: *const HookvContext,
    level: i32,
    message: HookvBytes,
) {
    // SAFETY: the plugin passes back the host it was given.
    let Some(host) = (unsafe { plugin_host(host) }) else {
        return;
    };
    // SAFETY: per the contract `ctx` is NULL or the context of the event
    // call in progress, which lives until the call returns; its strings
    // and the message are borrowed for this call.
    let (about, message) = unsafe {
        let about = ctx
            .as_ref()
            .map(|c| (c.conn_id, String::from_utf8_lossy(borrowed(c.peer))));
        (about, String::from_utf8_lossy(borrowed(message)))
    };
    let about = about.as_ref().map(|(conn, peer)| (*conn, peer.as_ref()));
    host.log(level, about, &message);
}

/// [`HookvHost::register_metric`].
unsafe extern "C" fn host_register_metric(
    host: *const HookvHost,
    kind: i32,
    name: HookvBytes,
    help: HookvBytes,
) -> u32 {
    // SAFETY: the plugin passes back the host it was given.
    let Some(host) = (unsafe { plugin_host(host) }) else {
        return 0;
    };
    // SAFETY: the strings are borrowed for the call.
    let (name, help) = unsafe { (borrowed(name), borrowed(help)) };
    host.register(kind, name, help)
}

/// [`HookvHost::counter_add`].
unsafe extern "C" fn host_counter_add(host: *const HookvHost, id: u32, n: u64) {
    // SAFETY: the plugin passes back the host it was given.
    if let Some(host) = unsafe { plugin_host(host) } {
        host.counter_add(id, n);
    }
}

/// [`HookvHost::gauge_set`].
unsafe extern "C" fn host_gauge_set(host: *const HookvHost, id: u32, value: f64) {
    // SAFETY: the plugin passes back the host it was given.
    if let Some(host) = unsafe { plugin_host(host) } {
        host.value(ValueOp::GaugeSet, id, value);
    }
}

/// [`HookvHost::gauge_add`].
unsafe extern "C" fn host_gauge_add(host: *const HookvHost, id: u32, value: f64) {
    // SAFETY: the plugin passes back the host it was given.
    if let Some(host) = unsafe { plugin_host(host) } {
        host.value(ValueOp::GaugeAdd, id, value);
    }
}

/// [`HookvHost::histogram_record`].
unsafe extern "C" fn host_histogram_record(host: *const HookvHost, id: u32, value: f64) {
    // SAFETY: the plugin passes back the host it was given.
    if let Some(host) = unsafe { plugin_host(host) } {
        host.value(ValueOp::HistogramRecord, id, value);
    }
}

/// The bytes behind `b`, which the plugin keeps alive for `'a`.
///
/// # Safety
///
/// `b` must be `{NULL, 0}` or `len` readable bytes valid for `'a`.
unsafe fn borrowed<'a>(b: HookvBytes) -> &'a [u8] {
    if b.ptr.is_null() || b.len == 0 {
        return &[];
    }
    // SAFETY: see the function's contract.
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
}
