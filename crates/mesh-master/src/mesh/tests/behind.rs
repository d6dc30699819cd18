//! The master's own stall is no node's silence ([`Mesh::excuse`]).

use super::*;

#[test]
fn time_the_master_was_behind_counts_toward_no_death() {
    let cfg = Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() };
    let (mut stalled, mut plain) = (four(cfg.clone()), four(cfg));
    for m in [&mut stalled, &mut plain] {
        for id in ["ingest-1", "root-1", "root-2", "edge-1", "edge-2"] {
            beat(m, id, &[], 100);
        }
    }
    // Nothing heard for 5 s; the master itself was behind for 4 of them.
    stalled.excuse(4, 105);
    assert_eq!(stalled.sweep(105), Vec::<String>::new(), "1 s of silence is no death");
    check(&stalled);
    assert_eq!(plain.sweep(105).len(), 5, "without the excuse, 5 s of silence is");
    // The excuse moves no node's silence past now, and a node stays silent after it.
    stalled.excuse(100, 106);
    assert!(stalled.nodes.values().all(|n| n.last_seen == 106));
    assert_eq!(stalled.sweep(110).len(), 5, "silent 4 s after the master caught up: dead");
    check(&stalled);
}
