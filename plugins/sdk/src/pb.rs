//! The wire messages of package `abi` (generated from `proto/abi.proto`) and
//! small constructors that make them pleasant to build by hand. What a
//! request's command is (its name, table, keys, whether it writes) is
//! answered by the [command catalogue](crate::catalogue).

include!(concat!(env!("OUT_DIR"), "/abi.rs"));

use command_request::RequestData;

/// Status codes carried in [`CommandResponse::status`]; they are HTTP's.
pub mod status {
    /// The request succeeded.
    pub const OK: u32 = 200;
    /// The request is malformed or names no known command.
    pub const BAD_REQUEST: u32 = 400;
    /// The connection has not authenticated.
    pub const UNAUTHENTICATED: u32 = 401;
    /// The principal may not do this.
    pub const FORBIDDEN: u32 = 403;
    /// The key does not exist.
    pub const NOT_FOUND: u32 = 404;
    /// A frame is larger than the configured maximum.
    pub const TOO_LARGE: u32 = 413;
    /// A rate limit was hit.
    pub const TOO_MANY_REQUESTS: u32 = 429;
    /// The server failed; the message says where.
    pub const INTERNAL: u32 = 500;
    /// The server is shutting down.
    pub const UNAVAILABLE: u32 = 503;
}

impl CommandRequest {
    fn with(data: RequestData) -> Self {
        Self {
            request_data: Some(data),
        }
    }

    /// `hget table key`
    pub fn new_hget(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hget(Hget {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hgetall table`
    pub fn new_hgetall(table: impl Into<String>) -> Self {
        Self::with(RequestData::Hgetall(Hgetall {
            table: table.into(),
        }))
    }

    /// `hmget table key...`
    pub fn new_hmget(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmget(Hmget {
            table: table.into(),
            keys,
        }))
    }

    /// `hset table key value`. The value is a [`Value`], as in the
    /// original course, so its `"v".into()` needs no annotation.
    pub fn new_hset(table: impl Into<String>, key: impl Into<String>, value: Value) -> Self {
        Self::with(RequestData::Hset(Hset {
            table: table.into(),
            pair: Some(Kvpair::new(key, value)),
        }))
    }

    /// `hmset table key value...`
    pub fn new_hmset(table: impl Into<String>, pairs: Vec<Kvpair>) -> Self {
        Self::with(RequestData::Hmset(Hmset {
            table: table.into(),
            pairs,
        }))
    }

    /// `hdel table key`
    pub fn new_hdel(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hdel(Hdel {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hmdel table key...`
    pub fn new_hmdel(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmdel(Hmdel {
            table: table.into(),
            keys,
        }))
    }

    /// `hexist table key`
    pub fn new_hexist(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hexist(Hexist {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hmexist table key...`
    pub fn new_hmexist(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmexist(Hmexist {
            table: table.into(),
            keys,
        }))
    }

    /// `hscan table [--cursor KEY] [--count N]`: the pairs after `cursor`
    /// (`None`: from the start), at most `count` (0: the server's default).
    pub fn new_hscan(table: impl Into<String>, cursor: Option<String>, count: u32) -> Self {
        Self::with(RequestData::Hscan(Hscan {
            table: table.into(),
            cursor,
            count,
        }))
    }

    /// `stats`: the server's figures.
    pub fn new_stats() -> Self {
        Self::with(RequestData::Stats(Stats {}))
    }

    /// `auth token`
    pub fn new_auth(token: impl Into<String>) -> Self {
        Self::with(RequestData::Auth(Auth {
            token: token.into(),
        }))
    }
}

impl CommandResponse {
    /// A 200 response with no payload.
    pub fn ok() -> Self {
        Self {
            status: status::OK,
            ..Self::default()
        }
    }

    /// A response with `status` and a message saying what went wrong.
    pub fn error(status: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            ..Self::default()
        }
    }

    /// True when `status` is 200.
    pub fn is_ok(&self) -> bool {
        self.status == status::OK
    }
}

impl From<Vec<Value>> for CommandResponse {
    fn from(values: Vec<Value>) -> Self {
        Self {
            status: status::OK,
            values,
            ..Self::default()
        }
    }
}

impl From<Value> for CommandResponse {
    /// A 200 carrying one value.
    fn from(value: Value) -> Self {
        vec![value].into()
    }
}

impl From<Vec<Kvpair>> for CommandResponse {
    fn from(pairs: Vec<Kvpair>) -> Self {
        Self {
            status: status::OK,
            pairs,
            ..Self::default()
        }
    }
}

impl Kvpair {
    /// A key and its value. The value is a [`Value`], as in the original
    /// course, so its `"v".into()` needs no annotation.
    pub fn new(key: impl Into<String>, value: Value) -> Self {
        Self {
            key: key.into(),
            value: Some(value),
        }
    }
}

impl From<(String, Value)> for Kvpair {
    fn from((key, value): (String, Value)) -> Self {
        Self::new(key, value)
    }
}

impl Value {
    /// The empty value: "nothing there".
    pub fn empty() -> Self {
        Self { value: None }
    }

    /// True for the empty value.
    pub fn is_empty(&self) -> bool {
        self.value.is_none()
    }
}

impl From<value::Value> for Value {
    fn from(v: value::Value) -> Self {
        Self { value: Some(v) }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        value::Value::String(s).into()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        value::Value::String(s.to_owned()).into()
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        value::Value::Integer(i).into()
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        value::Value::Float(f).into()
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        value::Value::Bool(b).into()
    }
}

impl From<bytes::Bytes> for Value {
    fn from(b: bytes::Bytes) -> Self {
        value::Value::Binary(b).into()
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        value::Value::Binary(b.into()).into()
    }
}

impl std::fmt::Display for Value {
    /// Human-readable form used by the CLI: strings as-is, binary as hex with
    /// a `0x` prefix, the empty value as `(nil)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            None => f.write_str("(nil)"),
            Some(value::Value::String(s)) => f.write_str(s),
            Some(value::Value::Integer(i)) => write!(f, "{i}"),
            Some(value::Value::Float(x)) => write!(f, "{x:?}"),
            Some(value::Value::Bool(b)) => write!(f, "{b}"),
            Some(value::Value::Binary(b)) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

/// A [`Value`] that does not hold the type asked of it (`i64::try_from(value)`
/// and the like). The message is the original course's.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertError {
    /// The value, given back.
    pub value: Value,
    /// The type asked: `Integer`, `Float`, `Binary` or `Boolean`.
    pub to: &'static str,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cannot convert value {:?} to {}", self.value, self.to)
    }
}

impl std::error::Error for ConvertError {}

/// `TryFrom<Value>` for the scalar types, as in the original course.
macro_rules! try_from_value {
    ($($ty:ty => $variant:ident, $name:literal;)*) => {$(
        impl TryFrom<Value> for $ty {
            type Error = ConvertError;

            fn try_from(value: Value) -> Result<Self, ConvertError> {
                match value.value {
                    Some(value::Value::$variant(v)) => Ok(v),
                    _ => Err(ConvertError { value, to: $name }),
                }
            }
        }
    )*};
}

try_from_value! {
    i64 => Integer, "Integer";
    f64 => Float, "Float";
    bytes::Bytes => Binary, "Binary";
    bool => Bool, "Boolean";
}
