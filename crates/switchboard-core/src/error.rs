use std::time::Duration;

use crate::protocol::ProtocolError;

/// A boxed error from a backend, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a lifetime-manager or hub operation.
///
/// Variants say what happened and to what. Messages for the client-result
/// variants follow SignalR's wording, so clients see familiar text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server holds a connection with this id.
    #[error("Connection '{connection_id}' does not exist.")]
    ConnectionNotFound {
        /// The id that was asked for.
        connection_id: String,
    },
    /// A connection with this id is already registered.
    #[error("a connection with id '{connection_id}' is already registered")]
    DuplicateConnection {
        /// The id that was registered twice.
        connection_id: String,
    },
    /// The connection went away before it answered a client-result invocation.
    #[error("Connection '{connection_id}' disconnected.")]
    ConnectionDisconnected {
        /// The connection that closed.
        connection_id: String,
    },
    /// The client answered a client-result invocation with an error.
    #[error("{message}")]
    ClientError {
        /// The error text the client sent.
        message: String,
    },
    /// The client did not answer a client-result invocation in time.
    #[error("connection '{connection_id}' did not answer within {timeout:?}")]
    ClientResultTimeout {
        /// The connection that was asked.
        connection_id: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The caller cancelled the operation.
    #[error("the invocation was canceled")]
    Canceled,
    /// A completion arrived for an invocation id nobody is waiting for.
    #[error("no pending invocation with id '{invocation_id}'")]
    UnknownInvocation {
        /// The id in the completion.
        invocation_id: String,
    },
    /// A completion arrived from a connection other than the one invoked.
    #[error("Connection ID '{connection_id}' is not valid for invocation ID '{invocation_id}'.")]
    WrongConnection {
        /// The invocation that was completed.
        invocation_id: String,
        /// The connection that tried to complete it.
        connection_id: String,
    },
    /// An invocation id was registered twice.
    #[error("an invocation with id '{invocation_id}' is already pending")]
    DuplicateInvocation {
        /// The id used twice.
        invocation_id: String,
    },
    /// The client's result could not be converted into the expected type.
    #[error("the client's result could not be read: {reason}")]
    InvalidResult {
        /// The deserializer's explanation.
        reason: String,
    },
    /// The server that owns a connection did not acknowledge a group change in time.
    #[error(
        "no acknowledgement within {timeout:?} for {action} of connection '{connection_id}' in group '{group}'"
    )]
    AckTimeout {
        /// "add" or "remove".
        action: &'static str,
        /// The connection.
        connection_id: String,
        /// The group.
        group: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The server that owns a connection refused a group change.
    #[error("group command rejected by the owning server: {reason}")]
    GroupCommandRejected {
        /// The owner's explanation.
        reason: String,
    },
    /// The backplane cannot be reached; the operation was not carried out.
    #[error("backplane unavailable: {reason}")]
    BackplaneUnavailable {
        /// What the backplane reported.
        reason: String,
        /// The backend's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The backplane failed in some other way.
    #[error("backplane error: {0}")]
    Backplane(#[source] BoxError),
    /// A message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A name (hub, group, user, prefix) cannot be used.
    #[error("invalid {kind} name '{name}': {reason}")]
    InvalidName {
        /// What kind of name.
        kind: &'static str,
        /// The name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A setting is not valid (for example a malformed Redis URL).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A hub message could not be encoded or decoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A presence question could not be answered: servers holding some of
    /// the subject's connections did not answer in time, and those that
    /// did found none.
    #[error("presence unknown: {unanswered} server(s) did not answer in time")]
    PresenceUnknown {
        /// How many servers did not answer.
        unanswered: u64,
    },
    /// The manager has been shut down.
    #[error("the lifetime manager is shut down")]
    Shutdown,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
