//! One readiness set per process: every part that must sync before the process serves registers here,
//! and `/readyz` answers 200 only when all of them are ready.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// Which components have synced (`/readyz`).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    components: Arc<parking_lot::Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Registers a component that is not ready yet (registering a name again resets it).
    pub fn register(&self, name: &'static str) -> Ready {
        self.components.lock().insert(name, false);
        Ready {
            name,
            readiness: self.clone(),
        }
    }

    /// Whether every registered component is ready.
    pub fn is_ready(&self) -> bool {
        self.components.lock().values().all(|r| *r)
    }

    /// The components that are not ready yet.
    pub fn pending(&self) -> Vec<&'static str> {
        self.components
            .lock()
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// One component's readiness switch.
#[derive(Clone, Debug)]
pub struct Ready {
    name: &'static str,
    readiness: Readiness,
}

impl Ready {
    /// Whether this component is ready.
    pub fn is_ready(&self) -> bool {
        self.readiness
            .components
            .lock()
            .get(self.name)
            .copied()
            .unwrap_or(false)
    }

    /// Marks the component ready (or not).
    pub fn set(&self, ready: bool) {
        self.readiness.components.lock().insert(self.name, ready);
    }

    /// Marks the component ready once a reflector store has its first complete list.
    pub async fn when_synced<K>(self, store: kube::runtime::reflector::Store<K>)
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Clone + Eq + std::hash::Hash,
    {
        // kube-runtime's readiness signal keeps a single waker, and a controller's own applier waits on the
        // same store: a second waiter is never woken. Re-polling (every 100 ms) sees the state once set.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
                Ok(Ok(())) => return self.set(true),
                Ok(Err(_)) => return,
                Err(_elapsed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let readiness = Readiness::default();
        assert!(readiness.is_ready(), "nothing registered: ready");
        let a = readiness.register("a");
        let b = readiness.register("b");
        assert_eq!(readiness.pending(), ["a", "b"]);
        a.set(true);
        assert!(!readiness.is_ready());
        assert_eq!(readiness.pending(), ["b"]);
        b.set(true);
        assert!(readiness.is_ready() && a.is_ready() && b.is_ready());
        b.set(false);
        assert!(!readiness.is_ready());
    }
}
