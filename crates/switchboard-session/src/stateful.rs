//! Stateful reconnect (hub protocol version 2): the sequence numbers and the
//! replay buffer of one connection, and the table of connections a client
//! may reconnect to.
//!
//! Every trackable message (Invocation, StreamItem, Completion,
//! StreamInvocation, CancelInvocation) either side sends takes the next
//! sequence id, starting at 1. The server keeps what it wrote until the
//! client's Ack covers it, and drops what the client sends twice. When the
//! socket drops, the session waits for the client to present its token
//! again; then both sides send a Sequence (the id of their oldest
//! unacknowledged message) and replay from there.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What the reader should do with a message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Handle it.
    Handle,
    /// Drop it: the client sent it before (a replay), or it came between a
    /// reconnect and the client's Sequence.
    Skip,
}

/// The sequence state of one stateful connection, shared by its reader and
/// writer (and kept across its transports).
pub(crate) struct Replay {
    state: Mutex<State>,
    /// Told when an Ack frees room in the buffer.
    room: Notify,
    /// Told when a message from the client waits to be acknowledged.
    ack_due: Notify,
    /// The buffer holds at most about this many bytes.
    limit: usize,
}

#[derive(Debug)]
struct State {
    /// The id of the last trackable message written to the client.
    sent: u64,
    /// Written and not yet acknowledged, oldest first: the ids
    /// `sent - unacked.len() + 1 ..= sent`.
    unacked: VecDeque<Bytes>,
    /// Their size in bytes.
    unacked_bytes: usize,
    /// The id the client's next trackable message takes.
    next_inbound: u64,
    /// The highest id received from the client and handled.
    received: u64,
    /// The highest id acknowledged to the client.
    acknowledged: u64,
    /// After a reconnect, until the client's Sequence: its messages are not
    /// numbered yet, so they are dropped.
    awaiting_sequence: bool,
}

/// A client broke the sequence rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SequenceError {
    #[error("the client acknowledged message {acked}, but only {sent} were sent")]
    AckBeyondSent { acked: u64, sent: u64 },
    #[error("Sequence ID {sequence} is greater than the {received} messages received")]
    SequenceBeyondReceived { sequence: u64, received: u64 },
    #[error("Sequence ID 0 is invalid: sequence ids start at 1")]
    SequenceZero,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Replay")
            .field("sent", &state.sent)
            .field("unacked", &state.unacked.len())
            .field("unacked_bytes", &state.unacked_bytes)
            .field("received", &state.received)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Replay {
    /// A new connection's state: nothing sent or received. The buffer holds
    /// about `limit` bytes (it may pass it by one message).
    pub(crate) fn new(limit: usize) -> Replay {
        Replay {
            state: Mutex::new(State {
                sent: 0,
                unacked: VecDeque::new(),
                unacked_bytes: 0,
                next_inbound: 1,
                received: 0,
                acknowledged: 0,
                awaiting_sequence: false,
            }),
            room: Notify::new(),
            ack_due: Notify::new(),
            limit: limit.max(1),
        }
    }

    // ----- the writer's side -----

    /// Whether the buffer is full: nothing more may be written until an Ack.
    pub(crate) fn is_full(&self) -> bool {
        self.state.lock().unacked_bytes >= self.limit
    }

    /// Completes when an Ack may have freed room (check [`is_full`] again).
    ///
    /// [`is_full`]: Self::is_full
    pub(crate) async fn room(&self) {
        self.room.notified().await;
    }

    /// Records a trackable frame about to be written, so that it is
    /// replayed should the write not reach the client.
    pub(crate) fn record(&self, frame: &Bytes) {
        let mut state = self.state.lock();
        state.sent += 1;
        state.unacked_bytes += frame.len();
        state.unacked.push_back(frame.clone());
    }

    /// Completes when the client has sent something to acknowledge.
    pub(crate) async fn ack_due(&self) {
        self.ack_due.notified().await;
    }

    /// The Ack to send now, if the client sent anything since the last one.
    pub(crate) fn take_ack(&self) -> Option<u64> {
        let mut state = self.state.lock();
        (state.received > state.acknowledged).then(|| {
            state.acknowledged = state.received;
            state.received
        })
    }

    /// For a new transport: the Sequence to send first (the id of the
    /// oldest unacknowledged message, or of the next one), and the frames
    /// to replay after it, in order. From now on the client's messages are
    /// dropped until its own Sequence arrives.
    pub(crate) fn resume(&self) -> (u64, Vec<Bytes>) {
        let mut state = self.state.lock();
        state.awaiting_sequence = true;
        // The last Ack may have been lost with the old transport: the new
        // one acknowledges again what was received.
        state.acknowledged = 0;
        if state.received > 0 {
            self.ack_due.notify_one();
        }
        let first = state.sent + 1 - state.unacked.len() as u64;
        (first, state.unacked.iter().cloned().collect())
    }

    // ----- the reader's side -----

    /// The client acknowledged every message up to `sequence_id`.
    pub(crate) fn ack(&self, sequence_id: u64) -> Result<(), SequenceError> {
        let mut state = self.state.lock();
        if sequence_id > state.sent {
            return Err(SequenceError::AckBeyondSent {
                acked: sequence_id,
                sent: state.sent,
            });
        }
        let first = state.sent + 1 - state.unacked.len() as u64;
        let release = sequence_id.saturating_sub(first - 1);
        for _ in 0..release {
            if let Some(frame) = state.unacked.pop_front() {
                state.unacked_bytes -= frame.len();
            }
        }
        drop(state);
        if release > 0 {
            self.room.notify_one();
        }
        Ok(())
    }

    /// The client's Sequence: its next trackable message has `sequence_id`.
    pub(crate) fn sequence(&self, sequence_id: u64) -> Result<(), SequenceError> {
        if sequence_id == 0 {
            return Err(SequenceError::SequenceZero);
        }
        let mut state = self.state.lock();
        if sequence_id > state.next_inbound {
            return Err(SequenceError::SequenceBeyondReceived {
                sequence: sequence_id,
                received: state.next_inbound.saturating_sub(1),
            });
        }
        state.next_inbound = sequence_id;
        state.awaiting_sequence = false;
        Ok(())
    }

    /// Numbers a trackable message from the client: whether to handle it.
    pub(crate) fn inbound(&self) -> Inbound {
        let mut state = self.state.lock();
        if state.awaiting_sequence {
            return Inbound::Skip;
        }
        let id = state.next_inbound;
        state.next_inbound += 1;
        if id <= state.received {
            return Inbound::Skip;
        }
        state.received = id;
        drop(state);
        self.ack_due.notify_one();
        Inbound::Handle
    }
}

/// Where a client's new transport reaches its stateful connection: one
/// slot, so that a newer transport replaces one not yet taken (the client
/// has given up on that one), and closed for good when the connection ends.
pub struct Handoff<T> {
    slot: Mutex<Slot<T>>,
    arrived: Notify,
}

struct Slot<T> {
    waiting: Option<T>,
    closed: bool,
}

impl<T> fmt::Debug for Handoff<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = self.slot.lock();
        f.debug_struct("Handoff")
            .field("waiting", &slot.waiting.is_some())
            .field("closed", &slot.closed)
            .finish()
    }
}

impl<T> Handoff<T> {
    /// An empty, open hand-off.
    pub fn new() -> Arc<Handoff<T>> {
        Arc::new(Handoff {
            slot: Mutex::new(Slot {
                waiting: None,
                closed: false,
            }),
            arrived: Notify::new(),
        })
    }

    /// Hands `transport` over. `Ok` with a transport that was still
    /// waiting, now replaced (to be closed); `Err` with `transport` itself
    /// if the connection has ended.
    pub fn put(&self, transport: T) -> Result<Option<T>, T> {
        let mut slot = self.slot.lock();
        if slot.closed {
            return Err(transport);
        }
        let replaced = slot.waiting.replace(transport);
        drop(slot);
        self.arrived.notify_one();
        Ok(replaced)
    }

    /// The next transport handed over. Cancel-safe.
    pub async fn take(&self) -> T {
        loop {
            if let Some(transport) = self.slot.lock().waiting.take() {
                return transport;
            }
            self.arrived.notified().await;
        }
    }

    /// Refuses transports from now on; returns one still waiting (to be
    /// closed).
    pub fn close(&self) -> Option<T> {
        let mut slot = self.slot.lock();
        slot.closed = true;
        slot.waiting.take()
    }

    fn is_closed(&self) -> bool {
        self.slot.lock().closed
    }
}

/// The stateful connections of one endpoint, by connection token: where a
/// client that reconnects with its token hands over its new transport.
pub struct Resumable<T> {
    map: Mutex<HashMap<String, Entry<T>>>,
}

struct Entry<T> {
    /// The user the connection belongs to.
    user: Option<String>,
    handoff: Arc<Handoff<T>>,
}

/// Tokens are secrets: `Debug` shows how many, never which.
impl<T> fmt::Debug for Resumable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resumable")
            .field("connections", &self.map.lock().len())
            .finish()
    }
}

impl<T> Default for Resumable<T> {
    fn default() -> Self {
        Resumable {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// What a token finds in the table.
#[derive(Debug)]
pub enum Found<T> {
    /// A stateful connection of that user: hand it the new transport.
    Connection(Arc<Handoff<T>>),
    /// A stateful connection of another user.
    OtherUser,
    /// No stateful connection has that token.
    None,
}

impl<T> Resumable<T> {
    /// Registers a connection under `token` until the returned guard drops.
    pub fn insert<'a>(
        &'a self,
        token: &str,
        user: Option<String>,
        handoff: Arc<Handoff<T>>,
    ) -> Registered<'a, T> {
        self.map
            .lock()
            .insert(token.to_owned(), Entry { user, handoff });
        Registered {
            table: self,
            token: token.to_owned(),
        }
    }

    /// Looks `token` up for a request of `user`.
    pub fn find(&self, token: &str, user: Option<&str>) -> Found<T> {
        match self.map.lock().get(token) {
            Some(entry) if entry.user.as_deref() != user => Found::OtherUser,
            Some(entry) if !entry.handoff.is_closed() => Found::Connection(entry.handoff.clone()),
            _ => Found::None,
        }
    }
}

/// Keeps a connection in the [`Resumable`] table while it lives.
pub struct Registered<'a, T> {
    table: &'a Resumable<T>,
    token: String,
}

impl<T> fmt::Debug for Registered<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered").finish_non_exhaustive()
    }
}

impl<T> Drop for Registered<'_, T> {
    fn drop(&mut self) {
        self.table.map.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn acks_release_what_they_cover_and_make_room() {
        let replay = Replay::new(25);
        for _ in 0..3 {
            replay.record(&frame(10));
        }
        assert!(replay.is_full());
        replay.ack(2).unwrap();
        assert!(!replay.is_full());
        assert_eq!(replay.resume(), (3, vec![frame(10)]));
        // An old Ack changes nothing; one beyond what was sent is refused.
        replay.ack(1).unwrap();
        assert_eq!(
            replay.ack(4),
            Err(SequenceError::AckBeyondSent { acked: 4, sent: 3 })
        );
        replay.ack(3).unwrap();
        assert_eq!(replay.resume(), (4, vec![]));
    }

    #[test]
    fn the_clients_replays_are_dropped_after_its_sequence() {
        let replay = Replay::new(100);
        for _ in 0..3 {
            assert_eq!(replay.inbound(), Inbound::Handle);
        }
        assert_eq!(replay.take_ack(), Some(3));
        assert_eq!(replay.take_ack(), None);
        let _ = replay.resume();
        // The new transport acknowledges again.
        assert_eq!(replay.take_ack(), Some(3));
        // Before the client's Sequence, nothing counts.
        assert_eq!(replay.inbound(), Inbound::Skip);
        // The client resends 2 and 3 (not acknowledged on its side), then 4.
        replay.sequence(2).unwrap();
        assert_eq!(replay.inbound(), Inbound::Skip);
        assert_eq!(replay.inbound(), Inbound::Skip);
        assert_eq!(replay.inbound(), Inbound::Handle);
        assert_eq!(replay.take_ack(), Some(4));
        assert_eq!(
            replay.sequence(9),
            Err(SequenceError::SequenceBeyondReceived {
                sequence: 9,
                received: 4
            })
        );
        assert_eq!(replay.sequence(0), Err(SequenceError::SequenceZero));
    }

    #[tokio::test]
    async fn a_newer_transport_replaces_one_not_yet_taken_until_the_end() {
        let handoff = Handoff::new();
        assert_eq!(handoff.put(1), Ok(None));
        assert_eq!(handoff.put(2), Ok(Some(1)));
        assert_eq!(handoff.take().await, 2);
        assert_eq!(handoff.put(3), Ok(None));
        assert_eq!(handoff.close(), Some(3));
        assert_eq!(handoff.put(4), Err(4));
    }

    #[test]
    fn a_token_finds_its_connection_for_its_user_only() {
        let table: Resumable<u8> = Resumable::default();
        let handoff = Handoff::new();
        let guard = table.insert("secret-token", Some("alice".into()), handoff.clone());
        assert!(matches!(
            table.find("secret-token", Some("alice")),
            Found::Connection(_)
        ));
        assert!(matches!(
            table.find("secret-token", Some("bob")),
            Found::OtherUser
        ));
        assert!(matches!(table.find("other", Some("alice")), Found::None));
        assert!(!format!("{table:?}{guard:?}").contains("secret"));
        handoff.close();
        assert!(matches!(
            table.find("secret-token", Some("alice")),
            Found::None
        ));
        drop(guard);
        assert!(matches!(
            table.find("secret-token", Some("alice")),
            Found::None
        ));
    }
}
