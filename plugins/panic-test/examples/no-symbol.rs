//! A shared library that is not a hookv plugin: it exports no descriptor.

/// Something to export.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_hookv_plugin() -> i32 {
    7
}
