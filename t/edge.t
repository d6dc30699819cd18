#!/usr/bin/perl

# Edge playback: HLS and DASH from one on-demand ffmpeg per stream (CMAF segments shared by
# both), started by the first manifest request, stopped when idle or when the publisher
# leaves; restarts after a crash; a clear error when ffmpeg cannot run; no ffmpeg left after
# reload or quit; names outside the charset never reach the filesystem.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'edge-secret';
my $t = Mesh::Test->new(name => 'edge');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1', cam2 => 'k2');
sub conf {
	my ($ffmpeg) = @_;
	$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => $ffmpeg, renditions => [ 'source', 'small 320x180 300k 64k' ],
		mesh_transcode_idle => '4s', dash => 1));
}
conf('/usr/bin/ffmpeg');
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $ua = HTTP::Tiny->new(timeout => 30);
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);

# the pids of our transcoders (ffmpeg writing under this test's media root)
sub transcoders {
	my ($stream) = @_;
	return Mesh::Test::transcoders("$media/" . ($stream // ''));
}

my $pub = publish("$rtmp/cam1?key=k1", secs => 120);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
sleep 2;
is(scalar(transcoders()), 0, 'no ffmpeg before the first viewer');

# Tokens guard the entry manifests.
is($ua->get("$http/hls/cam1/master.m3u8")->{status}, 401, 'no token: 401');
is($ua->get("$http/hls/cam1/master.m3u8?token=1.00")->{status}, 403, 'bad token: 403');
is(scalar(transcoders()), 0, 'a refused viewer starts nothing');

my $t0 = time;
my $r = $ua->get("$http/hls/cam1/master.m3u8?$tok");
is($r->{status}, 200, sprintf('first HLS request: 200 after %.1f s', time - $t0));
is($r->{headers}{'content-type'}, 'application/vnd.apple.mpegurl', 'HLS MIME type');
like($r->{headers}{'cache-control'}, qr/^private, max-age=[0-9]$/, 'manifest: short cache, private');
is(scalar(() = $r->{content} =~ /#EXT-X-STREAM-INF/g), 2, 'two renditions in the master playlist');
my @pids = transcoders('cam1');
is(scalar @pids, 1, 'one ffmpeg');

$r = $ua->get("$http/dash/cam1/manifest.mpd?$tok");
is($r->{status}, 200, 'DASH manifest');
is($r->{headers}{'content-type'}, 'application/dash+xml', 'DASH MIME type');
like($r->{content}, qr/<MPD/, 'an MPD');
is(scalar(transcoders('cam1')), 1, 'a second viewer (DASH) starts no second ffmpeg');

$r = $ua->get("$http/hls/cam1/init-1.m4s?$tok");
is($r->{headers}{'content-type'}, 'video/mp4', 'segment MIME type');
is($r->{headers}{'cache-control'}, 'private, max-age=3600', 'segment: long cache, private');

# Segments decode; each rendition has its size; the source is a copy of the input.
sub stream_info {
	my ($url) = @_;
	my $out = qx{timeout 20 ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,profile,width,height,pix_fmt -of csv=p=0 '$url' 2>/dev/null};
	chomp $out;
	return (split /\n/, $out)[0] // '';
}
sub rendition {
	my ($i) = @_;
	my $f = $t->testdir . "/r$i.mp4";
	my $dir = "$media/cam1";
	my ($chunk) = sort grep { /chunk-$i-\d+\.m4s$/ } map { s{.*/}{}r } glob("$dir/chunk-$i-*.m4s");
	open my $o, '>', $f or die;
	for my $part ("init-$i.m4s", $chunk) {
		my $c = $ua->get("$http/hls/cam1/$part?$tok")->{content};
		print $o $c;
	}
	close $o;
	return stream_info($f);
}
my $input = stream_info("$rtmp/cam1?$tok");
like($input, qr/^h264,/, "input: $input");
is(rendition(0), $input, 'rendition 0 (source) has the input\'s codec parameters: a copy');
like(rendition(1), qr/^h264,Main,320,180,yuv420p$/, 'rendition 1 is 320x180 H.264 Main');
my $got = `timeout 20 ffprobe -v error -show_entries stream=codec_type -of csv=p=0 '$http/hls/cam1/master.m3u8?$tok' 2>/dev/null`;
like($got, qr/video/, 'HLS plays with ffprobe');
like($got, qr/audio/, 'with audio');
$got = `timeout 20 ffprobe -v error -show_entries stream=codec_type -of csv=p=0 '$http/dash/cam1/manifest.mpd?$tok' 2>/dev/null`;
like($got, qr/video/, 'DASH plays with ffprobe');

# ffmpeg killed: started again, playback resumes. (nginx, which reaps every child, logs an
# alert for a child killed by a signal.)
$t->allow_alert(qr/unknown process $pids[0] exited on signal 9/);
kill 'KILL', $pids[0];
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" died, restart 1 of 5/) }, 5), 'killed ffmpeg: noticed');
ok(wait_until(sub { my @p = transcoders('cam1'); @p == 1 && $p[0] != $pids[0] }, 10), 'killed ffmpeg: a new one runs');
ok(wait_until(sub { $ua->get("$http/hls/cam1/master.m3u8?$tok")->{status} == 200 }, 20), 'killed ffmpeg: playback resumes');
@pids = transcoders('cam1');

# Idle: no request for the idle time stops it and removes its files.
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" stopping: idle/) }, 12), 'idle: stopped');
ok(wait_until(sub { !kill(0, $pids[0]) && !transcoders('cam1') }, 6), 'idle: ffmpeg gone');
ok(wait_until(sub { !-e "$media/cam1" }, 5), 'idle: files removed');
is($ua->get("$http/hls/cam1/init-0.m4s?$tok")->{status}, 404, 'idle: segments no longer served');

# Publisher leaves: the transcode ends.
is($ua->get("$http/hls/cam1/master.m3u8?$tok")->{status}, 200, 'a viewer again: transcode again');
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" stopping: publisher left/) }, 5), 'publisher left: stopped');
ok(wait_until(sub { !transcoders('cam1') && !-e "$media/cam1" }, 8), 'publisher left: ffmpeg gone, files removed');
$r = $ua->get("$http/hls/cam1/master.m3u8?$tok");
is($r->{status}, 404, 'publisher gone: 404');
like($r->{content}, qr/stream not live here/, 'with a reason');

# Names outside the charset never touch the filesystem.
for my $path ('/hls/..%2Fetc/master.m3u8', '/hls/a.b/master.m3u8', '/hls/cam1/../../x', '/hls/cam1/passwd', '/dash/cam1/master.m3u8') {
	my $s = $ua->get("$http$path")->{status};
	ok($s == 404 || $s == 400, "$path: refused ($s)");
}
opendir(my $d, $media) or die;
is(join(',', grep { !/^\./ } readdir $d), '', 'nothing made under the media root');

# Reload and quit leave no ffmpeg behind.
$pub = publish("$rtmp/cam2?key=k2", secs => 120);
wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) }, 5);
my $tok2 = 'token=' . viewer_token($secret, 'cam2', int(time) + 3600);
is($ua->get("$http/hls/cam2/master.m3u8?$tok2")->{status}, 200, 'cam2 transcoding');
@pids = transcoders('cam2');
$t->reload;
ok(wait_until(sub { !grep { kill 0, $_ } @pids }, 10), 'reload: the old worker\'s ffmpeg is gone (its publisher still connected)');
ok(log_lines($t, qr/transcode of stream "cam2" stopping: worker shutting down/), 'reload: logged');
kill 'TERM', $pub;
reap($pub, 5);

# ffmpeg that cannot start: capped retries, then a clear 503.
conf('/nonexistent/ffmpeg');
$t->reload;
sleep 1;
$pub = publish("$rtmp/cam2?key=k2", secs => 120);
wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) >= 2 }, 5);
$r = $ua->get("$http/hls/cam2/master.m3u8?$tok2");
is($r->{status}, 503, 'no ffmpeg: 503');
like($r->{content}, qr/transcoder unavailable: ffmpeg failed 5 times/, 'no ffmpeg: says why');
ok(log_lines($t, qr/cannot run "\/nonexistent\/ffmpeg"/), 'no ffmpeg: logged');
ok(log_lines($t, qr/transcode of stream "cam2" given up after 5 restarts/), 'no ffmpeg: given up, logged');

kill 'TERM', $pub;
reap($pub, 5);
conf('/usr/bin/ffmpeg');
$t->reload;
sleep 1;
$pub = publish("$rtmp/cam2?key=k2", secs => 120);
ok(wait_until(sub { $ua->get("$http/hls/cam2/master.m3u8?$tok2")->{status} == 200 }, 20), 'after a reload with ffmpeg back: plays');
@pids = transcoders('cam2');
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
ok(!grep({ kill 0, $_ } @pids) && !transcoders(), 'quit: no ffmpeg left');

# A transcoder that ignores SIGTERM while the worker quits: the worker does not wait for it,
# kills it, and leaves no connection of ours open (nginx would log "open socket left").
my $stubborn = $t->testdir . '/stubborn-ffmpeg';
$t->write_file('stubborn-ffmpeg', "#!/bin/sh\ntrap '' TERM\necho \$\$ > $media/stubborn.pid\nwhile :; do sleep 0.2; done\n");
chmod 0755, $stubborn;
conf($stubborn);
$t->run;
$rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
$http = 'http://127.0.0.1:' . $t->port(2);
my $accepted = () = log_lines($t, qr/publish accepted: stream "cam2"/);
$pub = publish("$rtmp/cam2?key=k2", secs => 120);
# (the error log goes on from the first run: wait for this run's publish; a stream not
# published on a standalone node is a 404 at once, not held)
wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) > $accepted }, 5);
HTTP::Tiny->new(timeout => 1)->get("$http/hls/cam2/master.m3u8?$tok2");
ok(wait_until(sub { -s "$media/stubborn.pid" }, 5), 'a transcoder that ignores SIGTERM runs');
my ($spid) = (qx{cat $media/stubborn.pid} // '') =~ /(\d+)/;
kill 'TERM', $pub;
reap($pub, 5);
$t->allow_alert(qr/unknown process $spid exited on signal 9/) if $spid;
$t->stop;
ok($spid && wait_until(sub { !kill(0, $spid) }, 5), 'quit: killed all the same');

done_testing();
