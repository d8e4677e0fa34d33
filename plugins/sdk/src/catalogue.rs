//! The command catalogue: every request kind hookv knows, written out once.
//!
//! | tag | name      | access       | shape  |
//! |----:|-----------|--------------|--------|
//! |   1 | `hget`    | read         | key    |
//! |   2 | `hgetall` | read         | table  |
//! |   3 | `hmget`   | read         | keys   |
//! |   4 | `hset`    | write        | pair   |
//! |   5 | `hmset`   | write        | pairs  |
//! |   6 | `hdel`    | write        | key    |
//! |   7 | `hmdel`   | write        | keys   |
//! |   8 | `hexist`  | read         | key    |
//! |   9 | `hmexist` | read         | keys   |
//! |  13 | `auth`    | connection   | token  |
//! |  14 | `stats`   | read         | stats  |
//! |  15 | `hscan`   | read         | scan   |
//!
//! (10, 11 and 12 are reserved: subscribe, unsubscribe and publish in the
//! original course.) `stats` reads the server's figures, not a table; it
//! addresses the reserved table name [`STATS_TABLE`], so that everything
//! that asks a request for its table (the auth hook's `read` patterns, a
//! rewrite rule's `table`, a plugin) sees it as a read of that name.
//!
//! The `catalogue!` invocation below is the only list of commands. From it
//! come [`Command`] and its questions, the decoded request's
//! [`command_name`](crate::pb::CommandRequest::command_name),
//! [`table`](crate::pb::CommandRequest::table),
//! [`keys`](crate::pb::CommandRequest::keys) and
//! [`is_write`](crate::pb::CommandRequest::is_write), and the byte-level
//! view plugins read requests with; the server derives its auth rules
//! (read or write), the rewrite hook's `command` names and its "unknown
//! command" message from it too. The server's dispatch stays one
//! exhaustive `match` on the decoded request.
//!
//! The compiler checks most of the table against `abi.proto`: every
//! variant of the generated oneof must have a row (and every row a
//! variant), and a row's shape must name the fields its message has. A
//! test checks the tags by decoding each one.

use crate::pb::command_request::RequestData;
use crate::pb::{CommandRequest, Kvpair};

/// Whether a command reads or writes stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads one table; never creates it.
    Read,
    /// Changes one table (creating it on first use).
    Write,
    /// Touches no table; acts on the connection itself (`auth`).
    Connection,
}

/// How a command's message carries its table and keys: the fields of its
/// message in `abi.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `string token = 1`: no table, no keys (`auth`).
    Token,
    /// `string table = 1`: no keys (`hgetall`).
    Table,
    /// `string table = 1; optional string cursor = 2; uint32 count = 3`:
    /// no keys, since the cursor is a position, not a key read (`hscan`).
    Scan,
    /// `string table = 1; string key = 2` (`hget`, `hdel`, `hexist`).
    Key,
    /// `string table = 1; repeated string keys = 2` (`hmget`, `hmdel`,
    /// `hmexist`).
    Keys,
    /// `string table = 1; Kvpair pair = 2` (`hset`).
    Pair,
    /// `string table = 1; repeated Kvpair pairs = 2` (`hmset`).
    Pairs,
    /// No fields: addresses the reserved table [`STATS_TABLE`], no keys
    /// (`stats`).
    Stats,
}

/// The table name `stats` addresses: an auth user may send `stats` when
/// one of its `read` patterns matches it (`*` does). Data stored under this
/// name is an ordinary table; only `stats` itself reads the figures.
pub const STATS_TABLE: &str = "hookv:stats";

/// What [`CommandRequest::command_name`](crate::pb::CommandRequest::command_name)
/// says of a request whose oneof is unset or carries a tag this build does
/// not know.
pub const UNKNOWN: &str = "unknown";

/// The table and keys a decoded request addresses.
#[derive(Debug, Clone, Copy, Default)]
struct Addressed<'a> {
    table: Option<&'a str>,
    /// A singular key (`Key`, `Pair` shapes).
    key: Option<&'a str>,
    keys: &'a [String],
    pairs: &'a [Kvpair],
}

/// The fields of message `$r` that a command of shape `$shape` addresses.
macro_rules! addressed {
    (Token, $r:ident) => {{
        let _ = $r;
        Addressed::default()
    }};
    (Stats, $r:ident) => {{
        let _ = $r;
        Addressed {
            table: Some(STATS_TABLE),
            ..Addressed::default()
        }
    }};
    (Table, $r:ident) => {
        Addressed {
            table: Some(&$r.table),
            ..Addressed::default()
        }
    };
    (Scan, $r:ident) => {
        addressed!(Table, $r)
    };
    (Key, $r:ident) => {
        Addressed {
            table: Some(&$r.table),
            key: Some(&$r.key),
            ..Addressed::default()
        }
    };
    (Keys, $r:ident) => {
        Addressed {
            table: Some(&$r.table),
            keys: &$r.keys,
            ..Addressed::default()
        }
    };
    (Pair, $r:ident) => {
        Addressed {
            table: Some(&$r.table),
            key: $r.pair.as_ref().map(|p| p.key.as_str()),
            ..Addressed::default()
        }
    };
    (Pairs, $r:ident) => {
        Addressed {
            table: Some(&$r.table),
            pairs: &$r.pairs,
            ..Addressed::default()
        }
    };
}

/// Writes out [`Command`], its questions, and [`addressed`] from one table.
/// A row's variant must be the oneof's variant (the message's name).
macro_rules! catalogue {
    ($($variant:ident = $tag:literal, $name:literal, $access:ident, $shape:ident;)*) => {
        /// A request kind: one variant of `CommandRequest.request_data`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Command {
            $(
                #[doc = concat!("`", $name, "`: field ", stringify!($tag), " of the oneof.")]
                $variant,
            )*
        }

        impl Command {
            /// Every command, in tag order.
            pub const ALL: &'static [Command] = &[$(Command::$variant),*];

            /// Its field number in `CommandRequest.request_data`: the wire.
            #[inline]
            pub const fn tag(self) -> u32 {
                match self {
                    $(Command::$variant => $tag,)*
                }
            }

            /// Its name as users type it (`"hset"`).
            #[inline]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Command::$variant => $name,)*
                }
            }

            /// Whether it reads or writes stored data.
            #[inline]
            pub const fn access(self) -> Access {
                match self {
                    $(Command::$variant => Access::$access,)*
                }
            }

            /// How its message carries its table and keys.
            #[inline]
            pub const fn shape(self) -> Shape {
                match self {
                    $(Command::$variant => Shape::$shape,)*
                }
            }

            /// The command with field number `tag`, if this build knows one.
            #[inline]
            pub const fn from_tag(tag: u32) -> Option<Command> {
                match tag {
                    $($tag => Some(Command::$variant),)*
                    _ => None,
                }
            }

            /// The command of a decoded request.
            #[inline]
            pub const fn of(data: &RequestData) -> Command {
                match data {
                    $(RequestData::$variant(_) => Command::$variant,)*
                }
            }
        }

        /// The table and keys `data` addresses, by its command's shape.
        #[inline]
        fn addressed(data: &RequestData) -> Addressed<'_> {
            match data {
                $(RequestData::$variant(r) => addressed!($shape, r),)*
            }
        }
    };
}

catalogue! {
    // variant = tag, name,      access,     shape;
    Hget     = 1,  "hget",     Read,       Key;
    Hgetall  = 2,  "hgetall",  Read,       Table;
    Hmget    = 3,  "hmget",    Read,       Keys;
    Hset     = 4,  "hset",     Write,      Pair;
    Hmset    = 5,  "hmset",    Write,      Pairs;
    Hdel     = 6,  "hdel",     Write,      Key;
    Hmdel    = 7,  "hmdel",    Write,      Keys;
    Hexist   = 8,  "hexist",   Read,       Key;
    Hmexist  = 9,  "hmexist",  Read,       Keys;
    Auth     = 13, "auth",     Connection, Token;
    Stats    = 14, "stats",    Read,       Stats;
    Hscan    = 15, "hscan",    Read,       Scan;
}

impl Command {
    /// The command users call `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Command> {
        Command::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// True for the commands that change stored data.
    #[inline]
    pub const fn is_write(self) -> bool {
        matches!(self.access(), Access::Write)
    }
}

/// What the catalogue says of a decoded request.
impl CommandRequest {
    /// The request's command, or `None` when the oneof is unset or carries
    /// a tag this build does not know.
    #[inline]
    pub fn command(&self) -> Option<Command> {
        self.request_data.as_ref().map(Command::of)
    }

    /// The command's name as users type it (`"hset"`), or `"unknown"` when
    /// the oneof is unset or carries a tag this build does not know.
    #[inline]
    pub fn command_name(&self) -> &'static str {
        self.command().map_or(UNKNOWN, Command::name)
    }

    /// The table the request addresses, if it addresses one.
    pub fn table(&self) -> Option<&str> {
        addressed(self.request_data.as_ref()?).table
    }

    /// The keys the request addresses, in request order (no allocation).
    /// `hgetall` and `hscan` address none: which keys they read is up to
    /// the table (an hscan's cursor is a position, not a key it reads).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        let addressed = self
            .request_data
            .as_ref()
            .map(addressed)
            .unwrap_or_default();
        addressed
            .key
            .into_iter()
            .chain(addressed.keys.iter().map(String::as_str))
            .chain(addressed.pairs.iter().map(|p| p.key.as_str()))
    }

    /// True for the commands that change stored data (hset, hmset, hdel,
    /// hmdel); the reads (hget, hgetall, hmget, hexist, hmexist, hscan,
    /// stats) and `auth` are not.
    #[inline]
    pub fn is_write(&self) -> bool {
        self.command().is_some_and(Command::is_write)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The bytes of a request whose oneof field `tag` holds an empty message.
    fn empty_field(tag: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut bytes);
        bytes.push(0);
        bytes
    }

    #[test]
    fn the_table_matches_the_protobuf_tags() {
        let mut known = Vec::new();
        // Every field number up to well past the last one in use.
        for tag in 1..=64 {
            let req = CommandRequest::decode(&empty_field(tag)[..]).unwrap();
            let Some(data) = &req.request_data else {
                assert_eq!(
                    Command::from_tag(tag),
                    None,
                    "tag {tag} is not in abi.proto"
                );
                continue;
            };
            let command = Command::of(data);
            known.push(command);
            assert_eq!(command.tag(), tag, "{command:?}");
            assert_eq!(Command::from_tag(tag), Some(command));
            // Encoded again, it carries the tag it was decoded from.
            assert_eq!(req.encode_to_vec(), empty_field(tag), "{command:?}");
            // The generated variant is named after the message: the name.
            let variant = format!("{data:?}");
            let variant = variant.split('(').next().unwrap().to_lowercase();
            assert_eq!(variant, command.name());
            assert_eq!(Command::from_name(command.name()), Some(command));
        }
        assert_eq!(known, Command::ALL, "tag order, each once");
        assert_eq!(Command::from_name(UNKNOWN), None);
    }

    #[test]
    fn reads_and_writes_are_the_documented_ones() {
        let names = |access| {
            Command::ALL
                .iter()
                .filter(|c| c.access() == access)
                .map(|c| c.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Access::Write), ["hset", "hmset", "hdel", "hmdel"]);
        assert_eq!(
            names(Access::Read),
            ["hget", "hgetall", "hmget", "hexist", "hmexist", "stats", "hscan"]
        );
        assert_eq!(names(Access::Connection), ["auth"]);
    }

    #[test]
    fn stats_reads_the_reserved_table() {
        let req = CommandRequest::new_stats();
        assert_eq!(req.command_name(), "stats");
        assert_eq!(req.table(), Some(STATS_TABLE));
        assert_eq!(req.keys().count(), 0);
        assert!(!req.is_write());
        assert_eq!(Command::Stats.access(), Access::Read);
    }
}
