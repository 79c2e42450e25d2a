//! An unbounded multi-producer, single-consumer channel that holds no memory while empty: the
//! queues every shard has (its [`crate::shard_inputs::ShardInput`]s, its publishers'
//! reports).
//!
//! Owns: queueing values between tasks, waking the receiver, and telling either side that the
//! other has gone. tokio's unbounded channel allocates a block of 32 slots and a cache-padded
//! shared state when it is created and keeps them for its whole life, about 2 KiB per channel
//! whether a value ever passes or not; with two per shard that was a sixth of an idle
//! uncompressed shard (BENCHMARKS.md section 4). Here the shared state is a `VecDeque` behind a
//! mutex (about 100 bytes): it is allocated by the first value sent and given back once the
//! receiver has taken the last one, so an idle channel costs only the shared state. Does not
//! own what travels on it, nor any bound (the senders' own limits bound it, as before).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A new channel.
pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        senders: AtomicUsize::new(1),
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiving: true,
            waker: None,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    /// Live senders; the receiver sees the channel end when none is left and it is drained.
    /// Counted outside the lock (an output clones the sender for every publication); the last
    /// one to leave takes the lock to wake the receiver.
    senders: AtomicUsize,
    state: Mutex<State<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Whether the receiver is alive (sending fails once it is gone).
    receiving: bool,
    /// The receiver's task, while it waits for a value.
    waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here panics while holding the lock; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The value could not be sent: the receiver is gone. Holds the value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SendError<T>(pub(crate) T);

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued and every sender is gone.
    Disconnected,
}

/// The sending half; cheap to clone.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value` for the receiver (never waits); fails once the receiver is gone.
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        let waker = {
            let mut state = self.shared.lock();
            if !state.receiving {
                return Err(SendError(value));
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether both are senders of the same channel.
    pub(crate) fn same_channel(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) > 1 {
            return;
        }
        // The receiver reads the count under the lock: it either sees it at zero, or has left
        // its waker for this to take.
        let waker = self.shared.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The receiving half (one per channel).
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next value; `Ready(None)` once every sender is gone and nothing is left. Wakes the
    /// task of `cx` when it returns `Pending` and a value or the end arrives.
    ///
    /// Spends the task's tokio budget like tokio's own channels (a task that always finds a
    /// value still yields now and then); on another executor the budget is unlimited.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.shared.lock();
        match take(&mut state, &self.shared.senders) {
            Ok(value) => {
                coop.made_progress();
                Poll::Ready(Some(value))
            }
            Err(TryRecvError::Disconnected) => {
                coop.made_progress();
                Poll::Ready(None)
            }
            Err(TryRecvError::Empty) => {
                match &mut state.waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next value if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        take(&mut self.shared.lock(), &self.shared.senders)
    }

    /// Waits for the next value; `None` once every sender is gone and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// Takes the next value, giving the queue's memory back once it is drained.
fn take<T>(state: &mut State<T>, senders: &AtomicUsize) -> Result<T, TryRecvError> {
    match state.queue.pop_front() {
        Some(value) => {
            if state.queue.is_empty() {
                state.queue = VecDeque::new();
            }
            Ok(value)
        }
        None if senders.load(Ordering::Acquire) == 0 => Err(TryRecvError::Disconnected),
        None => Err(TryRecvError::Empty),
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // What was queued is dropped outside the lock (a value's own drop may send again).
        let unread = {
            let mut state = self.shared.lock();
            state.receiving = false;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        drop(unread);
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::{SendError, TryRecvError, unbounded};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn values_arrive_in_order_from_every_sender() {
        let (tx, mut rx) = unbounded();
        let other = tx.clone();
        tx.send(1).unwrap();
        other.send(2).unwrap();
        tx.send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(tx.same_channel(&other));
        assert!(!tx.same_channel(&unbounded::<i32>().0));
    }

    #[test]
    fn a_drained_channel_holds_no_queue_memory() {
        let (tx, mut rx) = unbounded();
        assert_eq!(
            rx.shared.lock().queue.capacity(),
            0,
            "nothing allocated at creation"
        );
        for n in 0..100 {
            tx.send(n).unwrap();
        }
        assert!(rx.shared.lock().queue.capacity() >= 100);
        for n in 0..100 {
            assert_eq!(rx.try_recv(), Ok(n));
        }
        assert_eq!(
            rx.shared.lock().queue.capacity(),
            0,
            "given back once drained"
        );
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = unbounded();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.send("a").unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("a")));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        let other = tx.clone();
        drop(tx);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "a sender is left");
        other.send("b").unwrap();
        drop(other);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        // What was sent before the last sender left still arrives, then the end.
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("b")));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn sending_fails_once_the_receiver_is_gone() {
        let (tx, rx) = unbounded();
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2), Err(SendError(2)));
    }

    #[tokio::test]
    async fn recv_waits_for_a_value_from_another_task() {
        let (tx, mut rx) = unbounded();
        let sender = std::thread::spawn(move || {
            for n in 0..1000 {
                tx.send(n).unwrap();
            }
        });
        for n in 0..1000 {
            assert_eq!(rx.recv().await, Some(n));
        }
        sender.join().unwrap();
        assert_eq!(rx.recv().await, None);
    }
}
