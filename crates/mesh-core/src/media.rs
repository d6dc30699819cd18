//! Edge media: the ABR ladder, the one ffmpeg command that serves HLS and DASH from the same
//! CMAF segments, and which files a viewer may ask for. Pure: the glue runs the command and
//! serves the files.
//!
//! One ffmpeg per stream: its dash muxer with `hls_playlist` writes `manifest.mpd` (DASH),
//! `master.m3u8` + `media_N.m3u8` (HLS) and one set of fMP4 segments both point to.

use std::borrow::Cow;
use std::fmt;

use crate::name::is_valid_id;

/// Most renditions in a ladder.
pub const MAX_RENDITIONS: usize = 6;

/// How a rendition is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Make {
    /// The input's video, copied without re-encoding.
    Source,
    /// Scaled and encoded with x264.
    Encode { width: u32, height: u32, video_kbps: u32, audio_kbps: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    pub make: Make,
}

/// Parse a `mesh_rendition` directive's arguments: `source`, or `<name> <W>x<H> <video>k <audio>k`.
pub fn parse_rendition(args: &[&str]) -> Result<Rendition, String> {
    match args {
        ["source"] => Ok(Rendition { name: "source".into(), make: Make::Source }),
        [name, size, video, audio] => {
            if *name == "source" || !is_valid_id(name) || name.len() > 32 {
                return Err(format!("invalid rendition name \"{name}\""));
            }
            let (w, h) =
                size.split_once('x').ok_or_else(|| format!("invalid size \"{size}\", it must be WxH"))?;
            let dim = |v: &str| v.parse::<u32>().ok().filter(|d| (16..=7680).contains(d) && d % 2 == 0);
            let (Some(width), Some(height)) = (dim(w), dim(h)) else {
                return Err(format!("invalid size \"{size}\", it must be WxH with even sides of 16 to 7680"));
            };
            let kbps = |v: &str, what: &str, max: u32| {
                v.strip_suffix('k')
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| (16..=max).contains(n))
                    .ok_or_else(|| {
                        format!("invalid {what} bitrate \"{v}\", it must be like \"800k\" (16k to {max}k)")
                    })
            };
            Ok(Rendition {
                name: name.to_string(),
                make: Make::Encode {
                    width,
                    height,
                    video_kbps: kbps(video, "video", 50_000)?,
                    audio_kbps: kbps(audio, "audio", 512)?,
                },
            })
        }
        _ => Err("it must be \"source\" or \"<name> <W>x<H> <video>k <audio>k\"".into()),
    }
}

/// An ABR ladder: 1 to [`MAX_RENDITIONS`] renditions with distinct names, at most one `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(Vec<Rendition>);

impl Ladder {
    pub fn new(renditions: Vec<Rendition>) -> Result<Ladder, String> {
        if renditions.is_empty() {
            return Err("no rendition".into());
        }
        if renditions.len() > MAX_RENDITIONS {
            return Err(format!("more than {MAX_RENDITIONS} renditions"));
        }
        for (i, r) in renditions.iter().enumerate() {
            if renditions[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("rendition \"{}\" is duplicate", r.name));
            }
        }
        Ok(Ladder(renditions))
    }

    /// The default ladder: the source, copied.
    pub fn source_only() -> Ladder {
        Ladder(vec![Rendition { name: "source".into(), make: Make::Source }])
    }

    pub fn renditions(&self) -> &[Rendition] {
        &self.0
    }

    /// The audio bitrate: the highest any rendition asks for (128k with only `source`).
    fn audio_kbps(&self) -> u32 {
        self.0
            .iter()
            .filter_map(|r| match r.make {
                Make::Encode { audio_kbps, .. } => Some(audio_kbps),
                Make::Source => None,
            })
            .max()
            .unwrap_or(128)
    }
}

/// What one transcode reads and writes.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub ffmpeg: &'a str,
    /// Where ffmpeg plays the stream from (the node's own RTMP, with its internal key).
    pub input: &'a str,
    /// The stream's own directory (already made from a validated stream id).
    pub out_dir: &'a str,
    pub ladder: &'a Ladder,
    pub segment_s: f64,
    pub window: u32,
    pub audio: bool,
}

/// The ffmpeg command line, as argv (never through a shell). The first element is the program.
pub fn ffmpeg_argv(job: &Job<'_>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // Each line tagged with its level ([error], [warning]): the node logs it at that level.
    push(&[job.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "level+warning"]);
    // The input is a live stream whose feed may be replaced under the play session (another
    // root relay, a new push: the transcode rides through, src/rtmp/hooks.rs): the new feed's
    // timestamps are the broadcaster's, later by the gap (or from 0 for a new publish). The
    // live FLV demuxer lets ffmpeg see such a jump, and a threshold of a quarter second takes it
    // out (the new feed follows on from the old one), so the segments stay continuous: no hole
    // in the middle of one, which hls.js and dash.js stall on and the playlist cannot mark
    // (the DASH muxer writes no EXT-X-DISCONTINUITY). A gap shorter than that stays a gap.
    push(&["-f", "live_flv", "-dts_delta_threshold", DTS_JUMP_S]);
    push(&["-rw_timeout", "15000000", "-i", job.input]);
    for _ in job.ladder.renditions() {
        push(&["-map", "0:v:0"]);
    }
    if job.audio {
        push(&["-map", "0:a:0"]);
    }
    let seg = trim_float(job.segment_s);
    // Keyframes, hence segment boundaries, at the same instants in every rendition, so that
    // players switch cleanly. With a copied source: the copy starts at the first keyframe ffmpeg
    // receives, so the encoded renditions drop the decoded frames before it (`select` on
    // `key`, counted in the filter's variable 0), then cut where the source has keyframes and
    // only there (no keyframe of x264's own). Without one: all cut every segment duration.
    let copies_source = job.ladder.renditions().iter().any(|r| r.make == Make::Source);
    for (i, r) in job.ladder.renditions().iter().enumerate() {
        let v = |opt: &str| format!("-{opt}:v:{i}");
        match &r.make {
            Make::Source => push(&[&v("c"), "copy"]),
            Make::Encode { width, height, video_kbps, .. } => {
                let (rate, max, buf) =
                    (video_kbps, video_kbps + video_kbps / 14, video_kbps + video_kbps / 2);
                // 4:2:0, whatever the input: what browsers and the main profile take.
                let from_key = if copies_source { FROM_FIRST_KEYFRAME } else { "" };
                let filter = format!("{from_key}scale={width}:{height},format=yuv420p");
                push(&[&v("c"), "libx264", &v("filter"), &filter]);
                push(&[
                    &v("b"),
                    &format!("{rate}k"),
                    &v("maxrate"),
                    &format!("{max}k"),
                    &v("bufsize"),
                    &format!("{buf}k"),
                ]);
                push(&[&v("preset"), "veryfast", &v("profile"), "main"]);
                if copies_source {
                    // Frames keep their times (no frames made up from 0 to a constant rate
                    // ahead of the first one: the copy starts where its first keyframe is),
                    // and in the source's time base, so that they are the same instants exactly.
                    push(&[&v("fps_mode"), "passthrough", &v("enc_time_base"), "-1"]);
                    push(&[&v("force_key_frames"), "source", &v("g"), "1000000"]);
                } else {
                    push(&[&v("force_key_frames"), &format!("expr:gte(t,n_forced*{seg})")]);
                }
            }
        }
    }
    push(&["-sc_threshold", "0"]);
    if job.audio {
        push(&["-c:a", "aac", "-b:a", &format!("{}k", job.ladder.audio_kbps()), "-ac", "2"]);
    }
    let sets = if job.audio { "id=0,streams=v id=1,streams=a" } else { "id=0,streams=v" };
    push(&["-f", "dash", "-seg_duration", &seg, "-window_size", &job.window.to_string()]);
    push(&["-extra_window_size", "2", "-use_template", "1", "-use_timeline", "1"]);
    push(&["-hls_playlist", "1", "-remove_at_exit", "1", "-adaptation_sets", sets]);
    push(&["-init_seg_name", "init-$RepresentationID$.m4s"]);
    push(&["-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s"]);
    push(&[&format!("{}/manifest.mpd", job.out_dir.trim_end_matches('/'))]);
    a
}

/// The timestamp jump (seconds) in the input that ffmpeg takes out.
const DTS_JUMP_S: &str = "0.25";

/// A video filter that passes every frame from the first keyframe on.
const FROM_FIRST_KEYFRAME: &str = "select='gt(st(0,ld(0)+key),0)',";

fn trim_float(f: f64) -> String {
    let s = format!("{f:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// How bad a line of ffmpeg's diagnostics is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    /// Untagged (not from ffmpeg's logger).
    Other,
}

/// A line ffmpeg printed with `-loglevel level+...` (`[rtmp @ 0x55..] [error] Server error`):
/// its level, and the line without the level's tag.
pub fn ffmpeg_log_line(line: &str) -> (LogLevel, String) {
    const TAGS: [(&str, LogLevel); 4] = [
        ("[panic] ", LogLevel::Error),
        ("[fatal] ", LogLevel::Error),
        ("[error] ", LogLevel::Error),
        ("[warning] ", LogLevel::Warning),
    ];
    let first = TAGS
        .iter()
        .filter_map(|(tag, level)| line.find(tag).map(|i| (i, tag.len(), *level)))
        .min_by_key(|(i, _, _)| *i);
    match first {
        Some((i, len, level)) => (level, format!("{}{}", &line[..i], &line[i + len..])),
        None => (LogLevel::Other, line.to_string()),
    }
}

/// The two ways to ask for a stream's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Hls,
    Dash,
}

/// Playlists and manifests change every segment; segments never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Manifest,
    Segment,
}

/// A file a viewer may ask for: its name borrowed from the request path while a request is
/// looked at ([`parse_media_path`]), owned ([`MediaFile::into_owned`]) by what outlives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile<'a> {
    pub name: Cow<'a, str>,
    pub mime: &'static str,
    pub cache: Cache,
    /// The entry point of its format (master playlist, MPD): starts the transcode.
    pub entry: bool,
}

impl MediaFile<'_> {
    /// The same file, its name owned.
    pub fn into_owned(self) -> MediaFile<'static> {
        MediaFile {
            name: Cow::Owned(self.name.into_owned()),
            mime: self.mime,
            cache: self.cache,
            entry: self.entry,
        }
    }

    /// `Cache-Control` for the file: `private`, as every one is served only with a viewer's
    /// token and a manifest carries that token in its URLs. A shared cache (a CDN set to ignore
    /// the query, as many are for segments) would otherwise serve them to anyone, tokenless,
    /// and hand one viewer's token to the next.
    /// A segment's is a constant (no allocation on the segment path).
    pub fn cache_control(&self, segment_s: f64) -> Cow<'static, str> {
        match self.cache {
            Cache::Manifest => {
                Cow::Owned(format!("private, max-age={}", (segment_s / 2.0).floor().max(1.0) as u64))
            }
            Cache::Segment => Cow::Borrowed(SEGMENT_CACHE_CONTROL),
        }
    }
}

/// `Cache-Control` of every segment.
pub const SEGMENT_CACHE_CONTROL: &str = "private, max-age=3600";

/// Why a media request is refused before it touches the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaError {
    /// Not `<prefix><stream>/<file>`.
    BadPath,
    BadStream,
    /// A file name no transcode writes.
    UnknownFile,
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaError::BadPath => "bad path",
            MediaError::BadStream => "bad stream name",
            MediaError::UnknownFile => "no such media file",
        })
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Classify a file name of `format`: only names ffmpeg's dash muxer writes with our options.
pub fn media_file(format: Format, name: &str) -> Option<MediaFile<'_>> {
    let file = |mime, cache, entry| Some(MediaFile { name: Cow::Borrowed(name), mime, cache, entry });
    let seg = |n: &str| {
        n.strip_prefix("init-").and_then(|r| r.strip_suffix(".m4s")).is_some_and(digits)
            || n.strip_prefix("chunk-")
                .and_then(|r| r.strip_suffix(".m4s"))
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(rep, num)| digits(rep) && digits(num))
    };
    match format {
        Format::Hls if name == "master.m3u8" => file("application/vnd.apple.mpegurl", Cache::Manifest, true),
        Format::Hls
            if name.strip_prefix("media_").and_then(|r| r.strip_suffix(".m3u8")).is_some_and(digits) =>
        {
            file("application/vnd.apple.mpegurl", Cache::Manifest, false)
        }
        Format::Dash if name == "manifest.mpd" => file("application/dash+xml", Cache::Manifest, true),
        _ if seg(name) => file("video/mp4", Cache::Segment, false),
        _ => None,
    }
}

/// Split a request path `<prefix><stream>/<file>` (query already removed) and check both parts.
pub fn parse_media_path<'a>(
    prefix: &str,
    path: &'a str,
    format: Format,
) -> Result<(&'a str, MediaFile<'a>), MediaError> {
    let rest = path.strip_prefix(prefix).ok_or(MediaError::BadPath)?;
    let (stream, name) = rest.split_once('/').ok_or(MediaError::BadPath)?;
    if !is_valid_id(stream) {
        return Err(MediaError::BadStream);
    }
    let file = media_file(format, name).ok_or(MediaError::UnknownFile)?;
    Ok((stream, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(name: &str, w: u32, h: u32, v: u32, a: u32) -> Rendition {
        Rendition {
            name: name.into(),
            make: Make::Encode { width: w, height: h, video_kbps: v, audio_kbps: a },
        }
    }

    #[test]
    fn renditions_parse() {
        assert_eq!(parse_rendition(&["source"]), Ok(Rendition { name: "source".into(), make: Make::Source }));
        assert_eq!(parse_rendition(&["360p", "640x360", "800k", "96k"]), Ok(enc("360p", 640, 360, 800, 96)));
        let bad: &[(&[&str], &str)] = &[
            (&["360p", "640x361", "800k", "96k"], "invalid size"),
            (&["360p", "640", "800k", "96k"], "invalid size"),
            (&["360p", "640x360", "800", "96k"], "invalid video bitrate"),
            (&["360p", "640x360", "800k", "9k"], "invalid audio bitrate"),
            (&["../x", "640x360", "800k", "96k"], "invalid rendition name"),
            (&["source", "640x360", "800k", "96k"], "invalid rendition name"),
            (&["360p"], "it must be"),
            (&[], "it must be"),
        ];
        for (args, want) in bad {
            let e = parse_rendition(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn ladders_validate() {
        assert!(Ladder::new(vec![]).is_err());
        let dup = Ladder::new(vec![enc("a", 640, 360, 800, 96), enc("a", 320, 180, 300, 64)]);
        assert_eq!(dup.unwrap_err(), "rendition \"a\" is duplicate");
        let too_many = (0..7).map(|i| enc(&format!("r{i}"), 320, 180, 300, 64)).collect();
        assert!(Ladder::new(too_many).is_err());
    }

    #[test]
    fn argv_for_a_three_rendition_ladder() {
        let ladder = Ladder::new(vec![
            Rendition { name: "source".into(), make: Make::Source },
            enc("720p", 1280, 720, 2800, 128),
            enc("360p", 640, 360, 800, 96),
        ])
        .unwrap();
        let job = Job {
            ffmpeg: "/usr/bin/ffmpeg",
            input: "rtmp://127.0.0.1:1935/relay/cam1?node=edge-1&key=k",
            out_dir: "/var/lib/mesh/cam1/",
            ladder: &ladder,
            segment_s: 2.0,
            window: 6,
            audio: true,
        };
        let a = ffmpeg_argv(&job);
        let s = a.join(" ");
        assert_eq!(a[0], "/usr/bin/ffmpeg");
        assert_eq!(a.iter().filter(|x| *x == "0:v:0").count(), 3, "{s}");
        assert!(s.contains("-map 0:a:0"), "{s}");
        assert!(s.contains("-c:v:0 copy"), "{s}");
        assert!(s.contains("-c:v:1 libx264 -filter:v:1 select='gt(st(0,ld(0)+key),0)',scale=1280:720,format=yuv420p -b:v:1 2800k -maxrate:v:1 3000k -bufsize:v:1 4200k"), "{s}");
        assert!(s.contains("-loglevel level+warning"), "{s}");
        // A replaced feed's timestamp jump is taken out before the segments see it.
        assert!(s.contains("-f live_flv -dts_delta_threshold 0.25 -rw_timeout 15000000 -i "), "{s}");
        // Aligned with the copied source: the encoded renditions cut at its keyframes only.
        assert!(s.contains("-c:v:0 copy -c:v:1 libx264"), "{s}");
        assert!(
            s.contains(
                "-fps_mode:v:1 passthrough -enc_time_base:v:1 -1 -force_key_frames:v:1 source -g:v:1 1000000"
            ),
            "{s}"
        );
        assert!(s.contains("-force_key_frames:v:2 source -g:v:2 1000000"), "{s}");
        assert!(!s.contains("n_forced"), "{s}");
        assert!(s.contains("-sc_threshold 0"), "{s}");
        assert!(s.contains("-c:a aac -b:a 128k"), "{s}");
        assert!(s.contains("-seg_duration 2 -window_size 6"), "{s}");
        assert!(s.contains("-adaptation_sets id=0,streams=v id=1,streams=a"), "{s}");
        assert!(s.contains("-hls_playlist 1 -remove_at_exit 1"), "{s}");
        assert_eq!(a.last().unwrap(), "/var/lib/mesh/cam1/manifest.mpd");
        // The input URL is one argument, whatever it holds: no shell ever sees it.
        assert!(a.contains(&job.input.to_string()));

        let no_audio = ffmpeg_argv(&Job { audio: false, segment_s: 1.5, ..job.clone() }).join(" ");
        assert!(!no_audio.contains("0:a:0") && !no_audio.contains("-c:a"), "{no_audio}");
        assert!(no_audio.contains("-adaptation_sets id=0,streams=v -init_seg_name"), "{no_audio}");
        assert!(no_audio.contains("-seg_duration 1.5"), "{no_audio}");

        // No copied source: every rendition cuts every segment duration.
        let encoded =
            Ladder::new(vec![enc("720p", 1280, 720, 2800, 128), enc("360p", 640, 360, 800, 96)]).unwrap();
        let e = ffmpeg_argv(&Job { ladder: &encoded, ..job.clone() }).join(" ");
        assert!(e.contains("-force_key_frames:v:0 expr:gte(t,n_forced*2)"), "{e}");
        assert!(e.contains("-force_key_frames:v:1 expr:gte(t,n_forced*2)"), "{e}");
        assert!(!e.contains(" source") && !e.contains("select="), "{e}");
        assert!(e.contains("-filter:v:0 scale=1280:720,format=yuv420p"), "{e}");
    }

    #[test]
    fn ffmpeg_log_levels() {
        let (l, s) = ffmpeg_log_line("[rtmp @ 0x55d] [error] Server error: Failed to play cam1");
        assert_eq!((l, s.as_str()), (LogLevel::Error, "[rtmp @ 0x55d] Server error: Failed to play cam1"));
        assert_eq!(ffmpeg_log_line("[fatal] x").0, LogLevel::Error);
        assert_eq!(ffmpeg_log_line("[dash @ 0x1] [warning] y"), (LogLevel::Warning, "[dash @ 0x1] y".into()));
        assert_eq!(ffmpeg_log_line("plain"), (LogLevel::Other, "plain".into()));
    }

    #[test]
    fn media_files_and_paths() {
        use Format::*;
        let ok = |f, n: &str| media_file(f, n).map(|m| (m.mime, m.cache, m.entry));
        assert_eq!(ok(Hls, "master.m3u8"), Some(("application/vnd.apple.mpegurl", Cache::Manifest, true)));
        assert_eq!(ok(Hls, "media_2.m3u8"), Some(("application/vnd.apple.mpegurl", Cache::Manifest, false)));
        assert_eq!(ok(Dash, "manifest.mpd"), Some(("application/dash+xml", Cache::Manifest, true)));
        assert_eq!(ok(Dash, "init-1.m4s"), Some(("video/mp4", Cache::Segment, false)));
        assert_eq!(ok(Hls, "chunk-0-00042.m4s"), Some(("video/mp4", Cache::Segment, false)));
        for bad in [
            "manifest.mpd.bak",
            "../manifest.mpd",
            "media_.m3u8",
            "chunk-0.m4s",
            "init-x.m4s",
            "chunk-0-1-2.m4s",
            "",
        ] {
            assert_eq!(media_file(Hls, bad), None, "{bad}");
        }
        assert_eq!(media_file(Hls, "manifest.mpd"), None, "an MPD is not HLS");
        assert_eq!(media_file(Dash, "master.m3u8"), None);

        assert_eq!(
            parse_media_path("/hls/", "/hls/cam1/master.m3u8", Hls).map(|(s, f)| (s, f.entry)),
            Ok(("cam1", true))
        );
        assert_eq!(
            parse_media_path("/hls/", "/hls/../etc/master.m3u8", Hls).unwrap_err(),
            MediaError::BadStream
        );
        assert_eq!(parse_media_path("/hls/", "/hls/cam1/../../x", Hls).unwrap_err(), MediaError::UnknownFile);
        assert_eq!(parse_media_path("/hls/", "/hls/cam1", Hls).unwrap_err(), MediaError::BadPath);
        assert_eq!(
            parse_media_path("/hls/", "/dash/cam1/manifest.mpd", Hls).unwrap_err(),
            MediaError::BadPath
        );
        assert_eq!(
            parse_media_path("/hls/", "/hls/a%2e%2e/master.m3u8", Hls).unwrap_err(),
            MediaError::BadStream
        );
    }

    #[test]
    fn cache_headers() {
        let m = media_file(Format::Hls, "master.m3u8").unwrap();
        assert_eq!(m.cache_control(2.0), "private, max-age=1");
        assert_eq!(m.cache_control(6.0), "private, max-age=3");
        // Red team: behind a token, never in a shared cache.
        assert_eq!(
            media_file(Format::Dash, "init-0.m4s").unwrap().cache_control(2.0),
            "private, max-age=3600"
        );
    }
}
