//! Presence queries in flight: the answers gathered so far for each, until
//! every server that received the query has answered or time is up.
//!
//! A query goes out on the user's or group's channel, so exactly the
//! servers holding some of its connections receive it, and the backplane's
//! receiver count says how many answers to expect. Answers may arrive
//! before that count is known (the publish returns after the first
//! subscriber got it), so a gathering starts without it.

use std::collections::HashMap;

use parking_lot::Mutex;
use switchboard_core::{ConnectionId, Presence};
use switchboard_protocol as wire;
use tokio::sync::oneshot;

/// The most presence queries from other servers being answered here at
/// once; beyond it a query gets no answer (its sender reports this server
/// as unanswered) and is counted as refused.
pub(crate) const MAX_ANSWERING: usize = 1_000;

/// The queries this server asked and waits on, by id.
#[derive(Debug, Default)]
pub(crate) struct Gatherings {
    pending: Mutex<HashMap<u64, Gathering>>,
}

#[derive(Debug)]
struct Gathering {
    presence: Presence,
    /// The most ids kept.
    limit: usize,
    answered: u64,
    /// How many answers to wait for, once the publish has said.
    expected: Option<u64>,
    /// Told when the last expected answer is in.
    done: Option<oneshot::Sender<()>>,
}

impl Gathering {
    fn finish_if_complete(&mut self) {
        if self
            .expected
            .is_some_and(|expected| self.answered >= expected)
        {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Gatherings {
    /// Starts gathering answers to query `id`; the receiver fires once all
    /// expected answers are in.
    pub(crate) fn start(&self, id: u64, limit: usize) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        self.pending.lock().insert(
            id,
            Gathering {
                presence: Presence::default(),
                limit,
                answered: 0,
                expected: None,
                done: Some(done),
            },
        );
        finished
    }

    /// Sets how many answers query `id` waits for.
    pub(crate) fn expect(&self, id: u64, expected: u64) {
        if let Some(gathering) = self.pending.lock().get_mut(&id) {
            gathering.expected = Some(expected);
            gathering.finish_if_complete();
        }
    }

    /// Adds one server's answer. Answers to queries no one waits on (any
    /// more) are ignored.
    pub(crate) fn answer(&self, reply: wire::PresenceReply) {
        let mut pending = self.pending.lock();
        let Some(gathering) = pending.get_mut(&reply.id) else {
            return;
        };
        let limit = gathering.limit;
        gathering.presence.add(
            reply.connection_ids.into_iter().map(ConnectionId::from),
            reply.count,
            limit,
        );
        gathering.answered += 1;
        gathering.finish_if_complete();
    }

    /// Ends query `id`: what was gathered, with the servers that did not
    /// answer counted (unknown when the count of receivers never came).
    pub(crate) fn finish(&self, id: u64) -> Presence {
        let Some(gathering) = self.pending.lock().remove(&id) else {
            return Presence::default();
        };
        let mut presence = gathering.presence;
        presence.unanswered = gathering
            .expected
            .map_or(0, |expected| expected.saturating_sub(gathering.answered));
        presence
    }

    /// Forgets query `id` (its caller stopped waiting).
    pub(crate) fn forget(&self, id: u64) {
        self.pending.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn reply(id: u64, ids: &[&str], count: u64) -> wire::PresenceReply {
        wire::PresenceReply {
            id,
            connection_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            count,
        }
    }

    #[tokio::test]
    async fn answers_before_the_count_are_kept() {
        let gatherings = Gatherings::default();
        let mut done = gatherings.start(1, 10);
        gatherings.answer(reply(1, &["a"], 1));
        gatherings.answer(reply(1, &["b", "c"], 2));
        assert!(done.try_recv().is_err(), "not done before the count");
        gatherings.expect(1, 2);
        done.await.unwrap();
        let presence = gatherings.finish(1);
        assert_eq!(presence.count, 3);
        assert_eq!(presence.connections.len(), 3);
        assert!(presence.is_complete());
    }

    #[tokio::test]
    async fn missing_answers_are_counted() {
        let gatherings = Gatherings::default();
        let _done = gatherings.start(2, 1);
        gatherings.expect(2, 3);
        gatherings.answer(reply(2, &["a", "b"], 2));
        gatherings.answer(reply(9, &["x"], 1));
        let presence = gatherings.finish(2);
        assert_eq!(presence.unanswered, 2);
        assert_eq!(presence.count, 2);
        assert_eq!(presence.connections.len(), 1, "the limit holds");
        // Finished: a late answer changes nothing and is no error.
        gatherings.answer(reply(2, &["c"], 1));
        assert_eq!(gatherings.finish(2), Presence::default());
    }
}
