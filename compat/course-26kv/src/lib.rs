//! Nothing to link: this crate holds `tests/course_26kv.rs`, the original
//! course's 26_kv tests written against hookv with the course's `use`
//! lines (`use hookv::*` for its `use crate::*`), and `examples/`, its
//! client and server the same way. See README.md, "Coming from the course".
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_code)]
