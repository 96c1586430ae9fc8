//! Group commands from other servers, waiting to be applied.
//!
//! Applying a command can wait for the backplane (a group's first local member
//! subscribes to the group's channel), so commands are applied concurrently
//! across connections; the commands of one connection are applied one after
//! the other, in the order they arrived, so that an add then a remove of the
//! same connection never swap. At most `limit` commands are held (running
//! or waiting); one beyond that is refused at once, and the sender gets an
//! immediate error instead of waiting out its acknowledgement timeout.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use switchboard_protocol::GroupCommand;

/// What [`CommandQueue::submit`] did with a command.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// No other command of its connection is held: the caller runs it now,
    /// then the connection's later ones ([`CommandQueue::next`]).
    Run(GroupCommand),
    /// Queued behind a command of the same connection.
    Queued,
    /// Refused: `limit` commands are held already.
    Overloaded(GroupCommand),
}

/// The held commands, by connection.
#[derive(Debug)]
pub(crate) struct CommandQueue {
    /// The most commands held at once.
    limit: usize,
    /// Under one short lock: a few map operations per command, never
    /// across `.await`.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Commands held: running, or waiting behind one of their connection.
    held: usize,
    /// A connection with a running command -> the commands waiting after
    /// it. An entry exists exactly while one of its commands runs.
    waiting: HashMap<String, VecDeque<GroupCommand>>,
}

impl CommandQueue {
    /// An empty queue holding at most `limit` commands (at least 1).
    pub(crate) fn new(limit: usize) -> CommandQueue {
        CommandQueue {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Takes a command that just arrived.
    pub(crate) fn submit(&self, command: GroupCommand) -> Submitted {
        let mut state = self.state.lock();
        if state.held >= self.limit {
            return Submitted::Overloaded(command);
        }
        state.held += 1;
        match state.waiting.get_mut(&command.connection_id) {
            Some(queue) => {
                queue.push_back(command);
                Submitted::Queued
            }
            None => {
                state
                    .waiting
                    .insert(command.connection_id.clone(), VecDeque::new());
                Submitted::Run(command)
            }
        }
    }

    /// Called when a command of `connection_id` returned by
    /// [`submit`](Self::submit) or by `next` has been applied: the next
    /// command of that connection to run, or `None` when there is none (the
    /// connection's turn ends).
    pub(crate) fn next(&self, connection_id: &str) -> Option<GroupCommand> {
        let mut state = self.state.lock();
        state.held = state.held.saturating_sub(1);
        let next = state.waiting.get_mut(connection_id)?.pop_front();
        if next.is_none() {
            state.waiting.remove(connection_id);
        }
        next
    }

    /// How many commands are held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64, connection: &str) -> GroupCommand {
        GroupCommand {
            id,
            connection_id: connection.to_owned(),
            ..GroupCommand::default()
        }
    }

    fn id(submitted: Submitted) -> Option<u64> {
        match submitted {
            Submitted::Run(command) => Some(command.id),
            Submitted::Queued | Submitted::Overloaded(_) => None,
        }
    }

    #[test]
    fn one_connection_in_order_others_at_once() {
        let queue = CommandQueue::new(10);
        assert_eq!(id(queue.submit(command(1, "a"))), Some(1));
        assert!(matches!(queue.submit(command(2, "a")), Submitted::Queued));
        assert_eq!(id(queue.submit(command(3, "b"))), Some(3));
        assert!(matches!(queue.submit(command(4, "a")), Submitted::Queued));
        assert_eq!(queue.len(), 4);
        assert_eq!(queue.next("a").map(|c| c.id), Some(2));
        assert_eq!(queue.next("b").map(|c| c.id), None);
        assert_eq!(queue.next("a").map(|c| c.id), Some(4));
        assert_eq!(queue.next("a").map(|c| c.id), None);
        assert_eq!(queue.len(), 0);
        // The connection's turn ended: its next command runs at once.
        assert_eq!(id(queue.submit(command(5, "a"))), Some(5));
    }

    #[test]
    fn past_the_limit_commands_are_refused() {
        let queue = CommandQueue::new(2);
        assert_eq!(id(queue.submit(command(1, "a"))), Some(1));
        assert!(matches!(queue.submit(command(2, "a")), Submitted::Queued));
        assert!(matches!(
            queue.submit(command(3, "b")),
            Submitted::Overloaded(c) if c.id == 3
        ));
        assert_eq!(queue.next("a").map(|c| c.id), Some(2));
        assert_eq!(id(queue.submit(command(4, "b"))), Some(4));
    }
}
