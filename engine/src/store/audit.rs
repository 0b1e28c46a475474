//! The audit trail's keyed hash chain, as `quickpay_engine.store.audit` defines it: a
//! row's hash is HMAC-SHA256 under the installation's audit key over
//! "{seq}|{previous hash}|{content}", in lowercase hex. A trail whose last row is not
//! keyed under this key (one begun before the key existed) is continued after a marker
//! row naming the key. The Python module verifies what this one writes.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::canonical::Object;

/// The previous hash of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The marker row's kind: from this row on, rows are keyed.
pub const KEYED: &str = "audit.keyed";
pub const ALGORITHM: &str = "hmac-sha256";

/// One row of the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub prev_hash: String,
    pub content: String,
    pub row_hash: String,
}

/// A row's hash under `key`.
pub fn chain_hash(key: &[u8], prev_hash: &str, seq: i64, content: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(seq.to_string().as_bytes());
    mac.update(b"|");
    mac.update(prev_hash.as_bytes());
    mac.update(b"|");
    mac.update(content.as_bytes());
    crate::hex::lower(&mac.finalize().into_bytes())
}

/// Names a key without revealing it (the first 16 hex digits of a SHA-256).
pub fn key_id(key: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(b"quickpay audit key id\x00");
    digest.update(key);
    let mut id = crate::hex::lower(&digest.finalize());
    id.truncate(16);
    id
}

/// The content of the row where the keyed chain starts.
pub fn marker(key: &[u8]) -> String {
    Object::new()
        .str("algorithm", ALGORITHM)
        .str("key_id", &key_id(key))
        .str("kind", KEYED)
        .finish()
}

/// Where a writer's next rows go after `head` (None: an empty trail): the rows to write
/// first (the marker, when `head` is not keyed under `key`) and the (seq, hash) that
/// the next row follows.
pub fn continue_from(head: Option<&AuditRow>, key: &[u8]) -> (Vec<AuditRow>, (i64, String)) {
    let Some(head) = head else {
        return (Vec::new(), (0, GENESIS.to_string()));
    };
    if chain_hash(key, &head.prev_hash, head.seq, &head.content) == head.row_hash {
        return (Vec::new(), (head.seq, head.row_hash.clone()));
    }
    let seq = head.seq + 1;
    let content = marker(key);
    let row_hash = chain_hash(key, &head.row_hash, seq, &content);
    let row = AuditRow {
        seq,
        prev_hash: head.row_hash.clone(),
        content,
        row_hash: row_hash.clone(),
    };
    (vec![row], (seq, row_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_python_definition() {
        // hmac.digest(b"k" * 32, b"1|" + b"0" * 64 + b"|{}", "sha256").hex() and
        // hashlib.sha256(b"quickpay audit key id\x00" + b"k" * 32).hexdigest()[:16]
        let key = [b'k'; 32];
        assert_eq!(
            chain_hash(&key, GENESIS, 1, "{}"),
            "8810e5fc7d8f8ec241d94ce98cb12ebfbe2bca520065cfd480a25322e2cd5c44"
        );
        assert_eq!(key_id(&key), "980e367e958d0f71");
        assert_eq!(
            marker(&key),
            r#"{"algorithm":"hmac-sha256","key_id":"980e367e958d0f71","kind":"audit.keyed"}"#
        );
    }

    #[test]
    fn a_keyed_head_is_continued_and_an_unkeyed_one_gets_a_marker() {
        let key = [7u8; 32];
        let (rows, (seq, prev)) = continue_from(None, &key);
        assert!(rows.is_empty());
        assert_eq!((seq, prev.as_str()), (0, GENESIS));

        let content = r#"{"kind":"x"}"#.to_string();
        let keyed = AuditRow {
            seq: 1,
            prev_hash: GENESIS.into(),
            row_hash: chain_hash(&key, GENESIS, 1, &content),
            content,
        };
        let (rows, (seq, prev)) = continue_from(Some(&keyed), &key);
        assert!(rows.is_empty());
        assert_eq!((seq, prev), (1, keyed.row_hash.clone()));

        let other = [8u8; 32];
        let (rows, (seq, prev)) = continue_from(Some(&keyed), &other);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].seq, 2);
        assert_eq!(rows[0].prev_hash, keyed.row_hash);
        assert_eq!(rows[0].content, marker(&other));
        assert_eq!((seq, prev), (2, rows[0].row_hash.clone()));
    }
}
