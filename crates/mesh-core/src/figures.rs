//! A node's figures whatever the number of its workers: each worker reports its own
//! ([`WorkerFigures`], written to its slot of the node's shared zone every second), and the
//! node's are all of them merged ([`merge`]): a stream once, from the worker it is published
//! into (another worker's copy of it is not a stream of its own), with the viewers of every
//! worker; loads, pushes, transcodes and refusal counts added up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::{LinkStatus, PushStatus, RefusalCount};
use crate::wire::{Load, PushStat, StreamStat, TranscodeStat};

/// What one worker holds now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerFigures {
    /// Streams published into this worker (not its copies of others'); their `viewers` are
    /// this worker's.
    pub streams: Vec<StreamStat>,
    /// Viewers in this worker, by stream (of its own streams and of its copies).
    pub viewers: BTreeMap<String, u64>,
    pub load: Load,
    pub pushes: Vec<PushStatus>,
    pub transcodes: Vec<TranscodeStat>,
    pub refusals: Vec<RefusalCount>,
    /// The links to the master, from the worker that speaks for the node (empty in the others).
    #[serde(default)]
    pub links: Vec<LinkStatus>,
}

impl WorkerFigures {
    /// The pushes as a heartbeat reports them.
    pub fn push_stats(&self) -> Vec<PushStat> {
        self.pushes
            .iter()
            .map(|p| PushStat { stream: p.stream.clone(), to: p.target.clone(), state: p.state.clone() })
            .collect()
    }
}

/// The node's figures from each worker's.
pub fn merge<'a>(workers: impl IntoIterator<Item = &'a WorkerFigures>) -> WorkerFigures {
    let mut out = WorkerFigures::default();
    let mut refusals: BTreeMap<(String, String), u64> = BTreeMap::new();
    for w in workers {
        out.streams.extend(w.streams.iter().cloned());
        for (stream, n) in &w.viewers {
            *out.viewers.entry(stream.clone()).or_insert(0) += n;
        }
        out.load.connections += w.load.connections;
        out.load.in_kbps += w.load.in_kbps;
        out.load.out_kbps += w.load.out_kbps;
        out.pushes.extend(w.pushes.iter().cloned());
        out.transcodes.extend(w.transcodes.iter().cloned());
        if out.links.is_empty() {
            out.links.clone_from(&w.links);
        }
        for r in &w.refusals {
            *refusals.entry((r.action.clone(), r.reason.clone())).or_insert(0) += r.count;
        }
    }
    // One entry per stream: two workers may each hold a publish of one name (without
    // rtmp_auto_push, or in a race before the copies arrive): their input adds up.
    out.streams.sort_by(|a, b| a.stream.cmp(&b.stream));
    out.streams.dedup_by(|later, first| {
        let same = later.stream == first.stream;
        if same {
            first.in_kbps += later.in_kbps;
        }
        same
    });
    for s in &mut out.streams {
        s.viewers = out.viewers.get(&s.stream).copied().unwrap_or(0);
    }
    out.pushes.sort_by(|a, b| (&a.stream, &a.target).cmp(&(&b.stream, &b.target)));
    out.transcodes.sort_by(|a, b| a.stream.cmp(&b.stream));
    out.refusals = refusals
        .into_iter()
        .map(|((action, reason), count)| RefusalCount { action, reason, count })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, viewers: u64) -> StreamStat {
        StreamStat { stream: name.into(), source: "broadcaster".into(), viewers, in_kbps: 900 }
    }

    #[test]
    fn one_stream_with_the_viewers_of_every_worker() {
        let a = WorkerFigures {
            streams: vec![stream("cam1", 2)],
            viewers: [("cam1".to_string(), 2)].into(),
            load: Load { connections: 4, in_kbps: 900, out_kbps: 1800 },
            refusals: vec![RefusalCount { action: "play".into(), reason: "no token".into(), count: 3 }],
            ..WorkerFigures::default()
        };
        let b = WorkerFigures {
            viewers: [("cam1".to_string(), 5), ("cam2".to_string(), 1)].into(),
            load: Load { connections: 6, in_kbps: 0, out_kbps: 4500 },
            refusals: vec![
                RefusalCount { action: "play".into(), reason: "no token".into(), count: 1 },
                RefusalCount { action: "publish".into(), reason: "busy".into(), count: 2 },
            ],
            ..WorkerFigures::default()
        };
        let n = merge([&a, &b]);
        assert_eq!(n.streams, vec![stream("cam1", 7)], "cam1 once, 2 + 5 viewers; cam2 is no stream here");
        assert_eq!(n.load, Load { connections: 10, in_kbps: 900, out_kbps: 6300 });
        assert_eq!(
            n.refusals.iter().map(|r| (r.action.as_str(), r.reason.as_str(), r.count)).collect::<Vec<_>>(),
            vec![("play", "no token", 4), ("publish", "busy", 2)]
        );
        assert_eq!(merge([&a]).streams, a.streams, "one worker: its own figures");
    }

    #[test]
    fn a_stream_published_into_two_workers_is_one_stream() {
        let w = |viewers: u64| WorkerFigures {
            streams: vec![stream("cam1", viewers)],
            viewers: [("cam1".to_string(), viewers)].into(),
            ..WorkerFigures::default()
        };
        let n = merge([&w(2), &w(3)]);
        assert_eq!(
            n.streams,
            vec![StreamStat { in_kbps: 1800, ..stream("cam1", 5) }],
            "once, 5 viewers, both inputs"
        );
    }

    #[test]
    fn pushes_as_a_heartbeat_says_them() {
        let w = WorkerFigures {
            pushes: vec![PushStatus {
                stream: "cam1".into(),
                target: "root-1".into(),
                state: "connected".into(),
                reconnects: 2,
            }],
            ..WorkerFigures::default()
        };
        assert_eq!(
            w.push_stats(),
            vec![PushStat { stream: "cam1".into(), to: "root-1".into(), state: "connected".into() }]
        );
        let back: WorkerFigures = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w, "through a zone slot and back");
    }
}
