//! A "plugin" built for another ABI version: the loader must refuse it
//! before touching anything but the version.

use hookv_plugin::abi::{HookvBytes, HookvPlugin};

#[unsafe(no_mangle)]
pub extern "C" fn hookv_plugin_descriptor() -> *const HookvPlugin {
    static DESCRIPTOR: HookvPlugin = HookvPlugin {
        abi_version: 999,
        name: HookvBytes::from_slice(b"from-the-future"),
        init: None,
        on_received: None,
        on_executed: None,
        on_before_send: None,
        on_after_send: None,
        teardown: None,
        free_buf: None,
    };
    &DESCRIPTOR
}
