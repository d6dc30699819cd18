#!/usr/bin/perl

# The operators' player page in a real browser: headless Chromium (Debian's) opens it, plays
# HLS and then DASH for a few seconds (the video's currentTime advances, no page or console
# error), and the test saves a screenshot of each (t/out/, or TEST_NGINX_OUT). The page gives
# hls.js and dash.js the entry URL only: every playlist and segment they fetch carries the
# token because the node wrote it into the manifests (the access log shows each request).
# ffprobe plays the same entry URLs.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token);
use Mesh::Browser;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
Mesh::Browser::require_browser();
my $out = Mesh::Browser::out_dir();

my $t = Mesh::Test->new(name => 'player');
$t->write_standalone_table('s', cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => undef, mesh_manifest_wait => undef,
	renditions => [ 'source', 'small 320x180 300k 64k' ], dash => 1, locations => Mesh::Browser::player_location(),
	access_log => '%%TESTDIR%%/media_access.log media',
	head => "log_format media '\$status \$request_uri';\n" . Mesh::Browser::mime_types()));
$t->run;

my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . '/live/cam1?key=k1', secs => 120);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
my $token = viewer_token('s', 'cam1', time + 600);

for my $format ('hls', 'dash') {
	my $url = 'http://127.0.0.1:' . $t->port(2) . "/player/index.html?stream=cam1&format=$format&token=$token";
	my $shot = "$out/player-$format.png";
	my $r = Mesh::Browser::play($url, $shot);
	ok($r->{ok}, "$format: plays in Chromium ($r->{title})") or diag($r->{output});
	cmp_ok($r->{currentTime} // 0, '>=', 3, "$format: currentTime advanced");
	is_deeply($r->{errors}, [], "$format: no page or console error");
	ok(-s $shot, "$format: screenshot saved ($shot)");
	my $prefix = $format eq 'hls' ? '/hls/cam1/' : '/dash/cam1/';
	my @media = grep { m{^\d+ \Q$prefix\E} } split /\n/, $t->read_file('media_access.log');
	my @segments = grep { /^200 \S+\.m4s\?token=\Q$token\E$/ } @media;
	cmp_ok(scalar @segments, '>=', 3, "$format: the player fetched segments with the token (" . scalar(@segments) . ')');
	is(join("\n", grep { !/\?token=\Q$token\E$/ || /^40[13] / } @media), '', "$format: every media request carried the token, none refused");
}

my $base = 'http://127.0.0.1:' . $t->port(2);
ok(probe("$base/hls/cam1/master.m3u8?token=$token", secs => 3, timeout => 30)->{video} > 0, 'ffprobe plays the HLS entry URL');
ok(probe("$base/dash/cam1/manifest.mpd?token=$token", secs => 3, timeout => 30)->{video} > 0, 'ffprobe plays the DASH entry URL');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
done_testing();
