//! What the client can fail with.

/// Everything the client can fail with. Messages never contain a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached.
    #[error("cannot reach the gateway at {url}: {reason}")]
    Connect {
        /// Gateway URL (without credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// The gateway refused our credentials.
    #[error("the gateway refused authentication ({code}): {message}; check the gateway token")]
    Auth {
        /// `details.code` or `code`.
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// The device must be approved by an operator.
    #[error(
        "device {device_id} is not paired yet: on the gateway host run `openclaw devices approve {request_id}`"
    )]
    PairingRequired {
        /// Our device id.
        device_id: String,
        /// The pairing request to approve.
        request_id: String,
    },
    /// The gateway sent something we cannot use.
    #[error("gateway protocol error: {0}")]
    Protocol(String),
    /// A request was refused.
    #[error("{method} failed ({code}): {message}")]
    Rejected {
        /// The method.
        method: String,
        /// Error code.
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection dropped while a request or reply was in flight.
    #[error("the gateway connection was lost")]
    Disconnected,
    /// The agent's run failed.
    #[error("the agent's reply failed: {0}")]
    Run(String),
    /// The client was shut down.
    #[error("the gateway client is closed")]
    Closed,
}

impl ClientError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Auth { .. } => "auth",
            Self::PairingRequired { .. } => "pairing",
            Self::Protocol(_) => "protocol",
            Self::Rejected { .. } => "rejected",
            Self::Timeout(_) => "timeout",
            Self::Disconnected => "disconnected",
            Self::Run(_) => "run",
            Self::Closed => "closed",
        }
    }

    /// Whether retrying the same thing later can succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Auth { .. } | Self::Closed)
    }
}
