//! placeholder
mod manager;
mod options;
mod subscriptions;

pub use manager::RedisHubLifetimeManager;
pub use options::RedisOptions;
