use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The id of a connection: a string, unique across every server.
///
/// Ids made by [`ConnectionId::random`] carry 128 random bits from the
/// operating system's CSPRNG-seeded generator, written in URL-safe base64
/// (22 characters), so they cannot be guessed. Cloning is a reference-count
/// increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// A new unguessable id.
    pub fn random() -> ConnectionId {
        ConnectionId(random_token().into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ConnectionId {
    fn from(value: &str) -> Self {
        ConnectionId(value.into())
    }
}

impl From<String> for ConnectionId {
    fn from(value: String) -> Self {
        ConnectionId(value.into())
    }
}

impl Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ConnectionId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 128 random bits as 22 URL-safe base64 characters (no padding).
///
/// Used for connection ids and for the tokens a transport hands out; both
/// must be unguessable, so the bits come from `rand`'s thread-local
/// generator, a CSPRNG seeded by the operating system.
pub fn random_token() -> String {
    let value: u128 = rand::random();
    let mut out = String::with_capacity(22);
    // 22 groups of 6 bits cover 132 bits; the top 4 are always zero.
    for i in (0..22).rev() {
        let index = ((value >> (i * 6)) & 0x3f) as usize;
        out.push(URL_SAFE[index] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_url_safe_and_distinct() {
        let a = ConnectionId::random();
        let b = ConnectionId::random();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn ids_look_up_by_str() {
        let id = ConnectionId::from("abc");
        let mut map = std::collections::HashMap::new();
        map.insert(id.clone(), 1);
        assert_eq!(map.get("abc"), Some(&1));
    }
}
