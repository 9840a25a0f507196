//! Connection ids that name their shard, and the steering decision for a received datagram.
//!
//! Every connection id this server issues is [`CID_BYTES`] long and starts with the index of the
//! shard that owns the connection. A datagram whose destination connection id names another
//! shard is handed to that shard instead of being fed to the local endpoint, which would answer
//! it with a stateless reset and kill a healthy connection.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};

use crate::limits::CID_BYTES;

/// Issues connection ids whose first byte is the shard index.
pub struct ShardCidGenerator {
    shard: u8,
    state: u64,
}

impl ShardCidGenerator {
    /// A generator for `shard`, seeded from the system's random source.
    pub fn new(shard: u8) -> Self {
        let mut seed = [0u8; 8];
        // A failing system RNG leaves a fixed seed; ids stay unique per connection through the
        // counter-like xorshift walk, only less unpredictable. Never a reason to stop serving.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let state = u64::from_le_bytes(seed) | 1;
        ShardCidGenerator { shard, state }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: cheap, full period; ids need to be unique and unguessable-ish, not secret.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = self.next().to_le_bytes();
        bytes[0] = self.shard;
        ConnectionId::new(&bytes[..CID_BYTES])
    }

    fn cid_len(&self) -> usize {
        CID_BYTES
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Where a received datagram must be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// On this shard.
    Local,
    /// On the shard with this index.
    Shard(u8),
    /// Nowhere: it names a shard that does not exist (garbage or an old server generation).
    /// Handled locally, where the endpoint answers as for any unknown connection.
    Unknown,
}

/// Decides which shard owns a datagram, from its first packet's destination connection id.
///
/// Long-header Initial and 0-RTT packets carry a connection id chosen by the client, so they stay
/// where SO_REUSEPORT's 4-tuple hash put them (consistent for one client address). Handshake and
/// short-header packets carry an id this server issued, whose first byte is the owner.
pub fn steer(datagram: &[u8], local_shard: u8, shards: usize) -> Steer {
    let Some(&first) = datagram.first() else {
        return Steer::Local;
    };
    let owner = if first & 0x80 != 0 {
        // Long header: flags(1) version(4) dcid_len(1) dcid...
        let packet_type = (first >> 4) & 0x03;
        if packet_type != 2 {
            return Steer::Local; // Initial (0), 0-RTT (1), Retry (3): client-chosen ids
        }
        match (datagram.get(5), datagram.get(6)) {
            (Some(&len), Some(&b)) if len as usize == CID_BYTES => b,
            _ => return Steer::Local,
        }
    } else {
        match datagram.get(1) {
            Some(&b) => b,
            None => return Steer::Local,
        }
    };
    if owner == local_shard {
        Steer::Local
    } else if (owner as usize) < shards {
        Steer::Shard(owner)
    } else {
        Steer::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_name_the_shard() {
        let mut g = ShardCidGenerator::new(3);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_BYTES);
        assert_eq!(a[0], 3);
        assert_ne!(a, b);
    }

    #[test]
    fn steering() {
        let mut short = vec![0x40u8, 1, 0, 0, 0, 0, 0, 0, 0, 0xaa];
        assert_eq!(steer(&short, 0, 2), Steer::Shard(1));
        assert_eq!(steer(&short, 1, 2), Steer::Local);
        short[1] = 9;
        assert_eq!(steer(&short, 0, 2), Steer::Unknown);
        // Long header Handshake (type 2) with our 8-byte id naming shard 1.
        let hs = [0xe0u8, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        assert_eq!(steer(&hs, 0, 2), Steer::Shard(1));
        // Initial (type 0) stays local whatever its id says.
        let initial = [0xc0u8, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        assert_eq!(steer(&initial, 0, 2), Steer::Local);
        assert_eq!(steer(&[], 0, 2), Steer::Local);
        assert_eq!(steer(&[0x40], 0, 2), Steer::Local);
    }
}
