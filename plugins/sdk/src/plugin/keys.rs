//! [`Keys`]: the keys a request names, read in place or from the decoded
//! request.

use crate::view::RawKeys;

/// The keys of a request ([`Lazy::keys`](super::Lazy::keys)).
#[derive(Debug, Clone)]
pub struct Keys<'a>(KeysInner<'a>);

#[derive(Debug, Clone)]
enum KeysInner<'a> {
    Raw(RawKeys<'a>),
    Decoded(std::vec::IntoIter<&'a str>),
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            KeysInner::Raw(keys) => keys.next(),
            KeysInner::Decoded(keys) => keys.next(),
        }
    }
}

impl<'a> Keys<'a> {
    /// The keys read from the request's bytes.
    pub(crate) fn raw(keys: RawKeys<'a>) -> Self {
        Keys(KeysInner::Raw(keys))
    }

    /// The keys of a decoded request.
    pub(crate) fn decoded(keys: Vec<&'a str>) -> Self {
        Keys(KeysInner::Decoded(keys.into_iter()))
    }
}
