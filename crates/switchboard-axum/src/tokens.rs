//! Connection tokens handed out by negotiate, until a connection (of any
//! transport) uses them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_core::ConnectionId;

/// What negotiate recorded for a token.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The id the connection gets once it opens.
    pub(crate) connection_id: ConnectionId,
    /// Who negotiated; the connection must be the same user.
    pub(crate) user: Option<String>,
    /// Whether negotiate agreed to stateful reconnect.
    pub(crate) stateful: bool,
    /// When negotiate handed the token out, for expiry.
    created: Instant,
}

/// The outcome of presenting a token to open a connection.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The token is valid and now in use until the guard drops.
    Granted(Pending, LiveGuard),
    /// No such token (never issued, expired, or its connection has ended).
    Unknown,
    /// A live connection already uses the token.
    InUse,
    /// The token was negotiated by another user; it stays valid for them.
    OtherUser,
}

/// Pending and in-use tokens of one endpoint.
///
/// A cheap-to-clone handle. One `parking_lot` mutex guards both sets:
/// every operation is a few map operations, never held across `.await`, so
/// a plain lock is cheaper than anything finer-grained. `Debug` shows
/// counts only: the tokens are secrets.
#[derive(Clone)]
pub(crate) struct Tokens {
    inner: Arc<Mutex<State>>,
    /// Tokens older than this are no longer accepted.
    lifetime: Duration,
    /// At most this many tokens are remembered; the oldest are dropped first.
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// Issued and not yet used, by token.
    pending: HashMap<String, Pending>,
    /// Every token issued, oldest first, for expiry and the capacity bound;
    /// may still list tokens already used (they are skipped). Never longer
    /// than `capacity`, so `pending` is bounded too.
    order: VecDeque<(Instant, String)>,
    /// Tokens whose connection is open: a second one gets 409 Conflict.
    live: HashSet<String>,
}

impl Tokens {
    pub(crate) fn new(lifetime: Duration, capacity: usize) -> Tokens {
        Tokens {
            inner: Arc::new(Mutex::new(State::default())),
            lifetime,
            capacity: capacity.max(1),
        }
    }

    /// Records a new token.
    pub(crate) fn insert(
        &self,
        token: String,
        connection_id: ConnectionId,
        user: Option<String>,
        stateful: bool,
    ) {
        let now = Instant::now();
        let mut state = self.inner.lock();
        self.expire(&mut state, now);
        while state.order.len() >= self.capacity {
            if let Some((_, old)) = state.order.pop_front() {
                state.pending.remove(&old);
            }
        }
        state.order.push_back((now, token.clone()));
        state.pending.insert(
            token,
            Pending {
                connection_id,
                user,
                stateful,
                created: now,
            },
        );
    }

    /// Takes a token for a socket of `user`.
    pub(crate) fn claim(&self, token: &str, user: Option<&str>) -> Claim {
        let now = Instant::now();
        let mut state = self.inner.lock();
        if state.live.contains(token) {
            return Claim::InUse;
        }
        let Some(pending) = state.pending.get(token) else {
            return Claim::Unknown;
        };
        if now.duration_since(pending.created) >= self.lifetime {
            state.pending.remove(token);
            return Claim::Unknown;
        }
        if pending.user.as_deref() != user {
            return Claim::OtherUser;
        }
        let Some(pending) = state.pending.remove(token) else {
            return Claim::Unknown;
        };
        state.live.insert(token.to_owned());
        Claim::Granted(
            pending,
            LiveGuard {
                tokens: self.inner.clone(),
                token: token.to_owned(),
            },
        )
    }

    /// Forgets tokens older than the lifetime.
    fn expire(&self, state: &mut State, now: Instant) {
        while let Some((created, _)) = state.order.front() {
            if now.duration_since(*created) < self.lifetime {
                break;
            }
            if let Some((_, token)) = state.order.pop_front() {
                state.pending.remove(&token);
            }
        }
    }

    #[cfg(test)]
    fn pending_len(&self) -> usize {
        self.inner.lock().pending.len()
    }
}

/// Marks a token in use while it lives; dropping it frees the token for
/// good (it is not pending again, so a later socket gets 404).
pub(crate) struct LiveGuard {
    tokens: Arc<Mutex<State>>,
    token: String,
}

impl LiveGuard {
    /// The token (a secret: never log it).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

/// Tokens are secrets: `Debug` never shows one.
impl fmt::Debug for LiveGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveGuard").finish_non_exhaustive()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Tokens")
            .field("pending", &state.pending.len())
            .field("live", &state.live.len())
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.tokens.lock().live.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConnectionId {
        ConnectionId::from(s)
    }

    #[test]
    fn a_token_is_used_once() {
        let tokens = Tokens::new(Duration::from_secs(60), 10);
        tokens.insert("t".into(), id("c"), None, false);
        let Claim::Granted(pending, guard) = tokens.claim("t", None) else {
            panic!("the token should be granted");
        };
        assert_eq!(pending.connection_id, id("c"));
        assert!(matches!(tokens.claim("t", None), Claim::InUse));
        drop(guard);
        assert!(matches!(tokens.claim("t", None), Claim::Unknown));
        assert!(matches!(tokens.claim("other", None), Claim::Unknown));
    }

    #[test]
    fn a_token_belongs_to_its_user() {
        let tokens = Tokens::new(Duration::from_secs(60), 10);
        tokens.insert("t".into(), id("c"), Some("alice".into()), false);
        assert!(matches!(tokens.claim("t", Some("bob")), Claim::OtherUser));
        assert!(matches!(tokens.claim("t", None), Claim::OtherUser));
        assert!(matches!(
            tokens.claim("t", Some("alice")),
            Claim::Granted(..)
        ));
    }

    #[test]
    fn tokens_expire() {
        let tokens = Tokens::new(Duration::ZERO, 10);
        tokens.insert("t".into(), id("c"), None, false);
        assert!(matches!(tokens.claim("t", None), Claim::Unknown));
    }

    #[test]
    fn the_oldest_tokens_make_room() {
        let tokens = Tokens::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            tokens.insert(format!("t{i}"), id("c"), None, false);
        }
        assert_eq!(tokens.pending_len(), 3);
        assert!(matches!(tokens.claim("t0", None), Claim::Unknown));
        assert!(matches!(tokens.claim("t1", None), Claim::Unknown));
        assert!(matches!(tokens.claim("t4", None), Claim::Granted(..)));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = Tokens::new(Duration::from_secs(60), 10);
        tokens.insert("pending-secret".into(), id("a"), None, false);
        tokens.insert("live-secret".into(), id("b"), None, false);
        let Claim::Granted(_, guard) = tokens.claim("live-secret", None) else {
            panic!("the token was not granted")
        };
        for shown in [format!("{tokens:?}"), format!("{guard:?}")] {
            assert!(!shown.contains("secret"), "{shown}");
        }
        assert!(format!("{tokens:?}").contains("pending: 1"));
    }
}
