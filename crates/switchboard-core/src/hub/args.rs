use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::upload::{OpenError, UploadStream, Uploads};
use crate::protocol::RawValue;

/// Why an invocation's arguments do not fit the method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// The number of arguments differs from what the method takes.
    #[error("Invocation provides {provided} argument(s) but target expects {expected}.")]
    Arity {
        /// Arguments sent.
        provided: usize,
        /// Arguments the method takes.
        expected: usize,
    },
    /// The number of upload streams (`streamIds`) differs from the
    /// method's [`UploadStream`] arguments.
    #[error("Client sent {provided} stream(s), Hub method expects {expected}.")]
    Streams {
        /// Stream ids sent.
        provided: usize,
        /// Upload streams the method takes.
        expected: usize,
    },
    /// One argument has the wrong type or shape.
    #[error("Argument {index} is invalid: {reason}")]
    Invalid {
        /// Zero-based position of the argument.
        index: usize,
        /// The deserializer's explanation.
        reason: String,
    },
    /// An upload stream could not be opened: its id is already open on the
    /// connection, or the connection has as many open as it may.
    #[error("{0}")]
    Upload(String),
}

/// What an invocation supplies to its method's arguments: the encoded
/// values, and the upload streams it named.
pub struct Arguments<'a> {
    values: &'a [RawValue],
    next_value: usize,
    stream_ids: &'a [String],
    next_stream: usize,
    uploads: Option<&'a Uploads>,
    cancel: &'a CancellationToken,
}

impl std::fmt::Debug for Arguments<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arguments")
            .field("values", &self.values.len())
            .field("stream_ids", &self.stream_ids)
            .finish_non_exhaustive()
    }
}

impl<'a> Arguments<'a> {
    /// The arguments of an invocation; upload streams are opened in
    /// `uploads` and end when `cancel` fires.
    pub(crate) fn new(
        values: &'a [RawValue],
        stream_ids: &'a [String],
        uploads: Option<&'a Uploads>,
        cancel: &'a CancellationToken,
    ) -> Arguments<'a> {
        Arguments {
            values,
            next_value: 0,
            stream_ids,
            next_stream: 0,
            uploads,
            cancel,
        }
    }

    fn check_counts(&self, values: usize, streams: usize) -> Result<(), ArgumentError> {
        if self.values.len() != values {
            return Err(ArgumentError::Arity {
                provided: self.values.len(),
                expected: values,
            });
        }
        if self.stream_ids.len() != streams {
            return Err(ArgumentError::Streams {
                provided: self.stream_ids.len(),
                expected: streams,
            });
        }
        Ok(())
    }

    fn value<T: DeserializeOwned>(&mut self) -> Result<T, ArgumentError> {
        let index = self.next_value;
        let raw = self.values.get(index).ok_or(ArgumentError::Arity {
            provided: self.values.len(),
            expected: index + 1,
        })?;
        self.next_value += 1;
        raw.deserialize().map_err(|e| ArgumentError::Invalid {
            index,
            reason: match e {
                crate::protocol::ProtocolError::InvalidValue(reason) => reason,
                other => other.to_string(),
            },
        })
    }

    fn stream<T>(&mut self) -> Result<UploadStream<T>, ArgumentError> {
        let index = self.next_stream;
        let (Some(id), Some(uploads)) = (self.stream_ids.get(index), self.uploads) else {
            return Err(ArgumentError::Streams {
                provided: self.stream_ids.len(),
                expected: index + 1,
            });
        };
        self.next_stream += 1;
        uploads.open(id, self.cancel.clone()).map_err(|e| match e {
            OpenError::InUse(id) => {
                ArgumentError::Upload(format!("Stream ID '{id}' is already in use."))
            }
            OpenError::TooMany(limit) => ArgumentError::Upload(format!(
                "The connection already has {limit} upload streams open, the most allowed."
            )),
        })
    }
}

/// One argument of a hub method: a `serde::Deserialize` value read from
/// the invocation's `arguments`, or an [`UploadStream`] fed by one of its
/// `streamIds`.
pub trait HubArgument: Sized + Send + 'static {
    /// Whether the argument is an upload stream.
    const IS_STREAM: bool;

    /// Reads the argument.
    fn read(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError>;
}

impl<T: DeserializeOwned + Send + 'static> HubArgument for T {
    const IS_STREAM: bool = false;

    fn read(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError> {
        arguments.value()
    }
}

impl<T: DeserializeOwned + Send + 'static> HubArgument for UploadStream<T> {
    const IS_STREAM: bool = true;

    fn read(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError> {
        arguments.stream()
    }
}

/// The typed arguments of a hub method: a tuple of up to eight
/// [`HubArgument`]s, that is `serde::Deserialize` types, each read from one
/// argument of the invocation, and [`UploadStream`]s, each fed by one of
/// its stream ids.
///
/// Implemented for `()`, `(A,)`, `(A, B)`, ... `(A, B, C, D, E, F, G, H)`.
pub trait FromArguments: Sized + Send + 'static {
    /// How many encoded arguments the method takes.
    const ARITY: usize;
    /// How many upload streams the method takes.
    const STREAMS: usize;

    /// Reads the arguments; the counts must equal [`FromArguments::ARITY`]
    /// and [`FromArguments::STREAMS`].
    fn from_arguments(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError>;
}

impl FromArguments for () {
    const ARITY: usize = 0;
    const STREAMS: usize = 0;
    fn from_arguments(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError> {
        arguments.check_counts(0, 0)
    }
}

macro_rules! tuple_arguments {
    ($($name:ident),+) => {
        impl<$($name),+> FromArguments for ($($name,)+)
        where
            $($name: HubArgument),+
        {
            const ARITY: usize = 0 $(+ (!<$name as HubArgument>::IS_STREAM) as usize)+;
            const STREAMS: usize = 0 $(+ (<$name as HubArgument>::IS_STREAM) as usize)+;
            fn from_arguments(arguments: &mut Arguments<'_>) -> Result<Self, ArgumentError> {
                arguments.check_counts(Self::ARITY, Self::STREAMS)?;
                Ok(($(<$name as HubArgument>::read(arguments)?,)+))
            }
        }
    };
}

tuple_arguments!(A);
tuple_arguments!(A, B);
tuple_arguments!(A, B, C);
tuple_arguments!(A, B, C, D);
tuple_arguments!(A, B, C, D, E);
tuple_arguments!(A, B, C, D, E, F);
tuple_arguments!(A, B, C, D, E, F, G);
tuple_arguments!(A, B, C, D, E, F, G, H);
