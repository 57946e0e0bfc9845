//! Requests of one kind that several threads make at the same moment, sent as one statement.
//!
//! A statement's fixed costs (the trip, the parse and plan, TLS, waking the database's backend
//! and the waiting thread, and for a write the commit's WAL flush) are most of what a code
//! check costs the database. So while `lanes` batches are in flight, new requests queue, and
//! the next batch takes them all (up to `max`): under load one statement serves many logins,
//! and a lone request still goes out at once, with no timer and nothing added to its latency.
//!
//! No thread of its own: whoever finds a lane free sends its request alone; when a batch ends,
//! its thread hands the queue to the oldest waiter, which sends it as the next batch and so
//! leads it. Every waiter is woken once, by its own channel, with its answer or its batch.

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::mpsc::{SendError, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};

/// Gathers concurrent requests `Q` into batches; each gets its own answer `A`.
pub struct Batcher<Q, A> {
    state: Mutex<State<Q, A>>,
    /// Batches in flight at once.
    lanes: usize,
    /// Requests per batch at most.
    max: usize,
}

struct State<Q, A> {
    /// Waiting for a lane. Never non-empty while a lane is free.
    queue: VecDeque<Entry<Q, A>>,
    /// Batches in flight.
    running: usize,
}

struct Entry<Q, A> {
    request: Q,
    reply: SyncSender<Message<Q, A>>,
}

/// The one message a waiter receives.
enum Message<Q, A> {
    /// Send this batch (the waiter's own request first) and answer the others.
    Lead(Vec<Entry<Q, A>>),
    Done(Result<A>),
}

impl<Q, A> Batcher<Q, A> {
    pub fn new(lanes: usize, max: usize) -> Batcher<Q, A> {
        Batcher {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: 0,
            }),
            lanes: lanes.max(1),
            max: max.max(1),
        }
    }

    /// Answers `request`, sending it with whatever else is waiting. `send` gets a batch (never
    /// empty) and returns one answer per request, in order. A batch may hold other threads'
    /// requests, so every `submit` on one batcher must pass the same `send`.
    pub fn submit(&self, request: Q, send: &dyn Fn(&[&Q]) -> Vec<Result<A>>) -> Result<A> {
        let (reply, inbox) = sync_channel(1);
        let mut state = self.lock();
        state.queue.push_back(Entry { request, reply });
        let mut message = if state.running < self.lanes {
            // A lane is free, so nothing else was waiting: this request goes alone, now.
            state.running += 1;
            let batch = self.take(&mut state);
            drop(state);
            debug_assert_eq!(batch.len(), 1, "a request queued while a lane was free");
            Message::Lead(batch)
        } else {
            drop(state);
            match inbox.recv() {
                Ok(message) => message,
                // The thread that led this request's batch panicked before answering.
                Err(_) => return Err(lost()),
            }
        };
        loop {
            match message {
                Message::Done(answer) => return answer,
                Message::Lead(batch) => message = Message::Done(self.lead(batch, send)),
            }
        }
    }

    /// Sends `batch`, hands the lane on, answers the batch's other requests, and returns the
    /// answer to the first request (the caller's own).
    fn lead(&self, batch: Vec<Entry<Q, A>>, send: &dyn Fn(&[&Q]) -> Vec<Result<A>>) -> Result<A> {
        // Handed on when `send` returns, or if it panics, so no lane is lost.
        let lane = Lane(self);
        let requests: Vec<&Q> = batch.iter().map(|entry| &entry.request).collect();
        let answers = send(&requests);
        drop(requests);
        drop(lane);
        let mut answers = answers.into_iter();
        let mut own = None;
        for (index, entry) in batch.into_iter().enumerate() {
            let answer = answers.next().unwrap_or_else(|| Err(lost()));
            if index == 0 {
                own = Some(answer);
            } else {
                // The waiter is blocked in `recv` until this message; its channel has room for
                // exactly this one.
                let _ = entry.reply.send(Message::Done(answer));
            }
        }
        own.unwrap_or_else(|| Err(lost()))
    }

    /// The next batch from the front of the queue.
    fn take(&self, state: &mut State<Q, A>) -> Vec<Entry<Q, A>> {
        let count = state.queue.len().min(self.max);
        state.queue.drain(..count).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<Q, A>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lane in use; when it ends, the queue's next batch goes to its oldest waiter, or the lane
/// is free again.
struct Lane<'a, Q, A>(&'a Batcher<Q, A>);

impl<Q, A> Drop for Lane<'_, Q, A> {
    fn drop(&mut self) {
        let batcher = self.0;
        loop {
            let mut state = batcher.lock();
            if state.queue.is_empty() {
                state.running -= 1;
                return;
            }
            let batch = batcher.take(&mut state);
            drop(state);
            let leader = batch[0].reply.clone();
            // Its owner waits in `recv` for exactly one message, and this is it. It cannot have
            // gone (a thread leaves `recv` only with a message), but if it had, its batch is
            // answered with an error and the lane goes to the next waiter instead of being lost.
            let Err(SendError(Message::Lead(batch))) = leader.send(Message::Lead(batch)) else {
                return;
            };
            for entry in batch.into_iter().skip(1) {
                let _ = entry.reply.send(Message::Done(Err(lost())));
            }
        }
    }
}

fn lost() -> Error {
    Error::System("a batched fleet request was lost: its batch's thread failed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_lone_request_goes_alone_and_at_once() {
        let batcher = Batcher::<u32, u32>::new(2, 8);
        let sent = Mutex::new(Vec::new());
        let answer = batcher.submit(7, &|batch: &[&u32]| {
            sent.lock().unwrap().push(batch.len());
            batch.iter().map(|q| Ok(**q * 2)).collect()
        });
        assert_eq!(answer.unwrap(), 14);
        assert_eq!(*sent.lock().unwrap(), vec![1]);
        assert_eq!(batcher.lock().running, 0);
    }

    /// While every lane is busy, requests queue; each gets its own answer, batches stay within
    /// `max`, and no more than `lanes` are ever in flight.
    #[test]
    fn concurrent_requests_share_batches_and_each_gets_its_answer() {
        const THREADS: usize = 48;
        let batcher = Arc::new(Batcher::<usize, usize>::new(2, 5));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|n| {
                let (batcher, in_flight, most, batches, start) = (
                    batcher.clone(),
                    in_flight.clone(),
                    most.clone(),
                    batches.clone(),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    batcher.submit(n, &|batch: &[&usize]| {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        batches.lock().unwrap().push(batch.len());
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        batch.iter().map(|q| Ok(**q + 1000)).collect()
                    })
                })
            })
            .collect();
        for (n, thread) in threads.into_iter().enumerate() {
            assert_eq!(thread.join().unwrap().unwrap(), n + 1000);
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), THREADS);
        assert!(batches.iter().all(|&size| (1..=5).contains(&size)));
        assert!(batches.len() < THREADS, "some requests shared a batch");
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(batcher.lock().running, 0);
        assert!(batcher.lock().queue.is_empty());
    }

    /// A batch whose sender panics answers its waiters with an error, and the lane goes on.
    #[test]
    fn a_panicking_batch_loses_no_lane() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(1, 8));
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batcher.submit(1, &|_: &[&u32]| panic!("statement crashed"))
        }));
        assert!(crashed.is_err());
        assert_eq!(batcher.lock().running, 0);
        let answer = batcher.submit(2, &|batch: &[&u32]| batch.iter().map(|q| Ok(**q)).collect());
        assert_eq!(answer.unwrap(), 2);
    }

    /// Fewer answers than requests: the unanswered ones get an error, not a hang.
    #[test]
    fn a_missing_answer_is_an_error() {
        let batcher = Batcher::<u32, u32>::new(1, 8);
        let answer = batcher.submit(1, &|_: &[&u32]| Vec::new());
        assert!(answer.is_err());
    }
}
