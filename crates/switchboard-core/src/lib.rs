//! placeholder until the crate docs are written
pub mod protocol;

mod connection;
mod error;
mod hub;
mod id;
mod manager;
mod memory;
mod message;
mod pending;
mod stats;
mod store;

pub use connection::{
    Connection, ConnectionOptions, ConnectionReceiver, DEFAULT_QUEUE_CAPACITY, Delivery,
    SlowConsumerPolicy,
};
pub use error::{BoxError, Error, Result};
pub use hub::{
    ArgumentError, CallContext, Client, Clients, DEFAULT_CLIENT_RESULT_TIMEOUT, FromArguments, Hub,
    HubBuilder, HubContext, HubError, HubOptions, HubSession,
};
pub use id::{ConnectionId, random_token};
pub use manager::HubLifetimeManager;
pub use memory::InMemoryHubLifetimeManager;
pub use message::SerializedMessage;
pub use pending::{
    ClientResponse, InvocationIds, InvokeOptions, PendingInvocations, RemoveOnDrop, ResultSender,
    outcome_to_result, wait_for_response,
};
pub use stats::ManagerStats;
pub use store::{ConnectionStore, Inserted, Membership, Removed};
