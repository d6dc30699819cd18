//! Announce and heartbeat, and the resync they drive: a heartbeat answer (signed) carries the
//! table version the master holds for this node; when it is newer than the one in force and the
//! long poll has not brought it within [`Config::resync_grace`](crate::agent::Config), the poll
//! is stale (a master that stalled or restarted lost it) and the table is fetched at once.
//!
//! While the master is unreachable, announce and heartbeat are retried with backoff, never
//! slower than the heartbeat interval: a node that comes back later than that would be
//! declared dead by the master, and the master's recovery is seen within one interval.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mesh_core::wire::Announce;

use crate::agent::Level;
use crate::client::{CallError, Master};
use crate::link::{unix_now, Link};
use crate::poll::take_table;
use crate::shared::{Behind, Shared};
use crate::state::{Applied, Update};

/// The shortest time between two heartbeats, however often one is asked for now
/// ([`crate::agent::Agent::beat_now`]): a few a second at most.
pub const MIN_BEAT_GAP: Duration = Duration::from_millis(250);

fn announce_payload(s: &Shared) -> Announce {
    Announce {
        node_id: s.cfg.node_id.clone(),
        role: s.state.node().role,
        rtmp_url: s.cfg.rtmp_url.clone(),
        http_url: s.cfg.http_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: s.cfg.capabilities.clone(),
    }
}

pub(crate) fn control_loop(m: &dyn Master, s: &Shared) {
    let mut announce = Link::new("announce", &s.cfg);
    let mut beat = Link::new("heartbeat", &s.cfg);
    let mut resync = Resync::default();
    let mut interval = s.cfg.heartbeat_interval;
    let mut announced = false;
    let mut awaiting = false;
    // Heartbeats go every interval, start to start (a slow answer or a resync between two does
    // not push the next one later).
    let mut next_beat = Instant::now();
    let mut last_beat: Option<Instant> = None;
    while s.speaking() {
        if !announced {
            let began = Instant::now();
            match m.announce(&announce_payload(s)) {
                Ok(r) => {
                    if awaiting {
                        awaiting = false;
                        s.awaiting.store(false, Ordering::Relaxed);
                        s.link_status("announce", |l| l.awaiting_approval = false);
                        let role = r.role.map_or("?", |r| r.as_str());
                        s.log(
                            Level::Notice,
                            format!("mesh: approved by the master: role \"{role}\" granted"),
                        );
                    }
                    announce.ok(s);
                    announced = true;
                    if let Some(i) = r.heartbeat_interval_s.filter(|i| *i > 0) {
                        interval = Duration::from_secs(i);
                    }
                    s.set_master_epoch(r.epoch);
                    if let Some(role) = r.role {
                        s.state.apply(&*s.sink, Update::Role(role));
                    }
                    // The master knows us (again): a poll waiting out its backoff goes now,
                    // and the heartbeat follows at once.
                    s.poke_poll();
                }
                Err(e) if is_pending(&e) => {
                    // Logged once; announced again every interval until an admin grants a role.
                    let msg = format!(
                        "mesh: awaiting approval: the master grants this node no role yet ({e}); an admin \
                         grants one (PUT /admin/nodes/{}/role); announcing again every {}s",
                        s.cfg.node_id,
                        interval.as_secs()
                    );
                    if !awaiting && announce.is_down() {
                        s.log(Level::Warn, msg.clone());
                    }
                    awaiting = true;
                    s.awaiting.store(true, Ordering::Relaxed);
                    s.link_status("announce", |l| l.awaiting_approval = true);
                    announce.fail_with(s, msg, began);
                    s.sleep_voice(interval);
                    continue;
                }
                Err(e) => {
                    let d = announce.fail(s, &e, began);
                    s.sleep_voice(d.min(interval));
                    continue;
                }
            }
        } else if !s.sleep_beat(next_beat.saturating_duration_since(Instant::now())) {
            break;
        } else if Instant::now() < next_beat {
            // Asked for now (a push went down): the master hears of it within this round trip,
            // but never more often than every MIN_BEAT_GAP.
            let since = last_beat.map_or(MIN_BEAT_GAP, |b: Instant| b.elapsed());
            if since < MIN_BEAT_GAP && !s.sleep_voice(MIN_BEAT_GAP - since) {
                break;
            }
        }
        let mut hb = crate::generations::with_others(s, s.sink.heartbeat());
        hb.uptime_s = s.uptime();
        let began = Instant::now();
        next_beat = began + interval;
        last_beat = Some(began);
        match m.heartbeat(&hb) {
            Ok(r) => {
                let was_down = beat.is_down();
                beat.ok(s);
                if was_down {
                    s.poke_poll();
                }
                if let Some(role) = r.role {
                    s.state.apply(&*s.sink, Update::Role(role));
                }
                s.set_master_epoch(r.epoch.clone());
                if let Some(v) = r.table_version {
                    resync.check(m, s, v, r.epoch.as_deref());
                }
            }
            Err(e) => {
                // The master may have lost us (a restart): announce again once it answers.
                announced = false;
                let d = beat.fail(s, &e, began);
                s.sleep_voice(d.min(interval));
            }
        }
    }
}

/// The master's answer to a node without a granted role (docs/protocol.md, "Roles").
pub(crate) fn is_pending(e: &CallError) -> bool {
    matches!(e, CallError::Refused { status: 403, reason } if reason.starts_with("awaiting approval"))
}

/// What the heartbeats said about the table versions, so each is logged once.
#[derive(Default)]
struct Resync {
    /// The newest version the poll loop was woken for.
    poked: u64,
    /// The newest version a resync was logged for, and whether its failure was.
    logged: u64,
    failed_logged: u64,
}

impl Resync {
    /// The master holds table `v` of `epoch` for this node (a signed heartbeat answer).
    fn check(&mut self, m: &dyn Master, s: &Shared, v: u64, epoch: Option<&str>) {
        // Behind: a newer version, or a table of another epoch (a new master database).
        if s.state.has(epoch, v) || (epoch.is_none() && v <= s.state.version()) {
            s.set_behind(None);
            return;
        }
        let new_epoch = epoch.is_some_and(|e| s.state.epoch().as_deref() != Some(e));
        // A poll waiting out a backoff goes now (once per version, so a failing fetch keeps
        // its backoff).
        if v > self.poked || new_epoch {
            self.poked = v;
            s.poke_poll();
        }
        // A live long poll brings a new table within moments of the change (no wait when the
        // poll is known stale for this version already).
        let want = |b: &Behind| b.version == v && b.epoch.as_deref() == epoch;
        let stale = s.behind().is_some_and(|b| want(&b));
        if !stale && s.state.wait_version(epoch, v, s.cfg.resync_grace) {
            s.set_behind(None);
            return;
        }
        if !stale {
            s.set_behind(Some(Behind {
                version: v,
                epoch: epoch.map(str::to_string),
                since_unix: unix_now(),
            }));
        }
        let running = s.state.version();
        let of_epoch = match (new_epoch, epoch) {
            (true, Some(e)) => format!(" of master epoch {e}"),
            _ => String::new(),
        };
        if v > self.logged || new_epoch && !stale {
            self.logged = v;
            s.log(
                Level::Notice,
                format!("mesh: master holds table version {v}{of_epoch} for this node, which runs {running}: the long poll has not brought it, fetching it now"),
            );
        }
        let why = match m.streams(s.since(), Duration::ZERO) {
            Ok(Some(body)) => match take_table(s, &body) {
                Ok(Applied::Installed { .. }) | Ok(Applied::Same) if s.state.has(epoch, v) => {
                    s.set_behind(None);
                    // The streams link works: a poll waiting out its backoff goes now.
                    s.streams.lock().ok(s);
                    s.poke_poll();
                    return;
                }
                Ok(Applied::Older { running }) => {
                    format!("the master sent an older table (version {running} in force)")
                }
                Ok(_) => "the master sent an older table".to_string(),
                Err(e) => format!("table refused: {e}"),
            },
            Ok(None) => "the master answered 304".to_string(),
            Err(e) => e.to_string(),
        };
        if v > self.failed_logged || new_epoch && !stale {
            self.failed_logged = v;
            s.log(
                Level::Error,
                format!("mesh: master holds table version {v}{of_epoch} for this node but it cannot be fetched: {why}; keeping table version {running}, trying again at each heartbeat"),
            );
        }
    }
}
