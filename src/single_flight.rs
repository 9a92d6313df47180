//! One piece of work per key at a time, within a process: a map of per-key async mutexes
//! whose guard removes its key when the last holder or waiter is gone, so the map holds
//! only keys in use (not every directory ever listed or entry ever fetched).
//!
//! The pattern it serves: check whether the work is done, [`SingleFlight::enter`], check
//! again (whoever held the key before may just have done it), then do it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug)]
pub struct SingleFlight<K> {
    flights: Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// Held while its key's work runs; dropping it lets the next waiter in.
pub struct FlightGuard<'a, K: Hash + Eq + Clone> {
    // Declared first, so it is released before `key` looks at the count.
    _held: OwnedMutexGuard<()>,
    _key: KeyRef<'a, K>,
}

/// One holder's or waiter's reference to a key's mutex; the last one to go removes the
/// key, whether it held the mutex or gave up waiting (a dropped future).
struct KeyRef<'a, K: Hash + Eq + Clone> {
    owner: &'a SingleFlight<K>,
    key: K,
    mutex: Option<Arc<AsyncMutex<()>>>,
}

impl<K: Hash + Eq + Clone> Drop for KeyRef<'_, K> {
    fn drop(&mut self) {
        drop(self.mutex.take());
        let mut map = self.owner.flights.lock().expect("single-flight map");
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

impl<K: Hash + Eq + Clone> SingleFlight<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until no other task holds `key`, then holds it.
    pub async fn enter(&self, key: K) -> FlightGuard<'_, K> {
        let mutex = {
            let mut map = self.flights.lock().expect("single-flight map");
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let key = KeyRef {
            owner: self,
            key,
            mutex: Some(Arc::clone(&mutex)),
        };
        let held = mutex.lock_owned().await;
        FlightGuard {
            _held: held,
            _key: key,
        }
    }

    /// Keys held or waited for now.
    pub fn len(&self) -> usize {
        self.flights.lock().expect("single-flight map").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_holder_per_key_and_the_map_empties_afterwards() {
        let flights = Arc::new(SingleFlight::new());
        let inside = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (flights, inside, most) =
                    (Arc::clone(&flights), Arc::clone(&inside), Arc::clone(&most));
                tokio::spawn(async move {
                    let _g = flights.enter(i % 2).await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "one per key, two keys");
        assert!(flights.is_empty(), "keys removed after use");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_key_behind() {
        let flights = SingleFlight::new();
        let held = flights.enter("k").await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), flights.enter("k")).await;
        assert!(waiting.is_err(), "the key is held");
        drop(held);
        assert!(flights.is_empty());
        let _again = flights.enter("k").await;
        assert_eq!(flights.len(), 1);
    }
}
