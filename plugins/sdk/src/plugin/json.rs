//! The JSON a plugin's options arrive in: [`OptionValue`], a parser for it,
//! and a `serde` deserializer over it (what [`Options::get`] and
//! [`Options::parse`] read typed values with).
//!
//! Written here rather than taken from `serde_json` so that the crates a
//! hookv user links carry no `impl PartialEq<serde_json::Value> for u32`
//! (and the like): with one in the graph, the course's idiom
//! `assert_eq!(res.status, StatusCode::OK.as_u16() as _)` no longer infers
//! its cast (E0282). Options are small and written by the server, so a
//! plain recursive parser with a depth limit is all they need.
//!
//! [`Options::get`]: crate::Options::get
//! [`Options::parse`]: crate::Options::parse

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};

/// One JSON value of a plugin's options.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number without fraction or exponent that fits in a `u64`.
    Unsigned(u64),
    /// A negative number without fraction or exponent that fits in an `i64`.
    Signed(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OptionValue>),
    /// An object (keys sorted).
    Object(BTreeMap<String, OptionValue>),
}

impl fmt::Display for OptionValue {
    /// The value as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Null => f.write_str("null"),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Unsigned(n) => write!(f, "{n}"),
            OptionValue::Signed(n) => write!(f, "{n}"),
            // `{:?}` keeps a fraction (`1.0`), so the number reads back as a float.
            OptionValue::Float(x) => write!(f, "{x:?}"),
            OptionValue::String(s) => write_string(f, s),
            OptionValue::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            OptionValue::Object(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// `s` as a JSON string literal.
pub(crate) fn write_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Deeper nesting than this is refused (a recursive parser's stack).
const MAX_DEPTH: usize = 64;

/// Parses one JSON document.
pub(crate) fn parse(text: &str) -> Result<OptionValue, String> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str, value: OptionValue) -> Result<OptionValue, String> {
        if self.bytes[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<OptionValue, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip_ws();
        match self.bytes.get(self.pos) {
            None => Err(self.error("EOF while parsing a value")),
            Some(b'n') => self.eat("null", OptionValue::Null),
            Some(b't') => self.eat("true", OptionValue::Bool(true)),
            Some(b'f') => self.eat("false", OptionValue::Bool(false)),
            Some(b'"') => self.string().map(OptionValue::String),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(OptionValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(OptionValue::Array(items));
                        }
                        _ => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut map = BTreeMap::new();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(OptionValue::Object(map));
                }
                loop {
                    self.skip_ws();
                    if self.bytes.get(self.pos) != Some(&b'"') {
                        return Err(self.error("expected a key string"));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.bytes.get(self.pos) != Some(&b':') {
                        return Err(self.error("expected `:`"));
                    }
                    self.pos += 1;
                    map.insert(key, self.value(depth + 1)?);
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(OptionValue::Object(map));
                        }
                        _ => return Err(self.error("expected `,` or `}`")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn number(&mut self) -> Result<OptionValue, String> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        // The bytes scanned are ASCII, so this cannot fail; say so if it does.
        let text = std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .filter(|text| is_json_number(text.as_bytes()))
            .ok_or_else(|| self.error("invalid number"))?;
        if let Ok(n) = text.parse::<u64>() {
            return Ok(OptionValue::Unsigned(n));
        }
        if let Ok(n) = text.parse::<i64>() {
            return Ok(OptionValue::Signed(n));
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(OptionValue::Float(x)),
            _ => Err(self.error("invalid number")),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let run = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is a &str and the run stops only at ASCII bytes.
            out.push_str(
                std::str::from_utf8(&self.bytes[run..self.pos])
                    .map_err(|_| self.error("invalid UTF-8"))?,
            );
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.bytes.get(self.pos).copied();
                    self.pos += 1;
                    match escape {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code)
                                && self.bytes[self.pos..].starts_with(b"\\u")
                            {
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(self.error("invalid surrogate pair"));
                                }
                                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            }
                            out.push(
                                char::from_u32(code)
                                    .ok_or_else(|| self.error("invalid \\u escape"))?,
                            );
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("EOF while parsing a string")),
            }
        }
    }
}

/// Why an option could not be read as the type asked (the error of
/// `&OptionValue`'s `serde::Deserializer`).
#[derive(Debug)]
pub struct OptionError(String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

impl de::Error for OptionError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        OptionError(msg.to_string())
    }
}

impl<'de> IntoDeserializer<'de, OptionError> for &'de OptionValue {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for &'de OptionValue {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        match self {
            OptionValue::Null => visitor.visit_unit(),
            OptionValue::Bool(b) => visitor.visit_bool(*b),
            OptionValue::Unsigned(n) => visitor.visit_u64(*n),
            OptionValue::Signed(n) => visitor.visit_i64(*n),
            OptionValue::Float(x) => visitor.visit_f64(*x),
            OptionValue::String(s) => visitor.visit_borrowed_str(s),
            OptionValue::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            OptionValue::Object(map) => {
                let mut entries = MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), v)));
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, OptionError> {
        match self {
            OptionValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        match self {
            // A unit variant, named by a string.
            OptionValue::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // A variant with data, as serde_json writes it: `{"Variant": data}`.
            OptionValue::Object(map) if map.len() == 1 => {
                let entries = MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), v)));
                visitor.visit_enum(MapAccessDeserializer::new(entries))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, OptionError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// Whether `text` is a number as JSON writes one:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (Rust's parsers also
/// take `01`, `1.` and `+1`, which are not JSON).
fn is_json_number(text: &[u8]) -> bool {
    fn digits(text: &[u8], at: &mut usize) -> usize {
        let start = *at;
        while text.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    }
    let mut at = usize::from(text.first() == Some(&b'-'));
    match text.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => {
            digits(text, &mut at);
        }
        _ => return false,
    }
    if text.get(at) == Some(&b'.') {
        at += 1;
        if digits(text, &mut at) == 0 {
            return false;
        }
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = text.get(at) {
            at += 1;
        }
        if digits(text, &mut at) == 0 {
            return false;
        }
    }
    at == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_server_writes_and_refuses_the_rest() {
        let v = parse(
            r#" {"a": [1, -2, 2.5, true, null], "s": "q\"\\\n\u00e9\ud83d\ude00", "o": {}} "#,
        )
        .unwrap();
        let OptionValue::Object(map) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(
            map["a"],
            OptionValue::Array(vec![
                OptionValue::Unsigned(1),
                OptionValue::Signed(-2),
                OptionValue::Float(2.5),
                OptionValue::Bool(true),
                OptionValue::Null
            ])
        );
        assert_eq!(map["s"], OptionValue::String("q\"\\\né😀".into()));
        // What it writes, it reads back.
        assert_eq!(parse(&v.to_string()).unwrap(), v);
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "tru",
            "\"\\x\"",
            "1 2",
            "\"\u{1}\"",
            "1e999",
            "01",
            "-01",
            "1.",
            ".5",
            "-",
            "1e",
            "1+2",
            "\"\\u+041\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"[".repeat(100)).unwrap_err().contains("deeply"));
        for good in ["0", "-0", "10", "1.5", "-1.5e+3", "2E-2", "0.0"] {
            assert!(parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn enum_variants_read_as_serde_json_writes_them() {
        use serde::Deserialize;

        #[derive(Debug, PartialEq, Deserialize)]
        enum Limit {
            Off,
            Max(u32),
            Window { per: u32, secs: u32 },
        }
        let read = |text: &str| Limit::deserialize(&parse(text).unwrap());
        assert_eq!(read(r#""Off""#).unwrap(), Limit::Off);
        assert_eq!(read(r#"{"Max": 3}"#).unwrap(), Limit::Max(3));
        assert_eq!(
            read(r#"{"Window": {"per": 5, "secs": 1}}"#).unwrap(),
            Limit::Window { per: 5, secs: 1 }
        );
        assert!(read(r#"{"Max": 3, "Off": null}"#).is_err());
        assert!(read(r#"{"Nope": 1}"#).is_err());
    }
}
