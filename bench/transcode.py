#!/usr/bin/env python3
"""Benchmark 6: CPU per minute of video for a 3-rendition ladder.

Ours: the edge's one ffmpeg (the argv the module builds, printed by mesh-core's ffmpeg_argv
example), one encode whose CMAF segments serve both the DASH MPD and the HLS playlists.
Against: what a user would otherwise run, separate HLS (MPEG-TS, one audio per variant) and DASH
outputs of the same ladder, two ffmpeg processes. Same input file, read as fast as ffmpeg goes;
CPU is the children's user + system time (wait4), so machine load does not change it much.

    python3 bench/transcode.py [--seconds 20] [--runs 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LADDER = ["720p 1280x720 2800k 128k", "480p 854x480 1400k 128k", "360p 640x360 800k 96k"]
SEG = "2"


def cpu_of(argv):
    """Run argv; its user + system CPU seconds."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"transcode: {' '.join(argv[:12])}... failed:\n{err}")
    return ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mesh-bench-transcode-")
    try:
        src = os.path.join(work, "in.flv")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(a.seconds), "-c:v", "libx264", "-preset",
                        "veryfast", "-b:v", "4000k", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                        "-f", "flv", src], check=True)
        out = subprocess.run(["cargo", "run", "-q", "--release", "-p", "mesh-core", "--example", "ffmpeg_argv", "--",
                              src, os.path.join(work, "cmaf"), SEG, *LADDER], check=True, capture_output=True,
                             text=True, cwd=TOP).stdout
        ours = json.loads(out)
        # A file input takes no network timeout.
        i = ours.index("-rw_timeout")
        del ours[i:i + 2]
        encode = ours[:ours.index("-f")]  # inputs, maps, codecs: everything but the muxer
        n = len(LADDER)

        # HLS on its own: MPEG-TS variants, each with its own audio, and a master playlist.
        head = encode[:encode.index("-map")]
        codecs = encode[encode.index("-c:v:0"):encode.index("-c:a")]
        hls = head + sum([["-map", "0:v:0", "-map", "0:a:0"] for _ in range(n)], []) + codecs + \
            ["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "hls", "-hls_time", SEG, "-hls_list_size", "5",
             "-master_pl_name", "master.m3u8", "-var_stream_map", " ".join(f"v:{k},a:{k}" for k in range(n)),
             os.path.join(work, "hls", "v%v", "index.m3u8")]
        # DASH on its own: the same encode, the dash muxer without HLS playlists.
        dash = encode + ["-f", "dash", "-seg_duration", SEG, "-window_size", "5", "-use_template", "1",
                         "-use_timeline", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
                         os.path.join(work, "dash", "manifest.mpd")]

        minutes = a.seconds / 60
        rows = []
        for run in range(a.runs):
            for d in ("cmaf", "hls", "dash"):
                shutil.rmtree(os.path.join(work, d), ignore_errors=True)
                os.makedirs(os.path.join(work, d))
            c_ours = cpu_of(ours) / minutes
            c_hls = cpu_of(hls) / minutes
            c_dash = cpu_of(dash) / minutes
            rows.append((c_ours, c_hls, c_dash))
        print(f"| run ({a.seconds} s of 720p25 input, ladder {' / '.join(r.split()[0] for r in LADDER)}) "
              f"| ours: one CMAF encode, CPU s / min | separate HLS | separate DASH | HLS + DASH | ratio ours / separate |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, (o, h, d) in enumerate(rows, 1):
            print(f"| {k} | {o:.1f} | {h:.1f} | {d:.1f} | {h + d:.1f} | {o / (h + d):.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
