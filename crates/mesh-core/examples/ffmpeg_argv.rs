//! Print, as JSON, the ffmpeg argv an edge runs for one stream (bench/transcode.py uses it, so
//! the benchmark measures the command the module really runs).
//!
//!     cargo run -q --release -p mesh-core --example ffmpeg_argv -- <input> <out dir> <seg s> \
//!         "720p 1280x720 2800k 128k" "360p 640x360 800k 96k" ...

use mesh_core::media::{ffmpeg_argv, parse_rendition, Job, Ladder};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: ffmpeg_argv <input> <out dir> <segment s> <rendition>...");
        std::process::exit(2);
    }
    let renditions = args[3..]
        .iter()
        .map(|r| parse_rendition(&r.split_whitespace().collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("rendition: {e}"));
    let ladder = Ladder::new(renditions).unwrap_or_else(|e| panic!("ladder: {e}"));
    let argv = ffmpeg_argv(&Job {
        ffmpeg: "ffmpeg",
        input: &args[0],
        out_dir: &args[1],
        ladder: &ladder,
        segment_s: args[2].parse().expect("segment seconds"),
        window: 5,
        audio: true,
    });
    println!("{}", serde_json::to_string(&argv).expect("strings"));
}
