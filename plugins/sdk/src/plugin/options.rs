//! [`Options`]: a plugin's configuration, its `[[hooks]]` table as JSON.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::json::{self, OptionValue};

/// A plugin's options: the keys of its `[[hooks]]` table except `plugin`,
/// received as a JSON object.
///
/// ```
/// # use hookv_plugin::Options;
/// let options = Options::from_json(r#"{"max_key_len": 64}"#).unwrap();
/// let max: u64 = options.get("max_key_len")?.unwrap_or(256);
/// assert_eq!(max, 64);
/// assert!(options.get::<String>("max_key_len").is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    map: BTreeMap<String, OptionValue>,
}

impl Options {
    /// Parses the JSON object the server sends to `init`.
    pub fn from_json(json: &str) -> Result<Self, String> {
        match json::parse(json) {
            Ok(OptionValue::Object(map)) => Ok(Self { map }),
            Ok(other) => Err(format!("options must be a JSON object, got {other}")),
            Err(e) => Err(format!("options are not valid JSON: {e}")),
        }
    }

    /// The option `key` as `T`; `Ok(None)` when it is absent, an error
    /// naming the key when it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.map
            .get(key)
            .map(|v| T::deserialize(v).map_err(|e| format!("option `{key}`: {e}")))
            .transpose()
    }

    /// The option `key` as `T`; an error naming the key when it is absent or
    /// has the wrong type.
    pub fn require<T: DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        self.get(key)?
            .ok_or_else(|| format!("option `{key}` is required"))
    }

    /// Every option as one `T` (e.g. a `#[derive(Deserialize)]` struct, with
    /// `#[serde(deny_unknown_fields)]` to refuse unknown keys).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&OptionValue::Object(self.map.clone())).map_err(|e| format!("options: {e}"))
    }

    /// Refuses any key not in `known` (catches typos in config files).
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(format!(
                "unknown option `{key}`; this plugin knows: {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// The raw JSON object.
    pub fn as_map(&self) -> &BTreeMap<String, OptionValue> {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_the_key() {
        let o = Options::from_json(r#"{"n": "x", "m": 3}"#).unwrap();
        assert!(o.get::<u32>("n").unwrap_err().contains("`n`"));
        assert_eq!(o.get::<u32>("m"), Ok(Some(3)));
        assert_eq!(o.get::<u32>("absent"), Ok(None));
        assert!(o.require::<u32>("absent").unwrap_err().contains("`absent`"));
        assert!(o.only(&["n"]).unwrap_err().contains("`m`"));
        assert!(Options::from_json("[1]").is_err());
    }
}
