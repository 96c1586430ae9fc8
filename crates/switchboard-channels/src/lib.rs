//! The Redis channel names of the switchboard backplane: one constructor per
//! channel kind, and a parser that turns an incoming channel name back into its
//! kind and the name it carries. A [`Channels`] value is built once per hub
//! from a deployment-wide prefix and the hub name; it validates both, is cheap
//! to clone, and does no I/O.
//!
//! ```
//! use switchboard_channels::{ChannelKind, Channels};
//!
//! # fn main() -> Result<(), switchboard_channels::ChannelError> {
//! let channels = Channels::new("myapp:", "chat")?;
//!
//! let room = channels.group("room-1");
//! assert_eq!(room, "myapp:chat:group:room-1");
//! assert_eq!(channels.all(), "myapp:chat:all");
//! assert_eq!(channels.ack("server-a"), "myapp:chat:internal:ack:server-a");
//!
//! // An incoming channel name tells which kind of message it carries.
//! assert_eq!(channels.parse(&room), Some(ChannelKind::Group("room-1")));
//! // Group names are literal: `user:x` is a group called `user:x`.
//! assert_eq!(
//!     channels.parse(&channels.group("user:x")),
//!     Some(ChannelKind::Group("user:x")),
//! );
//! // Channels of another hub are not ours.
//! assert_eq!(channels.parse("myapp:other:all"), None);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! Every channel of a hub starts with the same *base*, `{prefix}{hub}:`,
//! followed by a kind segment and, for most kinds, a name:
//!
//! | kind           | channel                                   |
//! |----------------|-------------------------------------------|
//! | all            | `{prefix}{hub}:all`                       |
//! | connection     | `{prefix}{hub}:connection:{id}`           |
//! | group          | `{prefix}{hub}:group:{name}`              |
//! | user           | `{prefix}{hub}:user:{id}`                 |
//! | group commands | `{prefix}{hub}:internal:groups`           |
//! | ack            | `{prefix}{hub}:internal:ack:{server}`     |
//! | return         | `{prefix}{hub}:internal:return:{server}`  |
//!
//! Connection ids, group names, user ids and server names are placed after
//! their kind segment as they are, without escaping. That is safe because:
//!
//! - switchboard only ever uses `SUBSCRIBE`, never `PSUBSCRIBE`, so a name
//!   such as `*`, `a?b` or `[x]` is matched literally by Redis;
//! - the kind segment right after the base is one of a fixed set of words,
//!   none of which is a prefix of another once its `:` is included, so a
//!   channel name has exactly one reading: [`Channels::parse`] of
//!   `group("user:x")` is [`ChannelKind::Group`]`("user:x")`, never a user;
//! - the hub may not contain `:`, so the base ends at the first `:` after the
//!   prefix and two hubs under one prefix never share channels.
//!
//! The prefix separates deployments sharing one Redis; it may contain `:`.
//! All servers of one deployment must use the same prefix, and two
//! deployments should pick prefixes of which neither starts with the other
//! followed by a hub name (`app:` and `app:chat:` would overlap).
//!
//! # Errors
//!
//! [`Channels::new`] rejects a hub or prefix that could make names ambiguous
//! or be mistaken for a pattern, with [`ChannelError::InvalidHub`] or
//! [`ChannelError::InvalidPrefix`]; [`validate_server_name`] rejects a server
//! name unfit for the ack and return channels with
//! [`ChannelError::InvalidServerName`]. Each carries an [`InvalidReason`]
//! that says what was wrong. Building or parsing a channel name never fails
//! otherwise: a channel that is not one of ours parses to `None`.

use std::fmt;
use std::sync::Arc;

/// The longest hub name [`Channels::new`] accepts, in bytes.
pub const MAX_HUB_LEN: usize = 256;

/// The longest prefix [`Channels::new`] accepts, in bytes.
pub const MAX_PREFIX_LEN: usize = 256;

// Kind segments, each written right after the base. None of them is a prefix
// of another, which is what makes every channel name unambiguous.
const ALL: &str = "all";
const CONNECTION: &str = "connection:";
const GROUP: &str = "group:";
const USER: &str = "user:";
const GROUP_COMMANDS: &str = "internal:groups";
const ACK: &str = "internal:ack:";
const RETURN: &str = "internal:return:";

/// The channel names of one hub under one prefix.
///
/// Build it once with [`Channels::new`]; cloning it is a reference-count
/// increment. Each constructor returns a freshly allocated `String` sized
/// exactly for the channel name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Channels {
    /// `{prefix}{hub}:`, shared by every channel of this hub; an `Arc` so that
    /// the many tasks holding a copy share one allocation.
    base: Arc<str>,
    /// Length of the prefix within `base`, so that `prefix()` and `hub()` can
    /// borrow from it instead of keeping copies.
    prefix_len: usize,
}

/// The kind of a channel, and the name it carries, as read by
/// [`Channels::parse`].
///
/// Names borrow from the parsed channel. The enum is deliberately exhaustive:
/// the backplane matches on every kind, and a new kind is a change every
/// server has to handle, so adding one is a breaking change of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind<'a> {
    /// `{base}all`: messages for every connection of the hub.
    All,
    /// `{base}connection:{id}`: messages for one connection.
    Connection(&'a str),
    /// `{base}group:{name}`: messages for the members of one group.
    Group(&'a str),
    /// `{base}user:{id}`: messages for every connection of one user.
    User(&'a str),
    /// `{base}internal:groups`: group membership commands between servers.
    GroupCommands,
    /// `{base}internal:ack:{server}`: acknowledgements for one server.
    Ack(&'a str),
    /// `{base}internal:return:{server}`: client results for one server.
    Return(&'a str),
}

/// What was wrong with a hub name, prefix or server name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The value is empty and must not be.
    Empty,
    /// The value is longer than allowed.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The most bytes allowed.
        max: usize,
    },
    /// The value contains a character that is not allowed there.
    ForbiddenChar {
        /// The character.
        ch: char,
        /// Its byte offset in the value.
        index: usize,
    },
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { len, max } => write!(f, "it is {len} bytes long, the limit is {max}"),
            Self::ForbiddenChar { ch, index } => {
                write!(
                    f,
                    "it contains the forbidden character {ch:?} at byte {index}"
                )
            }
        }
    }
}

/// A hub name, prefix or server name that cannot be used in channel names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The hub name is empty, too long, or contains `:`, a glob character
    /// (`*`, `?`, `[`, `]`, `\`), whitespace or a control character.
    #[error("invalid hub name {hub:?}: {reason}")]
    InvalidHub {
        /// The rejected hub name.
        hub: String,
        /// What is wrong with it.
        reason: InvalidReason,
    },
    /// The prefix is too long, or contains a glob character (`*`, `?`, `[`,
    /// `]`, `\`), whitespace or a control character.
    #[error("invalid channel prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
        /// What is wrong with it.
        reason: InvalidReason,
    },
    /// The server name is empty or contains whitespace or a control character.
    #[error("invalid server name {server:?}: {reason}")]
    InvalidServerName {
        /// The rejected server name.
        server: String,
        /// What is wrong with it.
        reason: InvalidReason,
    },
}

impl Channels {
    /// Builds the channel names of `hub` under `prefix`.
    ///
    /// The prefix may be empty and may contain `:` (`"myapp:"` is typical).
    ///
    /// # Errors
    ///
    /// [`ChannelError::InvalidHub`] if the hub is empty, longer than
    /// [`MAX_HUB_LEN`] bytes, or contains `:`, `*`, `?`, `[`, `]`, `\`,
    /// whitespace or a control character;
    /// [`ChannelError::InvalidPrefix`] if the prefix is longer than
    /// [`MAX_PREFIX_LEN`] bytes or contains `*`, `?`, `[`, `]`, `\`,
    /// whitespace or a control character.
    pub fn new(prefix: &str, hub: &str) -> Result<Self, ChannelError> {
        check(prefix, MAX_PREFIX_LEN, true, |c| is_glob(c) || is_blank(c)).map_err(|reason| {
            ChannelError::InvalidPrefix {
                prefix: prefix.to_owned(),
                reason,
            }
        })?;
        check(hub, MAX_HUB_LEN, false, |c| {
            c == ':' || is_glob(c) || is_blank(c)
        })
        .map_err(|reason| ChannelError::InvalidHub {
            hub: hub.to_owned(),
            reason,
        })?;
        let mut base = String::with_capacity(prefix.len() + hub.len() + 1);
        base.push_str(prefix);
        base.push_str(hub);
        base.push(':');
        Ok(Self {
            base: base.into(),
            prefix_len: prefix.len(),
        })
    }

    /// The prefix given to [`Channels::new`].
    pub fn prefix(&self) -> &str {
        &self.base[..self.prefix_len]
    }

    /// The hub name given to [`Channels::new`].
    pub fn hub(&self) -> &str {
        &self.base[self.prefix_len..self.base.len() - 1]
    }

    /// `{prefix}{hub}:`, the start of every channel of this hub.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{prefix}{hub}:all`, the channel every server subscribes to for
    /// messages to all connections.
    pub fn all(&self) -> String {
        self.join(ALL, "")
    }

    /// `{prefix}{hub}:connection:{id}`, subscribed to by the server holding
    /// that connection.
    pub fn connection(&self, id: &str) -> String {
        self.join(CONNECTION, id)
    }

    /// `{prefix}{hub}:group:{name}`, subscribed to by every server with a
    /// local member of that group.
    pub fn group(&self, name: &str) -> String {
        self.join(GROUP, name)
    }

    /// `{prefix}{hub}:user:{id}`, subscribed to by every server with a local
    /// connection of that user.
    pub fn user(&self, id: &str) -> String {
        self.join(USER, id)
    }

    /// `{prefix}{hub}:internal:groups`, the channel every server subscribes
    /// to for group membership commands.
    pub fn group_commands(&self) -> String {
        self.join(GROUP_COMMANDS, "")
    }

    /// `{prefix}{hub}:internal:ack:{server}`, where `server` receives the
    /// acknowledgements of the group commands it sent.
    ///
    /// The server name is used as given; check it once with
    /// [`validate_server_name`] when the server name is chosen.
    pub fn ack(&self, server: &str) -> String {
        self.join(ACK, server)
    }

    /// `{prefix}{hub}:internal:return:{server}`, where `server` receives the
    /// results of client invocations it is waiting for.
    ///
    /// The server name is used as given; check it once with
    /// [`validate_server_name`] when the server name is chosen.
    pub fn client_return(&self, server: &str) -> String {
        self.join(RETURN, server)
    }

    /// The channel name for `kind`: the inverse of [`Channels::parse`].
    ///
    /// `channels.channel(ChannelKind::Group(name))` equals
    /// `channels.group(name)`, and likewise for every kind.
    pub fn channel(&self, kind: ChannelKind<'_>) -> String {
        match kind {
            ChannelKind::All => self.all(),
            ChannelKind::Connection(id) => self.connection(id),
            ChannelKind::Group(name) => self.group(name),
            ChannelKind::User(id) => self.user(id),
            ChannelKind::GroupCommands => self.group_commands(),
            ChannelKind::Ack(server) => self.ack(server),
            ChannelKind::Return(server) => self.client_return(server),
        }
    }

    /// Reads the kind of `channel`, and the name it carries, borrowed from
    /// `channel`.
    ///
    /// Returns `None` when `channel` does not start with this hub's
    /// [`base`](Channels::base) or its kind segment is not one of ours. Any
    /// name after a kind segment is accepted as it is, including the empty
    /// name, so `parse(&channels.group(name))` is `Some(Group(name))` for
    /// every `name`.
    pub fn parse<'a>(&self, channel: &'a str) -> Option<ChannelKind<'a>> {
        let rest = channel.strip_prefix(&*self.base)?;
        if rest == ALL {
            Some(ChannelKind::All)
        } else if rest == GROUP_COMMANDS {
            Some(ChannelKind::GroupCommands)
        } else if let Some(id) = rest.strip_prefix(CONNECTION) {
            Some(ChannelKind::Connection(id))
        } else if let Some(name) = rest.strip_prefix(GROUP) {
            Some(ChannelKind::Group(name))
        } else if let Some(id) = rest.strip_prefix(USER) {
            Some(ChannelKind::User(id))
        } else if let Some(server) = rest.strip_prefix(ACK) {
            Some(ChannelKind::Ack(server))
        } else {
            rest.strip_prefix(RETURN).map(ChannelKind::Return)
        }
    }

    /// `{base}{segment}{name}` in a string of exactly that length.
    fn join(&self, segment: &str, name: &str) -> String {
        let mut channel = String::with_capacity(self.base.len() + segment.len() + name.len());
        channel.push_str(&self.base);
        channel.push_str(segment);
        channel.push_str(name);
        channel
    }
}

/// Checks that `server` can name a server in [`Channels::ack`] and
/// [`Channels::client_return`] channels: it must be non-empty and contain no
/// whitespace or control characters.
///
/// # Errors
///
/// [`ChannelError::InvalidServerName`] saying what is wrong.
pub fn validate_server_name(server: &str) -> Result<(), ChannelError> {
    check(server, usize::MAX, false, is_blank).map_err(|reason| ChannelError::InvalidServerName {
        server: server.to_owned(),
        reason,
    })
}

/// Characters that are special in Redis glob patterns.
fn is_glob(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '\\')
}

/// Whitespace and control characters, which make names hard to read in logs
/// and `redis-cli`.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn check(
    value: &str,
    max: usize,
    allow_empty: bool,
    forbidden: impl Fn(char) -> bool,
) -> Result<(), InvalidReason> {
    if value.is_empty() && !allow_empty {
        return Err(InvalidReason::Empty);
    }
    if value.len() > max {
        return Err(InvalidReason::TooLong {
            len: value.len(),
            max,
        });
    }
    match value.char_indices().find(|&(_, c)| forbidden(c)) {
        Some((index, ch)) => Err(InvalidReason::ForbiddenChar { ch, index }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn channels() -> Channels {
        Channels::new("app:", "chat").unwrap()
    }

    /// Every channel that `name` can appear in, with its kind.
    fn all_kinds(name: &str) -> [ChannelKind<'_>; 7] {
        [
            ChannelKind::All,
            ChannelKind::Connection(name),
            ChannelKind::Group(name),
            ChannelKind::User(name),
            ChannelKind::GroupCommands,
            ChannelKind::Ack(name),
            ChannelKind::Return(name),
        ]
    }

    /// Distinguishes the kinds, ignoring the name they carry.
    fn discriminant(kind: ChannelKind<'_>) -> u8 {
        match kind {
            ChannelKind::All => 0,
            ChannelKind::Connection(_) => 1,
            ChannelKind::Group(_) => 2,
            ChannelKind::User(_) => 3,
            ChannelKind::GroupCommands => 4,
            ChannelKind::Ack(_) => 5,
            ChannelKind::Return(_) => 6,
        }
    }

    #[test]
    fn constructors_follow_the_documented_scheme() {
        let c = channels();
        assert_eq!(c.all(), "app:chat:all");
        assert_eq!(c.connection("c1"), "app:chat:connection:c1");
        assert_eq!(c.group("room-1"), "app:chat:group:room-1");
        assert_eq!(c.user("alice"), "app:chat:user:alice");
        assert_eq!(c.group_commands(), "app:chat:internal:groups");
        assert_eq!(c.ack("srv-1"), "app:chat:internal:ack:srv-1");
        assert_eq!(c.client_return("srv-1"), "app:chat:internal:return:srv-1");
    }

    #[test]
    fn constructors_allocate_exactly() {
        let c = channels();
        for channel in [c.all(), c.group("room-1"), c.client_return("srv-1")] {
            assert_eq!(channel.capacity(), channel.len());
        }
    }

    #[test]
    fn accessors_return_the_parts() {
        let c = channels();
        assert_eq!(c.prefix(), "app:");
        assert_eq!(c.hub(), "chat");
        assert_eq!(c.base(), "app:chat:");

        let bare = Channels::new("", "h").unwrap();
        assert_eq!(bare.prefix(), "");
        assert_eq!(bare.hub(), "h");
        assert_eq!(bare.base(), "h:");
        assert_eq!(bare.all(), "h:all");
    }

    #[test]
    fn clones_share_the_base() {
        let c = channels();
        let d = c.clone();
        assert!(Arc::ptr_eq(&c.base, &d.base));
        assert_eq!(c, d);
    }

    #[test]
    fn parse_reads_every_kind() {
        let c = channels();
        assert_eq!(c.parse(&c.all()), Some(ChannelKind::All));
        assert_eq!(
            c.parse(&c.connection("c1")),
            Some(ChannelKind::Connection("c1"))
        );
        assert_eq!(c.parse(&c.group("g")), Some(ChannelKind::Group("g")));
        assert_eq!(c.parse(&c.user("u")), Some(ChannelKind::User("u")));
        assert_eq!(
            c.parse(&c.group_commands()),
            Some(ChannelKind::GroupCommands)
        );
        assert_eq!(c.parse(&c.ack("s")), Some(ChannelKind::Ack("s")));
        assert_eq!(
            c.parse(&c.client_return("s")),
            Some(ChannelKind::Return("s"))
        );
    }

    #[test]
    fn channel_is_the_inverse_of_parse() {
        let c = channels();
        for kind in all_kinds("x") {
            let name = c.channel(kind);
            assert_eq!(c.parse(&name), Some(kind));
        }
        assert_eq!(c.channel(ChannelKind::Group("g")), c.group("g"));
        assert_eq!(c.channel(ChannelKind::Return("s")), c.client_return("s"));
    }

    #[test]
    fn parse_rejects_foreign_channels() {
        let c = channels();
        for channel in [
            "",
            "app:",
            "app:chat",
            "app:chat:",
            "app:chat:al",
            "app:chat:all:",
            "app:chat:allx",
            "app:chat:group",
            "app:chat:users:x",
            "app:chat:internal:group",
            "app:chat:internal:groups:x",
            "app:chat:internal:ack",
            "app:chat:internal:return",
            "app:chat:internal:other:x",
            "app:chatroom:all",
            "app:other:all",
            "other:chat:all",
            "APP:CHAT:ALL",
            "app:chat:GROUP:x",
        ] {
            assert_eq!(c.parse(channel), None, "{channel:?}");
        }
    }

    #[test]
    fn parse_does_not_read_other_hubs() {
        let a = Channels::new("app:", "a").unwrap();
        let ab = Channels::new("app:", "ab").unwrap();
        assert_eq!(a.parse(&ab.all()), None);
        assert_eq!(ab.parse(&a.group("x")), None);
    }

    const AWKWARD: &[&str] = &[
        "",
        "*",
        "?",
        "[",
        "]",
        "[a-z]",
        "a?b*c",
        "\\",
        ":",
        "::",
        "a:b",
        "all",
        "user:x",
        "group:x",
        "connection:x",
        "internal:groups",
        "internal:ack:x",
        "with space",
        " ",
        "\t\n",
        "\u{0}",
        "grüße",
        "部屋",
        "🎉",
    ];

    #[test]
    fn awkward_names_stay_literal() {
        let c = channels();
        for &name in AWKWARD {
            for kind in all_kinds(name) {
                let channel = c.channel(kind);
                assert_eq!(c.parse(&channel), Some(kind), "{channel:?}");
            }
            assert!(c.group(name).ends_with(&format!(":group:{name}")));
        }
    }

    #[test]
    fn awkward_names_never_collide_across_kinds() {
        let c = channels();
        let mut seen = std::collections::HashMap::new();
        for &name in AWKWARD {
            for kind in all_kinds(name) {
                let channel = c.channel(kind);
                if let Some(previous) = seen.insert(channel.clone(), kind) {
                    assert_eq!(
                        discriminant(previous),
                        discriminant(kind),
                        "{channel:?} is both {previous:?} and {kind:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_lookalikes_differ() {
        let c = channels();
        assert_ne!(c.group("x"), c.user("x"));
        assert_ne!(c.group("user:x"), c.user("x"));
        assert_ne!(c.group(""), c.all());
        assert_ne!(c.user(""), c.group(""));
        assert_ne!(c.connection("all"), c.all());
        assert_ne!(c.ack(""), c.group_commands());
        assert_ne!(c.ack("x"), c.client_return("x"));
        assert_eq!(
            c.parse(&c.group("user:x")),
            Some(ChannelKind::Group("user:x"))
        );
    }

    #[test]
    fn hub_validation() {
        let cases: &[(&str, InvalidReason)] = &[
            ("", InvalidReason::Empty),
            ("a:b", InvalidReason::ForbiddenChar { ch: ':', index: 1 }),
            ("*", InvalidReason::ForbiddenChar { ch: '*', index: 0 }),
            ("a?", InvalidReason::ForbiddenChar { ch: '?', index: 1 }),
            ("[x", InvalidReason::ForbiddenChar { ch: '[', index: 0 }),
            ("x]", InvalidReason::ForbiddenChar { ch: ']', index: 1 }),
            ("a\\b", InvalidReason::ForbiddenChar { ch: '\\', index: 1 }),
            ("a b", InvalidReason::ForbiddenChar { ch: ' ', index: 1 }),
            (
                "é\u{a0}",
                InvalidReason::ForbiddenChar {
                    ch: '\u{a0}',
                    index: 2,
                },
            ),
            (
                "a\u{7f}",
                InvalidReason::ForbiddenChar {
                    ch: '\u{7f}',
                    index: 1,
                },
            ),
            ("\n", InvalidReason::ForbiddenChar { ch: '\n', index: 0 }),
        ];
        for (hub, reason) in cases {
            assert_eq!(
                Channels::new("p", hub),
                Err(ChannelError::InvalidHub {
                    hub: (*hub).to_owned(),
                    reason: *reason
                }),
            );
        }
        let long = "h".repeat(MAX_HUB_LEN + 1);
        assert_eq!(
            Channels::new("", &long),
            Err(ChannelError::InvalidHub {
                hub: long.clone(),
                reason: InvalidReason::TooLong {
                    len: MAX_HUB_LEN + 1,
                    max: MAX_HUB_LEN
                },
            }),
        );
        assert!(Channels::new("", &long[1..]).is_ok());
        assert!(Channels::new("", "Chat.Hub-1_é").is_ok());
    }

    #[test]
    fn prefix_validation() {
        assert!(Channels::new("", "h").is_ok());
        assert!(Channels::new("a:b:", "h").is_ok());
        let cases: &[(&str, InvalidReason)] = &[
            ("*", InvalidReason::ForbiddenChar { ch: '*', index: 0 }),
            ("a?", InvalidReason::ForbiddenChar { ch: '?', index: 1 }),
            ("[", InvalidReason::ForbiddenChar { ch: '[', index: 0 }),
            ("]", InvalidReason::ForbiddenChar { ch: ']', index: 0 }),
            ("\\", InvalidReason::ForbiddenChar { ch: '\\', index: 0 }),
            ("a b", InvalidReason::ForbiddenChar { ch: ' ', index: 1 }),
            (
                "\u{1b}",
                InvalidReason::ForbiddenChar {
                    ch: '\u{1b}',
                    index: 0,
                },
            ),
        ];
        for (prefix, reason) in cases {
            assert_eq!(
                Channels::new(prefix, "h"),
                Err(ChannelError::InvalidPrefix {
                    prefix: (*prefix).to_owned(),
                    reason: *reason
                }),
            );
        }
        let long = ":".repeat(MAX_PREFIX_LEN + 1);
        assert!(matches!(
            Channels::new(&long, "h"),
            Err(ChannelError::InvalidPrefix {
                reason: InvalidReason::TooLong { .. },
                ..
            })
        ));
        assert!(Channels::new(&long[1..], "h").is_ok());
    }

    #[test]
    fn prefix_is_checked_before_hub() {
        assert!(matches!(
            Channels::new("*", ""),
            Err(ChannelError::InvalidPrefix { .. })
        ));
    }

    #[test]
    fn server_name_validation() {
        assert_eq!(validate_server_name("host-1:ab12"), Ok(()));
        assert_eq!(validate_server_name("*[]?"), Ok(()));
        assert_eq!(
            validate_server_name(""),
            Err(ChannelError::InvalidServerName {
                server: String::new(),
                reason: InvalidReason::Empty
            })
        );
        assert_eq!(
            validate_server_name("a b"),
            Err(ChannelError::InvalidServerName {
                server: "a b".to_owned(),
                reason: InvalidReason::ForbiddenChar { ch: ' ', index: 1 }
            })
        );
        assert!(matches!(
            validate_server_name("a\u{0}"),
            Err(ChannelError::InvalidServerName { .. })
        ));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let err = Channels::new("", "a:b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid hub name \"a:b\": it contains the forbidden character ':' at byte 1"
        );
        let err = Channels::new("", "").unwrap_err();
        assert_eq!(err.to_string(), "invalid hub name \"\": it is empty");
    }

    /// Prefixes and hubs that `Channels::new` accepts.
    fn valid_parts() -> impl Strategy<Value = (String, String)> {
        ("[a-zA-Z0-9:._é-]{0,12}", "[a-zA-Z0-9._é-]{1,12}")
    }

    proptest! {
        #[test]
        fn every_kind_round_trips(name in any::<String>(), (prefix, hub) in valid_parts()) {
            let c = Channels::new(&prefix, &hub).unwrap();
            for kind in all_kinds(&name) {
                let channel = c.channel(kind);
                prop_assert!(channel.starts_with(c.base()));
                prop_assert_eq!(c.parse(&channel), Some(kind));
            }
        }

        #[test]
        fn channels_are_equal_only_for_equal_kinds(a in any::<String>(), b in any::<String>()) {
            let c = channels();
            for ka in all_kinds(&a) {
                for kb in all_kinds(&b) {
                    if discriminant(ka) != discriminant(kb) {
                        prop_assert_ne!(c.channel(ka), c.channel(kb));
                    } else {
                        prop_assert_eq!(c.channel(ka) == c.channel(kb), ka == kb);
                    }
                }
            }
        }

        #[test]
        fn lookalike_names_never_collide(
            name in "(all|connection:|group:|user:|internal:(groups|ack:|return:)?)?.{0,4}",
        ) {
            let c = channels();
            for ka in all_kinds(&name) {
                for kb in all_kinds("") {
                    if discriminant(ka) != discriminant(kb) {
                        prop_assert_ne!(c.channel(ka), c.channel(kb));
                    }
                }
            }
        }

        #[test]
        fn parse_never_panics(channel in any::<String>()) {
            let c = channels();
            if let Some(kind) = c.parse(&channel) {
                prop_assert_eq!(c.channel(kind), channel);
            }
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            rest in "(all|connection|group|user|internal|:|groups|ack|return){0,4}.{0,4}",
        ) {
            let c = channels();
            let channel = format!("{}{}", c.base(), rest);
            if let Some(kind) = c.parse(&channel) {
                prop_assert_eq!(c.channel(kind), channel);
            }
        }

        #[test]
        fn accepted_parts_are_kept(prefix in any::<String>(), hub in any::<String>()) {
            match Channels::new(&prefix, &hub) {
                Ok(c) => {
                    prop_assert_eq!(c.prefix(), prefix.as_str());
                    prop_assert_eq!(c.hub(), hub.as_str());
                    prop_assert!(!hub.is_empty() && !hub.contains(':'));
                }
                Err(ChannelError::InvalidPrefix { prefix: p, .. }) => prop_assert_eq!(p, prefix),
                Err(ChannelError::InvalidHub { hub: h, .. }) => prop_assert_eq!(h, hub),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
