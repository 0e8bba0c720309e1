//! What a backend can fail with, and which backend it was.

/// What a backend can fail with. The HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("User not found")]
    UserNotFound,
    #[error("Conversation not found")]
    ConversationNotFound,
    #[error("Utterance not found")]
    UtteranceNotFound,
    /// A backend is unreachable or overloaded; the request may be retried.
    /// The message is errata's own; the driver's error is the source.
    #[error("{backend}: {context}")]
    Unavailable {
        backend: Backend,
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A bug or a broken invariant (500).
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The configuration cannot work (a bad keyspace name, a consistency
    /// level that does not exist, …).
    #[error("{0}")]
    Config(String),
}

/// Any error a backend's driver returns, kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which backend did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Cql,
    Redis,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Cql => "cql",
            Self::Redis => "redis",
        })
    }
}

impl Backend {
    /// The short, stable reason a response gives (never a driver's text).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite store unavailable",
            Self::Cql => "CQL store unavailable",
            Self::Redis => "Redis unavailable",
        }
    }
}

impl StoreError {
    /// `backend` did not answer while doing `context`, because of `source`.
    pub fn unavailable(
        backend: Backend,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Unavailable {
            backend,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// `backend` cannot serve this now, for a reason of errata's own.
    pub fn busy(backend: Backend, context: impl Into<String>) -> Self {
        Self::Unavailable {
            backend,
            context: context.into(),
            source: None,
        }
    }

    /// Doing `context` failed because of `source`, which should not happen.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A broken invariant with no underlying error.
    pub fn bug(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// What a response may say about this error: a short, stable reason,
    /// never a driver's message or a backend's address (those are logged).
    pub fn public_reason(&self) -> String {
        match self {
            Self::Unavailable {
                backend,
                source: Some(_),
                ..
            } => backend.reason().to_owned(),
            // errata's own words, about the request (retry it, …).
            Self::Unavailable {
                backend, context, ..
            } => format!("{}: {context}", backend.reason()),
            Self::Internal { .. } | Self::Config(_) => "Internal Server Error".to_owned(),
            other => other.to_string(),
        }
    }

    /// The whole chain, for logs: this error and every source below it.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}
