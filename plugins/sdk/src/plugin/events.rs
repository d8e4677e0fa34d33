//! [`Events`]: which of the four events a plugin (or a hook) handles.

/// Which events a plugin handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// `on_received`
    pub received: bool,
    /// `on_executed`
    pub executed: bool,
    /// `on_before_send`
    pub before_send: bool,
    /// `on_after_send`
    pub after_send: bool,
}

impl Events {
    /// All four.
    pub const ALL: Events = Events {
        received: true,
        executed: true,
        before_send: true,
        after_send: true,
    };
    /// None (start here: `Events { received: true, ..Events::NONE }`).
    pub const NONE: Events = Events {
        received: false,
        executed: false,
        before_send: false,
        after_send: false,
    };
    /// Only `on_received`.
    pub const RECEIVED: Events = Events {
        received: true,
        ..Events::NONE
    };
}
