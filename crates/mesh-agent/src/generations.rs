//! The figures of a node's other generation, during a binary upgrade. Workers of one nginx
//! master process share its shared zone (whatever reloads), so the voice's heartbeat counts
//! them all; a binary upgrade runs a second master process, with a zone of its own, next to
//! the first until the first one's workers have left. Its sessions (the broadcaster still on an
//! old worker) must still count, or the master would take their streams for ended.
//!
//! So the voice writes its generation (its master process's pid) into the voice lock; every
//! other process reads it each second, and when the voice is of another generation writes its
//! own generation's figures beside the lock (`<lock>.<generation>`, 0600, replaced whole); the
//! voice adds every fresh one to its heartbeat. A voice that takes over from another
//! generation waits [`HANDOVER`] first, for the files of the generation it takes over from.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_core::wire::Heartbeat;

use crate::load::write_atomic;
use crate::shared::Shared;

/// A generation's figures older than this are not counted (its processes are gone).
pub const FRESH: Duration = Duration::from_secs(5);
/// One older than this is removed.
const STALE: Duration = Duration::from_secs(60);
/// How long a voice taking over from another generation waits before its first heartbeat.
pub const HANDOVER: Duration = Duration::from_millis(1500);
/// The most a generation's figures file is read.
const MAX_BYTES: u64 = 4 << 20;

/// The generation that holds the voice, as written in the lock (0: none written).
pub(crate) fn holder(lock: &Path) -> u32 {
    let mut s = String::new();
    let read = fs::File::open(lock).and_then(|f| f.take(32).read_to_string(&mut s));
    read.ok().and_then(|_| s.trim().parse().ok()).unwrap_or(0)
}

/// The voice took the lock: write its generation there; returns the one written before.
pub(crate) fn claim(lock: &mut fs::File, generation: u32) -> u32 {
    let mut s = String::new();
    let _ = lock.seek(SeekFrom::Start(0));
    let before =
        (&mut *lock).take(32).read_to_string(&mut s).ok().and_then(|_| s.trim().parse().ok()).unwrap_or(0);
    let _ = lock.set_len(0);
    let _ = lock.seek(SeekFrom::Start(0));
    let _ = lock.write_all(format!("{generation}\n").as_bytes());
    before
}

fn file_of(lock: &Path, generation: u32) -> PathBuf {
    let mut name = lock.as_os_str().to_owned();
    name.push(format!(".{generation}"));
    name.into()
}

/// A process that does not speak for the node (each second): when the voice is of another
/// generation, leave this generation's figures for it.
pub(crate) fn report(s: &Shared) {
    let Some(lock) = &s.cfg.voice_lock else { return };
    let h = holder(lock);
    if h == 0 || h == s.cfg.generation {
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(&s.sink.heartbeat()) {
        let _ = write_atomic(&file_of(lock, s.cfg.generation), &bytes);
    }
}

/// The voice's heartbeat with the figures of every other generation still running added.
pub(crate) fn with_others(s: &Shared, mut hb: Heartbeat) -> Heartbeat {
    let Some(lock) = &s.cfg.voice_lock else { return hb };
    let (Some(dir), Some(name)) = (lock.parent(), lock.file_name().and_then(|n| n.to_str())) else {
        return hb;
    };
    let prefix = format!("{name}.");
    let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else {
        return hb;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(generation) =
            file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|g| g.parse::<u32>().ok())
        else {
            continue;
        };
        let age = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        match age {
            _ if generation == s.cfg.generation => {
                let _ = fs::remove_file(e.path());
            }
            Some(a) if a <= FRESH && e.metadata().is_ok_and(|md| crate::voice::written_by_us(&md)) => {
                let mut bytes = Vec::new();
                let read = fs::File::open(e.path()).and_then(|f| f.take(MAX_BYTES).read_to_end(&mut bytes));
                if let (Ok(_), Ok(other)) = (read, serde_json::from_slice::<Heartbeat>(&bytes)) {
                    merge(&mut hb, other);
                }
            }
            Some(a) if a > STALE => {
                let _ = fs::remove_file(e.path());
            }
            _ => {}
        }
    }
    hb
}

/// Add another generation's figures: a stream once, its viewers and input added up.
fn merge(hb: &mut Heartbeat, other: Heartbeat) {
    for st in other.streams {
        match hb.streams.iter_mut().find(|x| x.stream == st.stream) {
            Some(x) => {
                x.viewers += st.viewers;
                x.in_kbps += st.in_kbps;
            }
            None => hb.streams.push(st),
        }
    }
    hb.pushes.extend(other.pushes);
    hb.transcodes.extend(other.transcodes);
    hb.load.connections += other.load.connections;
    hb.load.in_kbps += other.load.in_kbps;
    hb.load.out_kbps += other.load.out_kbps;
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::wire::StreamStat;
    use mesh_core::Role;

    struct Figures(Heartbeat);
    impl crate::agent::Sink for Figures {
        fn send(&self, _: crate::agent::Event) {}
        fn heartbeat(&self) -> Heartbeat {
            self.0.clone()
        }
    }

    fn shared(lock: &Path, generation: u32, hb: Heartbeat) -> std::sync::Arc<Shared> {
        let cfg = crate::agent::Config { voice_lock: Some(lock.into()), generation, ..Default::default() };
        Shared::new(
            cfg,
            std::sync::Arc::new(mesh_core::node::Node::standalone()),
            std::sync::Arc::new(Figures(hb)),
        )
    }

    /// A binary upgrade: the voice (generation 1) counts the stream of generation 2, which
    /// writes its figures only while the voice is of another generation.
    #[test]
    fn the_voice_counts_the_other_generations_figures() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("mesh-agent-generations-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let lock = d.join("t.json.voice");
        let st = StreamStat { stream: "cam1".into(), source: "broadcaster".into(), viewers: 1, in_kbps: 900 };
        let old = shared(&lock, 2, Heartbeat { streams: vec![st], ..Heartbeat::empty("i", Role::Ingest) });
        let voice = shared(&lock, 1, Heartbeat::empty("i", Role::Ingest));
        let mut f =
            fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).unwrap();
        assert_eq!(claim(&mut f, 2), 0);
        report(&old);
        assert!(!file_of(&lock, 2).exists(), "its own generation speaks: nothing to leave");
        assert_eq!(claim(&mut f, 1), 2);
        assert_eq!(holder(&lock), 1);
        report(&old);
        assert_eq!(fs::metadata(file_of(&lock, 2)).unwrap().permissions().mode() & 0o777, 0o600);
        let hb = with_others(&voice, voice.sink.heartbeat());
        assert_eq!(hb.streams.iter().map(|s| s.stream.as_str()).collect::<Vec<_>>(), ["cam1"]);
        // A voice's own generation's file (left from when it followed) is not counted, and goes.
        let mine = shared(&lock, 2, Heartbeat::empty("i", Role::Ingest));
        assert!(with_others(&mine, mine.sink.heartbeat()).streams.is_empty());
        assert!(!file_of(&lock, 2).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stream_of_another_generation_counts_once() {
        let st = |viewers| StreamStat {
            stream: "cam1".into(),
            source: "broadcaster".into(),
            viewers,
            in_kbps: 900,
        };
        let mut hb = Heartbeat { streams: vec![st(2)], ..Heartbeat::empty("i", Role::Ingest) };
        let mut other = Heartbeat { streams: vec![st(3)], ..Heartbeat::empty("i", Role::Ingest) };
        other.streams.push(StreamStat { stream: "cam2".into(), ..st(0) });
        other.load.connections = 4;
        merge(&mut hb, other);
        assert_eq!(hb.streams.len(), 2);
        assert_eq!((hb.streams[0].viewers, hb.streams[0].in_kbps), (5, 1800));
        assert_eq!(hb.load.connections, 4);
    }
}
