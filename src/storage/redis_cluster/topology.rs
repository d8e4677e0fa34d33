//! [`Topology`]: which master serves which hash slot, as hookv last learned
//! it, so a batch can be cut into one pipeline per master.
//!
//! hookv computes each key's slot itself ([`slot_of`], Redis's CRC16 with
//! hash tags) and keeps this copy of the cluster's layout, read with
//! `CLUSTER SLOTS` at connect and again (in the background) whenever a
//! batch meets an error that may mean the layout changed: a node that does
//! not answer or refuses a key (`MOVED`, `CLUSTERDOWN`), a slot with no
//! master. A stale copy costs no correctness: a node refuses keys whose
//! slot it does not serve (`MOVED`), which fails those requests with 503
//! until the refresh has the new master.

use redis::Value as Reply;

use super::error::ClusterError;

/// The number of hash slots in a Redis Cluster.
pub(super) const SLOTS: usize = 16384;

/// No master serves this slot (in hookv's copy of the layout).
const UNSERVED: u16 = u16::MAX;

/// The slot of a Redis key: CRC16 (XMODEM) of the key, or of its hash tag
/// (the bytes between the first `{` and the first `}` after it, when not
/// empty), modulo 16384.
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the checksum Redis
/// Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) ^ u16::from(b)) & 0xff]
    })
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The masters of the cluster and the slots each serves.
#[derive(Debug, Clone)]
pub(super) struct Topology {
    /// Masters' addresses, `host:port`, as the cluster announces them.
    masters: Vec<String>,
    /// Per slot, the index of its master in `masters`, or [`UNSERVED`].
    slots: Vec<u16>,
}

impl Topology {
    /// The master of `slot` (an index into [`Topology::masters`]), if any.
    pub(super) fn master_of(&self, slot: u16) -> Option<u16> {
        match self.slots.get(usize::from(slot)) {
            Some(&UNSERVED) | None => None,
            Some(&m) => Some(m),
        }
    }

    /// Every master's address, `host:port`.
    pub(super) fn masters(&self) -> &[String] {
        &self.masters
    }

    /// The address of master `index`, or a stand-in for messages.
    pub(super) fn address(&self, index: Option<u16>) -> &str {
        index
            .and_then(|i| self.masters.get(usize::from(i)))
            .map_or("the node serving that slot", String::as_str)
    }

    /// Reads a `CLUSTER SLOTS` reply: an array of
    /// `[start, end, [host, port, id, ...], replicas...]`.
    pub(super) fn from_cluster_slots(reply: Reply) -> Result<Self, ClusterError> {
        let bad = |what: &str| ClusterError::UnexpectedReply {
            command: "CLUSTER SLOTS",
            reply: what.to_owned(),
        };
        let Reply::Array(ranges) = reply else {
            return Err(bad("not an array"));
        };
        let mut topology = Self {
            masters: Vec::new(),
            slots: vec![UNSERVED; SLOTS],
        };
        for range in ranges {
            let Reply::Array(fields) = range else {
                return Err(bad("a slot range that is not an array"));
            };
            let (Some(Reply::Int(start)), Some(Reply::Int(end)), Some(Reply::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad("a slot range without start, end and master"));
            };
            let host = match master.first() {
                Some(Reply::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Reply::SimpleString(host)) => host.clone(),
                _ => return Err(bad("a master without a host")),
            };
            let Some(Reply::Int(port)) = master.get(1) else {
                return Err(bad("a master without a port"));
            };
            let (Ok(start), Ok(end)) = (usize::try_from(*start), usize::try_from(*end)) else {
                return Err(bad("a negative slot"));
            };
            if start > end || end >= SLOTS {
                return Err(bad("a slot range out of 0..16384"));
            }
            // An unknown endpoint ("" or "?") serves nothing we can address.
            if host.is_empty() || host == "?" {
                continue;
            }
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let index = match topology.masters.iter().position(|m| *m == address) {
                Some(i) => i,
                None => {
                    topology.masters.push(address);
                    topology.masters.len() - 1
                }
            };
            let index = u16::try_from(index).map_err(|_| bad("more masters than slots"))?;
            topology.slots[start..=end].fill(index);
        }
        Ok(topology)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Redis Cluster specification, appendix A: CRC16 of "123456789".
        assert_eq!(crc16(b"123456789"), 0x31c3);
        // What redis-server answers to CLUSTER KEYSLOT.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));
        // An empty tag hashes the whole key.
        assert_eq!(slot_of(b"{}"), crc16(b"{}") % 16384);
    }

    #[test]
    fn cluster_slots_reply_maps_every_slot_to_its_master() {
        let node = |host: &str, port: i64| {
            Reply::Array(vec![
                Reply::BulkString(host.as_bytes().to_vec()),
                Reply::Int(port),
                Reply::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(8191),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Reply::Array(vec![Reply::Int(8192), Reply::Int(16383), node("::1", 7001)]),
        ]);
        let t = Topology::from_cluster_slots(reply).unwrap();
        assert_eq!(t.masters(), ["127.0.0.1:7000", "[::1]:7001"]);
        assert_eq!(t.master_of(0), Some(0));
        assert_eq!(t.master_of(8191), Some(0));
        assert_eq!(t.master_of(8192), Some(1));
        assert_eq!(t.master_of(16383), Some(1));
        assert_eq!(t.address(Some(1)), "[::1]:7001");
        assert!(Topology::from_cluster_slots(Reply::Nil).is_err());
    }
}
