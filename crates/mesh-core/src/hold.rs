//! What an edge may hold for strangers, bounded: HTTP requests waiting for a manifest (a cap
//! per worker and per client address), and route requests to the master (one state per
//! stream, in a table of bounded size). Pure: the glue keeps one of each per worker.

use std::collections::HashMap;

use crate::client::client_key;

/// Default cap on held requests per worker.
pub const DEFAULT_HOLD_MAX: usize = 256;
/// Default cap on held requests per client address.
pub const DEFAULT_HOLD_PER_CLIENT: usize = 8;

/// Why a request is not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The worker holds its cap.
    Worker,
    /// This client address holds its cap.
    Client,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Busy::Worker => "too many waiting requests",
            Busy::Client => "too many waiting requests from this address",
        })
    }
}

/// Held requests, counted per client address. An address has an entry only while it holds
/// something: the table is never larger than the worker's cap.
#[derive(Debug)]
pub struct Holds {
    max: usize,
    per_client: usize,
    total: usize,
    by_client: HashMap<String, usize>,
}

impl Holds {
    pub fn new(max: usize, per_client: usize) -> Holds {
        Holds { max, per_client, total: 0, by_client: HashMap::new() }
    }

    /// Change the caps (a reload); what is held stays held.
    pub fn set_caps(&mut self, max: usize, per_client: usize) {
        self.max = max;
        self.per_client = per_client;
    }

    /// One more held request from `client` (its address; an IPv6 client counts by its /64),
    /// or why not.
    pub fn admit(&mut self, client: &str) -> Result<(), Busy> {
        if self.total >= self.max {
            return Err(Busy::Worker);
        }
        let client = client_key(client);
        let n = self.by_client.get(&client).copied().unwrap_or(0);
        if n >= self.per_client {
            return Err(Busy::Client);
        }
        self.by_client.insert(client, n + 1);
        self.total += 1;
        Ok(())
    }

    /// A held request of `client` ended (answered, timed out, or its client left).
    pub fn release(&mut self, client: &str) {
        let client = client_key(client);
        if let Some(n) = self.by_client.get_mut(&client) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_client.remove(&client);
            }
        }
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        self.total
    }

    /// Addresses holding something now.
    pub fn clients(&self) -> usize {
        self.by_client.len()
    }
}

/// Default size of the route table.
pub const ROUTES_MAX: usize = 1024;
/// Seconds a "routed" answer stands (the push is on its way) before the stream is asked for
/// again.
pub const ROUTE_AGAIN_S: u64 = 10;
/// Seconds a negative answer (unknown, denied, failed) stands: a viewer who came a little
/// before the broadcaster is not turned away for long.
pub const ROUTE_NEGATIVE_S: u64 = 3;
/// Seconds after which a question still unanswered counts as lost.
pub const ROUTE_LOST_S: u64 = 30;

/// Where the route of one stream stands (times in unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Asked, no answer yet.
    Pending { since: u64 },
    /// The master routes it here: the push should arrive.
    Routed { at: u64 },
    /// The master does not know the stream.
    Unknown { at: u64 },
    /// The master refused to route it here.
    Denied { at: u64 },
    /// The question failed (master unreachable, timeout).
    Failed { at: u64 },
}

impl Route {
    fn time(&self) -> u64 {
        match *self {
            Route::Pending { since } => since,
            Route::Routed { at } | Route::Unknown { at } | Route::Denied { at } | Route::Failed { at } => at,
        }
    }

    /// Is this still the answer at `now` (or a question still worth waiting for)?
    fn stands(&self, now: u64) -> bool {
        let limit = match self {
            Route::Pending { .. } => ROUTE_LOST_S,
            Route::Routed { .. } => ROUTE_AGAIN_S,
            Route::Unknown { .. } | Route::Denied { .. } | Route::Failed { .. } => ROUTE_NEGATIVE_S,
        };
        now < self.time().saturating_add(limit)
    }
}

/// What a viewer's wish for a stream comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Ask the master now (recorded as pending).
    Ask,
    /// Where it stands; nothing to send.
    Known(Route),
    /// The table is full of questions in flight: nothing asked.
    Full,
}

/// The route state of each stream asked for, bounded.
#[derive(Debug)]
pub struct Routes {
    max: usize,
    map: HashMap<String, Route>,
}

impl Routes {
    pub fn new(max: usize) -> Routes {
        Routes { max: max.max(1), map: HashMap::new() }
    }

    /// A viewer wants `stream` at `now`.
    pub fn want(&mut self, stream: &str, now: u64) -> Want {
        if let Some(r) = self.map.get(stream) {
            if r.stands(now) {
                return Want::Known(*r);
            }
        } else if self.map.len() >= self.max && !self.make_room(now) {
            return Want::Full;
        }
        self.map.insert(stream.to_string(), Route::Pending { since: now });
        Want::Ask
    }

    /// Drop what no longer stands; failing that, the oldest answer. False when every entry is
    /// a question in flight.
    fn make_room(&mut self, now: u64) -> bool {
        self.map.retain(|_, r| r.stands(now));
        if self.map.len() < self.max {
            return true;
        }
        let oldest = self
            .map
            .iter()
            .filter(|(_, r)| !matches!(r, Route::Pending { .. }))
            .min_by_key(|(_, r)| r.time())
            .map(|(s, _)| s.clone());
        match oldest {
            Some(s) => {
                self.map.remove(&s);
                true
            }
            None => false,
        }
    }

    /// The question for `stream` could not be sent.
    pub fn not_sent(&mut self, stream: &str, now: u64) {
        self.map.insert(stream.to_string(), Route::Failed { at: now });
    }

    /// The master's answer for `stream`: applied only to a question in flight. Returns false
    /// when nothing was waiting for it (dropped).
    pub fn answer(&mut self, stream: &str, route: Route) -> bool {
        match self.map.get_mut(stream) {
            Some(r @ Route::Pending { .. }) if !matches!(route, Route::Pending { .. }) => {
                *r = route;
                true
            }
            _ => false,
        }
    }

    /// Where `stream` stands at `now`, if anywhere.
    pub fn get(&self, stream: &str, now: u64) -> Option<Route> {
        self.map.get(stream).filter(|r| r.stands(now)).copied()
    }

    /// `stream` is published here: its route is history.
    pub fn forget(&mut self, stream: &str) {
        self.map.remove(stream);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let mut h = Holds::new(100, 2);
        assert_eq!(h.admit("2001:db8:0:1::1"), Ok(()));
        assert_eq!(h.admit("2001:db8:0:1::2"), Ok(()));
        assert_eq!(h.admit("2001:db8:0:1:ffff::3"), Err(Busy::Client));
        assert_eq!(h.admit("2001:db8:0:2::1"), Ok(()));
        h.release("2001:db8:0:1::2");
        assert_eq!(h.admit("2001:db8:0:1::9"), Ok(()));
        assert_eq!(h.held(), 3);
    }

    #[test]
    fn holds_are_capped_per_worker_and_per_client() {
        let mut h = Holds::new(5, 2);
        assert_eq!(h.admit("a"), Ok(()));
        assert_eq!(h.admit("a"), Ok(()));
        assert_eq!(h.admit("a"), Err(Busy::Client));
        assert_eq!(h.admit("b"), Ok(()));
        assert_eq!(h.admit("c"), Ok(()));
        assert_eq!(h.admit("d"), Ok(()));
        assert_eq!(h.admit("e"), Err(Busy::Worker), "the worker's cap first");
        assert_eq!((h.held(), h.clients()), (5, 4));
        h.release("a");
        assert_eq!(h.admit("a"), Ok(()));
        for c in ["a", "a", "b", "c", "d"] {
            h.release(c);
        }
        assert_eq!((h.held(), h.clients()), (0, 0), "no entry left for a client holding nothing");
        h.release("never");
        assert_eq!(h.held(), 0, "a stray release changes nothing");
        h.set_caps(1, 1);
        assert_eq!(h.admit("x"), Ok(()));
        assert_eq!(h.admit("y"), Err(Busy::Worker));
    }

    #[test]
    fn one_question_per_stream_and_answers_stand_a_while() {
        let mut r = Routes::new(10);
        assert_eq!(r.want("s", 100), Want::Ask);
        assert_eq!(r.want("s", 101), Want::Known(Route::Pending { since: 100 }), "one question in flight");
        assert!(r.answer("s", Route::Unknown { at: 102 }));
        assert_eq!(r.want("s", 103), Want::Known(Route::Unknown { at: 102 }));
        assert_eq!(r.want("s", 102 + ROUTE_NEGATIVE_S - 1), Want::Known(Route::Unknown { at: 102 }));
        assert_eq!(r.want("s", 102 + ROUTE_NEGATIVE_S), Want::Ask, "asked again a little later");
        assert!(r.answer("s", Route::Routed { at: 106 }));
        assert!(!r.answer("s", Route::Unknown { at: 107 }), "an answer nobody waits for is dropped");
        assert_eq!(
            r.get("s", 106 + ROUTE_AGAIN_S - 1),
            Some(Route::Routed { at: 106 }),
            "routed stands longer"
        );
        assert_eq!(r.want("s", 106 + ROUTE_AGAIN_S), Want::Ask);
        r.forget("s");
        assert_eq!(r.get("s", 120), None);
        assert!(!r.answer("s", Route::Routed { at: 121 }), "a late answer after publish is dropped");
        assert!(!r.answer("nobody", Route::Routed { at: 1 }));
    }

    #[test]
    fn lost_questions_are_asked_again() {
        let mut r = Routes::new(10);
        assert_eq!(r.want("s", 0), Want::Ask);
        assert_eq!(r.want("s", ROUTE_LOST_S - 1), Want::Known(Route::Pending { since: 0 }));
        assert_eq!(r.want("s", ROUTE_LOST_S), Want::Ask);
        r.not_sent("s", 50);
        assert_eq!(r.want("s", 51), Want::Known(Route::Failed { at: 50 }));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = Routes::new(3);
        for s in ["a", "b", "c"] {
            assert_eq!(r.want(s, 0), Want::Ask);
        }
        assert_eq!(r.want("d", 1), Want::Full, "all in flight: nothing asked, nothing grows");
        assert_eq!(r.len(), 3);
        assert!(r.answer("b", Route::Unknown { at: 1 }));
        assert!(r.answer("a", Route::Routed { at: 2 }));
        assert_eq!(r.want("d", 3), Want::Ask, "the oldest answer makes room");
        assert_eq!(r.get("b", 3), None);
        assert_eq!(r.get("a", 3), Some(Route::Routed { at: 2 }));
        assert_eq!(r.len(), 3);
        // everything stale goes at once
        assert_eq!(r.want("e", 1000), Want::Ask);
        assert_eq!(r.len(), 1);
        assert!(!r.is_empty());
    }
}
