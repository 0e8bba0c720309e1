//! The writer's queue: the typed write requests, and the two holds on the
//! queue (the store's, which keeps the writer running, and a weak one for
//! background threads, which never does).
//!
//! Each request carries its input and its own reply channel, typed for what
//! it answers, so a caller always hears back the type it asked for.

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::writes::{ExpiredChunk, Expiry};
use crate::domain::Timezone;
use crate::store::{
    AnswerOutcome, Conversation, ErrorReport, NewAnswer, NewUser, NewUtterance, RecordOutcome,
    StoreError, User, Utterance,
};

/// Queued write requests before callers wait (back-pressure, bounded memory).
const QUEUE_DEPTH: usize = 4096;

/// Where the writer sends one request's answer.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum WriteRequest {
    CreateUser(NewUser, Reply<User>),
    CreateConversation(Uuid, Reply<Conversation>),
    CreateUtterance(NewUtterance, Reply<Utterance>),
    Record(ErrorReport, Reply<RecordOutcome>),
    RecordAnswer(NewAnswer, Reply<AnswerOutcome>),
    /// Removes a learner's answer (learner, answer).
    UndoAnswer(Uuid, Uuid, Reply<bool>),
    SetTimezone(Uuid, Timezone, Reply<User>),
    /// Erases a learner and everything of theirs.
    Erase(Uuid, Reply<()>),
    /// One chunk of a pass that forgets old request fingerprints.
    ExpireFingerprints(Expiry, Reply<ExpiredChunk>),
}

impl WriteRequest {
    /// The learner whose errors the request may change.
    pub fn learner(&self) -> Option<Uuid> {
        match self {
            Self::Record(report, _) => Some(report.user_id),
            Self::Erase(user_id, _) => Some(*user_id),
            _ => None,
        }
    }
}

/// The callers' side of the writer's queue.
pub(super) struct WriteQueue(mpsc::Sender<WriteRequest>);

impl WriteQueue {
    /// A queue, and the end of it the writer takes requests from.
    pub fn new() -> (Self, mpsc::Receiver<WriteRequest>) {
        let (sender, queue) = mpsc::channel(QUEUE_DEPTH);
        (Self(sender), queue)
    }

    /// Queues the request `request` builds around its reply channel, and
    /// waits for the answer (which comes after the commit).
    pub async fn send<T>(
        &self,
        request: impl FnOnce(Reply<T>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.0.send(request(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// A hold on the queue that does not keep the writer running.
    pub fn downgrade(&self) -> WeakWriteQueue {
        WeakWriteQueue(self.0.downgrade())
    }
}

/// A hold on the writer's queue for a background thread: it never keeps
/// the writer alive.
pub(super) struct WeakWriteQueue(mpsc::WeakSender<WriteRequest>);

impl WeakWriteQueue {
    /// Like [`WriteQueue::send`], from a plain thread; `None` once the
    /// writer has stopped.
    pub fn blocking_send<T>(
        &self,
        request: impl FnOnce(Reply<T>) -> WriteRequest,
    ) -> Option<Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let queue = self.0.upgrade()?;
        queue.blocking_send(request(reply)).ok()?;
        drop(queue);
        answer.blocking_recv().ok()
    }
}

fn stopped() -> StoreError {
    StoreError::bug("the database writer has stopped")
}
