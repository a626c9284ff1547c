//! Ingresses for async code (feature `tokio`): a task submits and `.await`s its message's
//! completion ([`AsyncIngress`]), or reads every completion of its ingress as a `Stream`
//! ([`CompletionStream`]).
//!
//! Neither needs a thread, or a task, that polls: a task that waits registers its `Waker` in
//! the ingress's doorbell, and the shard that posts a completion to that ingress wakes it
//! (the same handshake as [`Ingress::wait_completions`], see there). Backpressure is the
//! engine's: a full ring is an error that hands the message back at once
//! ([`SubmitError::Full`]), never a queue that grows; to wait for room, collect completions
//! (await earlier submissions) and retry, as with [`Ingress::submit`].
//!
//! Nothing in here is tied to tokio (the wake goes through std's `Waker`), so any executor
//! runs it; the feature is named for the runtime it is built for and tested on.
//!
//! ```
//! use spillway::async_ingress::AsyncIngress;
//! use spillway::engine::Engine;
//! use spillway::message::{ConnectionId, Message, MessageId};
//! use spillway::outcome::Outcome;
//!
//! let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
//! let ingress = AsyncIngress::new(engine.ingress().unwrap());
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! runtime.block_on(async {
//!     let completion = ingress
//!         .submit(Message::new(ConnectionId(1), MessageId(1)))
//!         .await
//!         .unwrap();
//!     assert_eq!(completion.outcome, Outcome::Delivered);
//! });
//! drop(ingress);
//! assert!(engine.shutdown().reconciles());
//! ```

use core::fmt;
use core::future::Future;
use core::mem;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_core::Stream;

use crate::ingress::{Full, Ingress};
use crate::message::{ConnectionId, ConnectionIdHasher, Message, MessageId};
use crate::outcome::Completion;

/// Why [`AsyncIngress::submit`] could not take a message; either way the message comes back.
///
/// ```
/// use spillway::async_ingress::{AsyncIngress, SubmitError};
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId};
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let ingress = AsyncIngress::new(engine.ingress().unwrap());
/// engine.shutdown();
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let message = Message::new(ConnectionId(1), MessageId(5));
/// let error = runtime.block_on(ingress.submit(message)).unwrap_err();
/// assert!(matches!(&error, SubmitError::Full(full) if full.stopped));
/// assert_eq!(error.into_message().id, MessageId(5));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The ring to the shard had no room (collect completions, i.e. await earlier
    /// submissions, then retry), or the engine has stopped (`Full::stopped`).
    #[error(transparent)]
    Full(Full<Message>),
    /// A message with the same connection and id is still in flight on this ingress: its
    /// completion could not be told from this one's.
    #[error("message {:?} of connection {:?} is already in flight", .0.id, .0.connection)]
    DuplicateId(Message),
}

impl SubmitError {
    /// The message that was not submitted. See the example on [`SubmitError`].
    pub fn into_message(self) -> Message {
        match self {
            Self::Full(full) => full.message,
            Self::DuplicateId(message) => message,
        }
    }
}

/// The key of a message in flight: its completion carries both.
type Key = (ConnectionId, MessageId);

/// A message in flight, as its submitter's future sees it.
enum Reply {
    /// Submitted; the waker of the task that awaits its completion.
    Waiting(Waker),
    /// Its completion, for the task to take.
    Arrived(Completion),
    /// Its future was dropped: the completion is thrown away when it comes (its outcome is
    /// counted by the engine all the same). Kept until then so the id is not reused early.
    Abandoned,
}

/// What the clones of an [`AsyncIngress`] share, under one lock.
struct Exchange {
    ingress: Ingress,
    in_flight: HashMap<Key, Reply, BuildHasherDefault<ConnectionIdHasher>>,
    /// Entries of `in_flight` that are `Waiting`.
    waiting: usize,
    /// The message whose task's waker the doorbell was last armed with: that task collects
    /// for all, and hands the doorbell over when it stops waiting.
    armed: Option<Key>,
    /// Completions collected and not yet matched; empty between calls.
    collected: Vec<Completion>,
}

impl Exchange {
    /// Collects what has arrived and hands each completion to its message's entry; adds
    /// the wakers of the tasks whose completion arrived to `wake`.
    fn dispatch(&mut self, wake: &mut Vec<Waker>) {
        self.ingress.poll_completions(&mut self.collected);
        for completion in self.collected.drain(..) {
            let key = (completion.connection, completion.message);
            match self.in_flight.get_mut(&key) {
                Some(reply @ Reply::Waiting(_)) => {
                    if let Reply::Waiting(waker) = mem::replace(reply, Reply::Arrived(completion)) {
                        wake.push(waker);
                    }
                    self.waiting -= 1;
                }
                // Dropped, as promised; the id is free again.
                Some(Reply::Abandoned) => {
                    self.in_flight.remove(&key);
                }
                // Arrived cannot be (one completion per message, and ids in flight are
                // unique); none: a message submitted on the ingress before it was wrapped
                // (see `AsyncIngress::new`).
                Some(Reply::Arrived(_)) | None => {}
            }
        }
    }

    /// Records that the task of `key` waits, woken by `waker`.
    fn wait(&mut self, key: Key, waker: &Waker) {
        if let Some(Reply::Waiting(_)) = self.in_flight.insert(key, Reply::Waiting(waker.clone())) {
            return;
        }
        self.waiting += 1;
    }

    /// Takes the completion of `key` if it has arrived.
    fn take_arrived(&mut self, key: &Key) -> Option<Completion> {
        if !matches!(self.in_flight.get(key), Some(Reply::Arrived(_))) {
            return None;
        }
        match self.in_flight.remove(key) {
            Some(Reply::Arrived(completion)) => Some(completion),
            _ => None,
        }
    }

    /// The task of `key` stops waiting: its future was dropped before its completion came.
    fn abandon(&mut self, key: Key) {
        if let Some(Reply::Waiting(_)) = self.in_flight.insert(key, Reply::Abandoned) {
            self.waiting -= 1;
        }
    }

    /// Arms the doorbell with the waker of `key`'s task, then looks once more (the
    /// handshake's last look).
    fn arm(&mut self, key: Key, waker: &Waker, wake: &mut Vec<Waker>) {
        self.armed = Some(key);
        self.ingress.doorbell().arm(waker);
        self.dispatch(wake);
    }

    /// The task of `key` stops waiting (its completion came, or its future was dropped). If
    /// the doorbell was armed with its waker, arms it with that of a task that still
    /// waits, if any: the shards wake one task per batch, and that task hands each
    /// completion to its own.
    fn hand_over(&mut self, key: Key, wake: &mut Vec<Waker>) {
        if self.armed != Some(key) {
            return;
        }
        self.armed = None;
        if self.waiting == 0 {
            self.ingress.doorbell().disarm();
            return;
        }
        let next = self.in_flight.iter().find_map(|(key, reply)| match reply {
            Reply::Waiting(waker) => Some((*key, waker.clone())),
            Reply::Arrived(_) | Reply::Abandoned => None,
        });
        if let Some((next, waker)) = next {
            self.arm(next, &waker, wake);
        }
    }
}

/// A handle any number of tasks share (`Clone + Send + Sync`) to submit messages through
/// one [`Ingress`] and `.await` each one's completion, matched by connection and message
/// id: those of the messages in flight on one `AsyncIngress` must be unique (a duplicate is
/// refused, [`SubmitError::DuplicateId`]).
///
/// The tasks that wait take turns to collect: the doorbell holds one waiting task's waker,
/// the shard wakes that task, and it hands every completion it collects to the task that
/// awaits it. An ingress belongs to one producer, so the clones take a short lock to
/// submit and to collect.
///
/// ```
/// use spillway::async_ingress::AsyncIngress;
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId};
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let ingress = AsyncIngress::new(engine.ingress().unwrap());
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let ids = runtime.block_on(async {
///     // One task per message, each with its own clone.
///     let tasks: Vec<_> = (0..4)
///         .map(|id| {
///             let ingress = ingress.clone();
///             let message = Message::new(ConnectionId(id), MessageId(id));
///             tokio::spawn(async move { ingress.submit(message).await.unwrap().message })
///         })
///         .collect();
///     let mut ids = Vec::new();
///     for task in tasks {
///         ids.push(task.await.unwrap());
///     }
///     ids
/// });
/// assert_eq!(ids, [MessageId(0), MessageId(1), MessageId(2), MessageId(3)]);
/// drop(ingress);
/// engine.shutdown();
/// ```
#[derive(Clone)]
pub struct AsyncIngress {
    exchange: Arc<Mutex<Exchange>>,
}

impl AsyncIngress {
    /// Wraps `ingress`. Completions of messages submitted on it before are thrown away when
    /// they come (their outcomes are counted by the engine all the same). See the example
    /// on [`AsyncIngress`].
    pub fn new(ingress: Ingress) -> Self {
        // Room for every message the ingress may have in flight, so that the table never
        // grows while messages flow.
        let in_flight = HashMap::with_capacity_and_hasher(
            ingress.outstanding_max(),
            BuildHasherDefault::default(),
        );
        Self {
            exchange: Arc::new(Mutex::new(Exchange {
                ingress,
                in_flight,
                waiting: 0,
                armed: None,
                collected: Vec::new(),
            })),
        }
    }

    /// Submits `message` and resolves to its completion. The message is handed to its
    /// shard when the future is first polled; a full ring or a stopped engine resolves at
    /// once to [`SubmitError::Full`] with the message, as does a duplicate id in flight to
    /// [`SubmitError::DuplicateId`]. Dropping the future after it submitted abandons the
    /// completion, not the message: the engine still runs or refuses it. See the example
    /// on [`AsyncIngress`].
    pub fn submit(&self, message: Message) -> Submit {
        Submit {
            exchange: Arc::clone(&self.exchange),
            state: SubmitState::Unsent(Some(message)),
        }
    }

    /// Messages submitted whose completions have not been taken by their futures yet
    /// (including those whose futures were dropped).
    ///
    /// ```
    /// use std::future::Future;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::task::{Context, Waker};
    /// use spillway::async_ingress::AsyncIngress;
    /// use spillway::engine::Engine;
    /// use spillway::message::{ConnectionId, Message, MessageId};
    ///
    /// // A handler that holds its message until the gate opens.
    /// let gate = Arc::new(AtomicBool::new(false));
    /// let open = Arc::clone(&gate);
    /// let held = move |_: &Message| {
    ///     while !open.load(Ordering::Acquire) {
    ///         std::thread::yield_now();
    ///     }
    ///     Ok(())
    /// };
    /// let engine = Engine::builder().handler(held).start().unwrap();
    /// let ingress = AsyncIngress::new(engine.ingress().unwrap());
    /// let mut submit = Box::pin(ingress.submit(Message::new(ConnectionId(1), MessageId(1))));
    /// assert_eq!(ingress.in_flight(), 0); // submitted when first polled
    /// assert!(submit.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    /// assert_eq!(ingress.in_flight(), 1);
    /// gate.store(true, Ordering::Release);
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// assert!(runtime.block_on(submit).is_ok());
    /// assert_eq!(ingress.in_flight(), 0);
    /// drop(ingress);
    /// engine.shutdown();
    /// ```
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    fn lock(&self) -> MutexGuard<'_, Exchange> {
        lock(&self.exchange)
    }
}

impl fmt::Debug for AsyncIngress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AsyncIngress")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// The lock of the exchange. A panic while it was held (in a waker's clone) leaves no half
/// update behind: every change under it is one map insert or remove.
fn lock(exchange: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    exchange
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum SubmitState {
    Unsent(Option<Message>),
    Sent(Key),
    Done,
}

/// The future of [`AsyncIngress::submit`]. It submits when first polled: one dropped
/// before that submits nothing.
///
/// ```
/// use spillway::async_ingress::AsyncIngress;
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId};
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let ingress = AsyncIngress::new(engine.ingress().unwrap());
/// drop(ingress.submit(Message::new(ConnectionId(1), MessageId(1)))); // never polled
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let sent = ingress.submit(Message::new(ConnectionId(1), MessageId(2)));
/// assert_eq!(runtime.block_on(sent).unwrap().message, MessageId(2));
/// drop(ingress);
/// assert_eq!(engine.shutdown().total.delivered, 1);
/// ```
#[must_use = "a submission does nothing until awaited"]
pub struct Submit {
    exchange: Arc<Mutex<Exchange>>,
    state: SubmitState,
}

impl Future for Submit {
    type Output = Result<Completion, SubmitError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut wake = Vec::new();
        let poll = {
            let mut exchange = lock(&this.exchange);
            // Collect first: it frees credit, and the ids of abandoned messages whose
            // completions came.
            exchange.dispatch(&mut wake);
            this.state.poll(&mut exchange, context.waker(), &mut wake)
        };
        // Outside the lock: a waker may run code of its executor's.
        for waker in wake {
            waker.wake();
        }
        poll
    }
}

impl SubmitState {
    /// The submission's next step, under the exchange's lock: submit if not yet done, then
    /// take the completion or wait for it.
    fn poll(
        &mut self,
        exchange: &mut Exchange,
        waker: &Waker,
        wake: &mut Vec<Waker>,
    ) -> Poll<Result<Completion, SubmitError>> {
        let key = match self {
            SubmitState::Unsent(message) => {
                let message = message
                    .take()
                    .expect("an unsent submission has its message");
                let key = (message.connection, message.id);
                if exchange.in_flight.contains_key(&key) {
                    *self = SubmitState::Done;
                    return Poll::Ready(Err(SubmitError::DuplicateId(message)));
                }
                if let Err(full) = exchange.ingress.submit(message) {
                    *self = SubmitState::Done;
                    return Poll::Ready(Err(SubmitError::Full(full)));
                }
                exchange.wait(key, waker);
                *self = SubmitState::Sent(key);
                key
            }
            SubmitState::Sent(key) => *key,
            SubmitState::Done => panic!("`Submit` polled after it completed"),
        };
        let mut arrived = exchange.take_arrived(&key);
        if arrived.is_none() {
            // Still waiting: this task becomes the one the shards wake.
            exchange.wait(key, waker);
            exchange.arm(key, waker, wake);
            arrived = exchange.take_arrived(&key);
        }
        match arrived {
            Some(completion) => {
                exchange.hand_over(key, wake);
                *self = SubmitState::Done;
                Poll::Ready(Ok(completion))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        let SubmitState::Sent(key) = self.state else {
            return;
        };
        let mut wake = Vec::new();
        {
            let mut exchange = lock(&self.exchange);
            if exchange.take_arrived(&key).is_none() {
                exchange.abandon(key);
            }
            exchange.hand_over(key, &mut wake);
        }
        for waker in wake {
            waker.wake();
        }
    }
}

impl fmt::Debug for Submit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            SubmitState::Unsent(_) => "unsent",
            SubmitState::Sent(_) => "sent",
            SubmitState::Done => "done",
        };
        formatter
            .debug_struct("Submit")
            .field("state", &state)
            .finish()
    }
}

/// One task's [`Ingress`] whose completions are a [`Stream`]: the task submits with
/// [`submit`](Self::submit) (a full ring hands the message back) and reads each completion
/// as it comes, in the order its shards posted them (per shard). The stream ends once the
/// engine has stopped and every submitted message has had its completion.
///
/// ```
/// use futures_core::Stream;
/// use spillway::async_ingress::CompletionStream;
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId};
///
/// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
/// let mut completions = CompletionStream::new(engine.ingress().unwrap());
/// for id in 0..3 {
///     completions.submit(Message::new(ConnectionId(id), MessageId(id))).unwrap();
/// }
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let ids = runtime.block_on(async {
///     let mut ids = Vec::new();
///     while ids.len() < 3 {
///         let next = std::future::poll_fn(|context| {
///             std::pin::Pin::new(&mut completions).poll_next(context)
///         });
///         ids.push(next.await.unwrap().message.0);
///     }
///     ids
/// });
/// assert_eq!(ids.len(), 3);
/// drop(completions);
/// engine.shutdown();
/// ```
pub struct CompletionStream {
    ingress: Ingress,
    /// Collected, not yet yielded.
    buffer: VecDeque<Completion>,
    /// Where the ingress collects into before `buffer` takes them.
    collected: Vec<Completion>,
}

impl CompletionStream {
    /// Wraps `ingress`. See the example on [`CompletionStream`].
    pub fn new(ingress: Ingress) -> Self {
        Self {
            ingress,
            buffer: VecDeque::new(),
            collected: Vec::new(),
        }
    }

    /// Hands `message` to its shard, or hands it back ([`Ingress::submit`]). See the example
    /// on [`CompletionStream`].
    pub fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        self.ingress.submit(message)
    }

    /// The ingress underneath (for its backpressure signal, say).
    ///
    /// ```
    /// use spillway::async_ingress::CompletionStream;
    /// use spillway::engine::Engine;
    /// use spillway::message::{ConnectionId, Message, MessageId};
    ///
    /// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
    /// let mut completions = CompletionStream::new(engine.ingress().unwrap());
    /// completions.submit(Message::new(ConnectionId(1), MessageId(1))).unwrap();
    /// // Outstanding until the stream is read: nothing collects but the stream.
    /// assert_eq!(completions.ingress().outstanding(), 1);
    /// assert!(!completions.ingress().backpressure(ConnectionId(1)));
    /// drop(completions);
    /// engine.shutdown();
    /// ```
    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    /// The ingress back, with the completions collected but not yet yielded.
    ///
    /// ```
    /// use std::pin::Pin;
    /// use futures_core::Stream;
    /// use spillway::async_ingress::CompletionStream;
    /// use spillway::engine::Engine;
    /// use spillway::message::{ConnectionId, Message, MessageId};
    ///
    /// let engine = Engine::builder().handler(|_: &Message| Ok(())).start().unwrap();
    /// let mut completions = CompletionStream::new(engine.ingress().unwrap());
    /// for id in 0..2 {
    ///     completions.submit(Message::new(ConnectionId(1), MessageId(id))).unwrap();
    /// }
    /// engine.shutdown(); // both completions are there now
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let next = std::future::poll_fn(|context| Pin::new(&mut completions).poll_next(context));
    /// assert_eq!(runtime.block_on(next).unwrap().message, MessageId(0));
    /// // The stream collected both and yielded one: the other comes back here.
    /// let (ingress, buffered) = completions.into_parts();
    /// assert_eq!(buffered[0].message, MessageId(1));
    /// assert_eq!(ingress.outstanding(), 0);
    /// ```
    pub fn into_parts(self) -> (Ingress, Vec<Completion>) {
        (self.ingress, self.buffer.into())
    }

    /// The next completion already there, collecting if the buffer is spent; `Some(None)`
    /// when the stream has ended.
    fn next_ready(&mut self) -> Option<Option<Completion>> {
        if self.buffer.is_empty() && self.ingress.poll_completions(&mut self.collected) > 0 {
            self.buffer.extend(self.collected.drain(..));
        }
        if let Some(completion) = self.buffer.pop_front() {
            return Some(Some(completion));
        }
        (self.ingress.outstanding() == 0 && self.ingress.engine_stopped()).then_some(None)
    }
}

impl Stream for CompletionStream {
    type Item = Completion;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Completion>> {
        let this = self.get_mut();
        if let Some(next) = this.next_ready() {
            return Poll::Ready(next);
        }
        // The waiter's half of the handshake: arm, then look once more.
        this.ingress.doorbell().arm(context.waker());
        match this.next_ready() {
            Some(next) => {
                this.ingress.doorbell().disarm();
                Poll::Ready(next)
            }
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for CompletionStream {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CompletionStream")
            .field("ingress", &self.ingress)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}
