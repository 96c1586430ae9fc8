use serde::de::DeserializeOwned;

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
    /// One argument has the wrong type or shape.
    #[error("Argument {index} is invalid: {reason}")]
    Invalid {
        /// Zero-based position of the argument.
        index: usize,
        /// The deserializer's explanation.
        reason: String,
    },
}

/// The typed arguments of a hub method: a tuple of up to eight
/// `serde::Deserialize` types, each read from one argument of the
/// invocation.
///
/// Implemented for `()`, `(A,)`, `(A, B)`, ... `(A, B, C, D, E, F, G, H)`.
pub trait FromArguments: Sized + Send + 'static {
    /// How many arguments the method takes.
    const ARITY: usize;

    /// Reads the arguments; the count must equal [`FromArguments::ARITY`].
    fn from_arguments(arguments: &[RawValue]) -> Result<Self, ArgumentError>;
}

fn check_arity(arguments: &[RawValue], expected: usize) -> Result<(), ArgumentError> {
    if arguments.len() == expected {
        Ok(())
    } else {
        Err(ArgumentError::Arity {
            provided: arguments.len(),
            expected,
        })
    }
}

fn argument<T: DeserializeOwned>(arguments: &[RawValue], index: usize) -> Result<T, ArgumentError> {
    let raw = arguments.get(index).ok_or(ArgumentError::Arity {
        provided: arguments.len(),
        expected: index + 1,
    })?;
    raw.deserialize().map_err(|e| ArgumentError::Invalid {
        index,
        reason: match e {
            crate::protocol::ProtocolError::InvalidValue(reason) => reason,
            other => other.to_string(),
        },
    })
}

impl FromArguments for () {
    const ARITY: usize = 0;
    fn from_arguments(arguments: &[RawValue]) -> Result<Self, ArgumentError> {
        check_arity(arguments, 0)
    }
}

macro_rules! tuple_arguments {
    ($count:expr; $($name:ident => $index:tt),+) => {
        impl<$($name),+> FromArguments for ($($name,)+)
        where
            $($name: DeserializeOwned + Send + 'static),+
        {
            const ARITY: usize = $count;
            fn from_arguments(arguments: &[RawValue]) -> Result<Self, ArgumentError> {
                check_arity(arguments, $count)?;
                Ok(($(argument::<$name>(arguments, $index)?,)+))
            }
        }
    };
}

tuple_arguments!(1; A => 0);
tuple_arguments!(2; A => 0, B => 1);
tuple_arguments!(3; A => 0, B => 1, C => 2);
tuple_arguments!(4; A => 0, B => 1, C => 2, D => 3);
tuple_arguments!(5; A => 0, B => 1, C => 2, D => 3, E => 4);
tuple_arguments!(6; A => 0, B => 1, C => 2, D => 3, E => 4, F => 5);
tuple_arguments!(7; A => 0, B => 1, C => 2, D => 3, E => 4, F => 5, G => 6);
tuple_arguments!(8; A => 0, B => 1, C => 2, D => 3, E => 4, F => 5, G => 6, H => 7);
