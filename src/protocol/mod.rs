//! The PostgreSQL wire protocol as far as a pass-through proxy needs it:
//! framing, the few messages pgveil builds or reads, startup packets, SCRAM
//! and TLS-or-plain streams.

pub mod frame;
pub mod messages;
pub mod scram;
pub mod startup;
pub mod stream;

/// A client or backend broke the protocol.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtocolError {
    /// A message declared a length below 4.
    #[error("invalid message length {length} for message type {:?}", char::from(*tag))]
    BadLength {
        /// Message type byte.
        tag: u8,
        /// Declared length.
        length: i64,
    },
    /// A message is longer than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max_len} bytes (max_message_bytes)")]
    TooLong {
        /// Message type byte.
        tag: u8,
        /// Its length.
        len: usize,
        /// The limit.
        max_len: usize,
    },
    /// A message's fields don't add up.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// Text that must be UTF-8 is not.
    #[error("invalid byte sequence for encoding \"UTF8\"")]
    InvalidUtf8,
    /// The startup packet is unusable.
    #[error("{0}")]
    BadStartup(String),
    /// The connection failed or closed.
    #[error("connection error: {0}")]
    Io(std::sync::Arc<std::io::Error>),
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        ProtocolError::Io(std::sync::Arc::new(e))
    }
}

impl ProtocolError {
    /// The SQLSTATE a client is told.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::InvalidUtf8 => "22021",
            ProtocolError::TooLong { .. } => "54000",
            ProtocolError::Io(_) => "08006",
            _ => "08P01",
        }
    }
}
