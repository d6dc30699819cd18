use super::*;

fn all_alive(_: i32) -> bool {
    true
}

fn mine(c: Claimed) -> u64 {
    match c {
        Claimed::Mine { generation, .. } => generation,
        other => panic!("not mine: {other:?}"),
    }
}

#[test]
fn one_owner_per_stream() {
    let mut t = empty(4);
    let mut g = 0;
    let g1 = mine(claim(&mut t, "cam1", 100, 0, &mut g, &all_alive));
    assert_eq!(
        claim(&mut t, "cam1", 200, 10, &mut g, &all_alive),
        Claimed::Other { owner: 100, phase: Phase::Running }
    );
    // The other worker's request counts as wanted for the owner.
    assert_eq!(beat(&mut t, "cam1", 100, g1, Phase::Running, 20), Some(10));
    let g2 = mine(claim(&mut t, "cam2", 200, 30, &mut g, &all_alive));
    assert_ne!(g1, g2);
    assert_eq!(held(&t).count(), 2);
}

#[test]
fn bounded() {
    let mut t = empty(2);
    let mut g = 0;
    mine(claim(&mut t, "a", 1, 0, &mut g, &all_alive));
    mine(claim(&mut t, "b", 1, 0, &mut g, &all_alive));
    assert_eq!(claim(&mut t, "c", 1, 0, &mut g, &all_alive), Claimed::Full);
    assert_eq!(claim(&mut t, &"x".repeat(129), 1, 0, &mut g, &all_alive), Claimed::BadName);
    release(&mut t, "a", 1, 1);
    mine(claim(&mut t, "c", 1, 0, &mut g, &all_alive));
}

#[test]
fn a_dead_owner_is_taken_over_and_a_stale_one_too() {
    let mut t = empty(2);
    let mut g = 0;
    let g1 = mine(claim(&mut t, "cam1", 100, 0, &mut g, &all_alive));
    // pid gone
    let gone = |p: i32| p != 100;
    let c = claim(&mut t, "cam1", 200, 1, &mut g, &gone);
    assert!(matches!(c, Claimed::Mine { taken_over_from: Some(100), .. }));
    // the old owner learns it lost the claim, and cannot release the new one's
    assert_eq!(beat(&mut t, "cam1", 100, g1, Phase::Running, 2), None);
    release(&mut t, "cam1", 100, g1);
    assert_eq!(held(&t).count(), 1);
    // not refreshed for STALE_MS: taken over though the pid is there
    let g3 = mine(claim(&mut t, "cam2", 300, 0, &mut g, &all_alive));
    assert!(matches!(claim(&mut t, "cam2", 400, STALE_MS, &mut g, &all_alive), Claimed::Other { .. }));
    assert_eq!(beat(&mut t, "cam2", 300, g3, Phase::Running, STALE_MS), Some(STALE_MS));
    let c = claim(&mut t, "cam2", 400, 2 * STALE_MS + 1, &mut g, &all_alive);
    assert!(matches!(c, Claimed::Mine { taken_over_from: Some(300), .. }));
}

#[test]
fn a_stopping_owner_is_waited_for() {
    let mut t = empty(2);
    let mut g = 0;
    let g1 = mine(claim(&mut t, "cam1", 100, 0, &mut g, &all_alive));
    beat(&mut t, "cam1", 100, g1, Phase::Stopping, 1);
    assert_eq!(
        claim(&mut t, "cam1", 200, 2, &mut g, &all_alive),
        Claimed::Other { owner: 100, phase: Phase::Stopping }
    );
    assert_eq!(peek(&mut t, "cam1", 200, 2, &all_alive), Some(Phase::Stopping));
    release(&mut t, "cam1", 100, g1);
    assert_eq!(peek(&mut t, "cam1", 200, 3, &all_alive), None);
    mine(claim(&mut t, "cam1", 200, 3, &mut g, &all_alive));
}

#[test]
fn a_full_table_reuses_dead_claims() {
    let mut t = empty(1);
    let mut g = 0;
    mine(claim(&mut t, "a", 1, 0, &mut g, &all_alive));
    assert_eq!(claim(&mut t, "b", 2, 1, &mut g, &all_alive), Claimed::Full);
    mine(claim(&mut t, "b", 2, STALE_MS + 1, &mut g, &all_alive));
}

#[test]
fn secrets_are_single_use_bound_and_expire() {
    let mut t = empty(2);
    let mut g = 0;
    let g1 = mine(claim(&mut t, "cam1", 100, 0, &mut g, &all_alive));
    assert!(!set_secret(&mut t, "cam1", 200, g1, "abc", 10), "only the owner");
    assert!(set_secret(&mut t, "cam1", 100, g1, "abcd", 10));
    assert!(!take_secret(&mut t, "cam2", "abcd", 1));
    assert!(!take_secret(&mut t, "cam1", "abc", 1), "a prefix");
    assert!(!take_secret(&mut t, "cam1", "", 1));
    assert!(take_secret(&mut t, "cam1", "abcd", 1));
    assert!(!take_secret(&mut t, "cam1", "abcd", 2), "once");
    assert!(set_secret(&mut t, "cam1", 100, g1, "efgh", 10));
    assert!(!take_secret(&mut t, "cam1", "efgh", 10), "expired");
    assert!(!take_secret(&mut t, "cam1", "efgh", 5), "and gone");
    assert!(set_secret(&mut t, "cam1", 100, g1, "ijkl", 10));
    revoke_secret(&mut t, "cam1", 100);
    assert!(!take_secret(&mut t, "cam1", "ijkl", 5), "revoked");
}

#[test]
fn release_all_frees_a_leaving_worker() {
    let mut t = empty(3);
    let mut g = 0;
    mine(claim(&mut t, "a", 1, 0, &mut g, &all_alive));
    mine(claim(&mut t, "b", 1, 0, &mut g, &all_alive));
    mine(claim(&mut t, "c", 2, 0, &mut g, &all_alive));
    release_all(&mut t, 1);
    assert_eq!(held(&t).map(|(p, _)| p).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn an_owner_back_from_silence_takes_a_freed_claim_again() {
    let mut t = empty(2);
    let mut g = 0;
    let g1 = mine(claim(&mut t, "cam1", 100, 0, &mut g, &all_alive));
    // silent: taken over, and let go by the new owner (it could not lock the directory)
    let g2 = mine(claim(&mut t, "cam1", 200, 2 * STALE_MS, &mut g, &all_alive));
    release(&mut t, "cam1", 200, g2);
    assert_eq!(beat(&mut t, "cam1", 100, g1, Phase::Running, 2 * STALE_MS + 1), Some(0));
    assert_eq!(
        claim(&mut t, "cam1", 200, 2 * STALE_MS + 2, &mut g, &all_alive),
        Claimed::Other { owner: 100, phase: Phase::Running }
    );
    // but not one another owner holds
    mine(claim(&mut t, "cam2", 300, 0, &mut g, &all_alive));
    assert_eq!(beat(&mut t, "cam2", 100, g1, Phase::Running, 1), None);
}
