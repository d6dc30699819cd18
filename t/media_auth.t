#!/usr/bin/perl

# A viewer token on every HLS and DASH request: the master playlist, media playlists, init and
# media segments, the MPD and the DASH segments are each refused without a token (401), with a
# wrong, expired or another stream's token (403), and served with a good one; the manifests
# served carry the token in every URL, so players need only the entry URL (ffprobe plays it).
# Segments are sent as nginx's static module sends a file: a Range request gets 206 and its
# bytes, a conditional one 304. A token verified once is remembered, never past its expiry nor
# for another stream.
# Refused requests neither start nor keep a transcode. No CORS header unless
# `mesh_allow_origin` lists the page's origin. Files planted in a stream's directory (symlinks,
# a FIFO) and a stream directory replaced by a symlink are not served. Under a master with no
# viewer secret, the master's cached answer decides playlists and segments, which never wait
# (without one: 503, asked, so that the player's retry finds it).

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use POSIX qw(mkfifo);
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token);
use Mesh::FakeMaster;
use Mesh::Node;
use JSON::PP;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'media-secret';
my $t = Mesh::Test->new(name => 'media_auth');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => undef, mesh_manifest_wait => undef,
	renditions => [ 'source', 'small 320x180 300k 64k' ], mesh_transcode_idle => '4s', dash => 1, servers => <<SERVER));
server {
    listen 127.0.0.1:%%PORT_3%%;
    mesh_allow_origin https://player.example http://127.0.0.1:8080;
    location /hls/ { mesh_media hls; }
    location /dash/ { mesh_media dash; mesh_allow_origin *; }
}
SERVER
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $cors = 'http://127.0.0.1:' . $t->port(3);
my $ua = HTTP::Tiny->new(timeout => 30);
my $good = viewer_token($secret, 'cam1', int(time) + 3600);
my %bad = (
	wrong => [ '1.00', 403, qr/^bad token/ ],
	forged => [ viewer_token('another-secret', 'cam1', int(time) + 3600), 403, qr/^bad token/ ],
	expired => [ viewer_token($secret, 'cam1', int(time) - 10), 403, qr/^expired token/ ],
	'another stream' => [ viewer_token($secret, 'cam2', int(time) + 3600), 403, qr/^bad token/ ],
);

sub transcoders { Mesh::Test::transcoders($media) }

my $pub = publish("$rtmp/cam1?key=k1", secs => 180);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');

# Refused entry requests start nothing.
my $r = $ua->get("$http/hls/cam1/master.m3u8");
is($r->{status}, 401, 'master playlist, no token: 401');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/, '401 says how to authenticate');
for my $k (sort keys %bad) {
	my ($tok, $status, $why) = @{$bad{$k}};
	$r = $ua->get("$http/hls/cam1/master.m3u8?token=$tok");
	is($r->{status}, $status, "master playlist, $k token: $status");
	like($r->{content}, $why, "master playlist, $k token: says why");
	is($ua->get("$http/dash/cam1/manifest.mpd?token=$tok")->{status}, $status, "MPD, $k token: $status");
}
sleep 1;
is(scalar(transcoders()), 0, 'refused entry requests start no transcode');

# A good token: manifests with the token in every URL.
$r = $ua->get("$http/hls/cam1/master.m3u8?x=1&token=$good");
is($r->{status}, 200, 'master playlist, good token (among other parameters): 200');
my $master = $r->{content};
my @uris = ((grep { /^[^#\s]/ } split /\n/, $master), $master =~ /URI="([^"]+)"/g);
is(scalar @uris, 3, 'master playlist: two variants and the audio rendition');
is(scalar(grep { /\?token=\Q$good\E$/ } @uris), 3, 'every URI of the master playlist carries the token') or diag($master);
my ($variant) = grep { /^media_0\.m3u8/ } @uris;
$r = $ua->get("$http/hls/cam1/$variant");
is($r->{status}, 200, "media playlist from the master playlist's URL: 200");
my $playlist = $r->{content};
my ($init) = $playlist =~ /#EXT-X-MAP:URI="([^"]+)"/;
my @segments = grep { /^[^#\s]/ } split /\n/, $playlist;
ok(@segments >= 1, 'media playlist lists segments');
like($init, qr/^init-0\.m4s\?token=\Q$good\E$/, 'EXT-X-MAP URI carries the token');
is(scalar(grep { /^chunk-0-\d+\.m4s\?token=\Q$good\E$/ } @segments), scalar @segments, 'every segment line carries the token') or diag($playlist);
$r = $ua->get("$http/hls/cam1/$init");
is($r->{status}, 200, 'init segment from the playlist URL: 200');
is($r->{headers}{'content-type'}, 'video/mp4', 'init segment: video/mp4');
is($ua->get("$http/hls/cam1/$segments[-1]")->{status}, 200, 'media segment from the playlist URL: 200');

$r = $ua->get("$http/dash/cam1/manifest.mpd?token=$good");
is($r->{status}, 200, 'MPD, good token: 200');
my $mpd = $r->{content};
my @templates = $mpd =~ /<SegmentTemplate\b([^>]*)>/g;
ok(@templates >= 1, 'MPD has segment templates');
is(scalar(grep { /initialization="init-\$RepresentationID\$\.m4s\?token=\Q$good\E"/ && /media="chunk-\$RepresentationID\$-\$Number%05d\$\.m4s\?token=\Q$good\E"/ } @templates),
	scalar @templates, 'every SegmentTemplate URL carries the token') or diag($mpd);
my ($chunk) = $segments[-1] =~ /^(chunk-0-\d+\.m4s)/;

# Every URL class, every kind of bad token.
my %class = (
	'master playlist' => '/hls/cam1/master.m3u8',
	'media playlist' => '/hls/cam1/media_1.m3u8',
	'HLS init segment' => '/hls/cam1/init-0.m4s',
	'HLS media segment' => "/hls/cam1/$chunk",
	'MPD' => '/dash/cam1/manifest.mpd',
	'DASH init segment' => '/dash/cam1/init-1.m4s',
	'DASH media segment' => "/dash/cam1/$chunk",
);
for my $c (sort keys %class) {
	my $url = "$http$class{$c}";
	is($ua->get($url)->{status}, 401, "$c, no token: 401");
	is($ua->get("$url?token=")->{status}, 401, "$c, empty token: 401");
	for my $k (sort keys %bad) {
		my ($tok, $status, $why) = @{$bad{$k}};
		$r = $ua->get("$url?token=$tok");
		is($r->{status}, $status, "$c, $k token: $status");
		like($r->{content}, $why, "$c, $k token: says why");
	}
	is($ua->get("$url?token=$good")->{status}, 200, "$c, good token: 200");
}

# A token verified once is remembered by the worker (no HMAC per request), never past its
# expiry and never for another stream.
my $exp = int(time) + 2;
my $short = viewer_token($secret, 'cam1', $exp);
is($ua->get("$http/hls/cam1/$chunk?token=$short")->{status}, 200, 'a token good for 2 s: 200');
is($ua->get("$http/hls/cam1/media_0.m3u8?token=$good")->{status}, 200, 'a media playlist for one token...');
$r = $ua->get("$http/hls/cam1/media_0.m3u8?token=$short");
is($r->{status}, 200, '... then for another (remembered): 200');
my @lines = grep { /^[^#\s]/ || /URI="/ } split /\n/, $r->{content};
ok(@lines && !grep({ !/token=\Q$short\E(?:"|$)/ } @lines), "... every URI with that viewer's token") or diag($r->{content});
unlike($r->{content}, qr/\Q$good\E/, "... and none with the other viewer's");
$r = $ua->get("$http/hls/cam2/$chunk?token=$good");
is($r->{status}, 403, "a remembered token, for another stream: 403");
like($r->{content}, qr/^bad token/, '... as a bad token');
sleep 0.1 while time < $exp + 1.05;
for my $f ($chunk, 'media_0.m3u8') {
	$r = $ua->get("$http/hls/cam1/$f?token=$short");
	is($r->{status}, 403, "the remembered token once expired, $f: 403");
	like($r->{content}, qr/^expired token/, '... as expired');
}
is($ua->get("$http/hls/cam1/$chunk?token=$good")->{status}, 200, 'the long-lived token still: 200');

# Segments are sent as nginx's static module sends a file: ranges, validators, conditional
# requests, each behind the token all the same.
my $seg_url = "$http/hls/cam1/$chunk?token=$good";
$r = $ua->get($seg_url);
is($r->{status}, 200, 'segment: 200');
my $whole = $r->{content};
ok(length($whole) > 110, 'segment: a body');
is($r->{headers}{'content-length'}, length($whole), 'segment: its Content-Length');
is($r->{headers}{'content-type'}, 'video/mp4', 'segment: its Content-Type');
is($r->{headers}{'cache-control'}, 'private, max-age=3600', 'segment: its Cache-Control');
is($r->{headers}{'accept-ranges'}, 'bytes', 'segment: Accept-Ranges');
my ($etag, $lm) = @{$r->{headers}}{qw(etag last-modified)};
ok(defined $etag && defined $lm, 'segment: ETag and Last-Modified');
$r = $ua->get($seg_url, { headers => { Range => 'bytes=10-109' } });
is($r->{status}, 206, 'a Range request: 206');
ok($r->{content} eq substr($whole, 10, 100), 'a Range request: the bytes asked for');
is($r->{headers}{'content-range'}, 'bytes 10-109/' . length($whole), 'a Range request: Content-Range');
is($r->{headers}{'cache-control'}, 'private, max-age=3600', 'a Range request: Cache-Control');
$r = $ua->get($seg_url, { headers => { 'If-None-Match' => $etag } });
is($r->{status}, 304, 'If-None-Match with its ETag: 304');
is($r->{content} // '', '', '304: no body');
$r = $ua->get($seg_url, { headers => { 'If-Modified-Since' => $lm } });
is($r->{status}, 304, 'If-Modified-Since its Last-Modified: 304');
$r = $ua->request('HEAD', $seg_url);
is($r->{status}, 200, 'HEAD on a segment: 200');
is($r->{headers}{'content-length'}, length($whole), 'HEAD on a segment: its length');
is($ua->get("$http/hls/cam1/$chunk", { headers => { Range => 'bytes=0-9' } })->{status}, 401, 'a Range request without a token: 401');
is($ua->get("$http/hls/cam1/$chunk", { headers => { 'If-None-Match' => $etag } })->{status}, 401, 'a conditional request without a token: 401');
$r = $ua->get("$http/hls/cam1/chunk-0-99990.m4s?token=$good");
is($r->{status}, 404, 'a segment not there: 404');
is($r->{content}, "no such media file\n", 'a segment not there: says so');

# Players given only the entry URL.
ok(probe("$http/hls/cam1/master.m3u8?token=$good", secs => 2, timeout => 30)->{video} > 0, 'ffprobe plays HLS from the entry URL');
ok(probe("$http/dash/cam1/manifest.mpd?token=$good", secs => 2, timeout => 30)->{video} > 0, 'ffprobe plays DASH from the entry URL');

# CORS: nothing by default; listed origins echoed.
my $with_origin = sub { my ($url, $o) = @_; $ua->get($url, { headers => { Origin => $o } }) };
$r = $with_origin->("$http/hls/cam1/master.m3u8?token=$good", 'https://player.example');
ok(!exists $r->{headers}{'access-control-allow-origin'}, 'no Access-Control-Allow-Origin by default');
ok(!exists $r->{headers}{vary}, 'no Vary by default');
$r = $with_origin->("$http/hls/cam1/$chunk?token=$good", 'https://player.example');
ok(!exists $r->{headers}{'access-control-allow-origin'}, 'segments: no Access-Control-Allow-Origin by default');
$r = $with_origin->("$cors/hls/cam1/master.m3u8?token=$good", 'https://player.example');
is($r->{headers}{'access-control-allow-origin'}, 'https://player.example', 'a listed origin is echoed');
is($r->{headers}{vary}, 'Origin', 'with Vary: Origin');
$r = $with_origin->("$cors/hls/cam1/$chunk?token=$good", 'http://127.0.0.1:8080');
is($r->{headers}{'access-control-allow-origin'}, 'http://127.0.0.1:8080', 'the other listed origin, on a segment');
$r = $with_origin->("$cors/hls/cam1/$chunk", 'https://player.example');
is($r->{status}, 401, 'a refusal to a listed origin...');
is($r->{headers}{'access-control-allow-origin'}, 'https://player.example', '... is readable by its page');
$r = $with_origin->("$cors/hls/cam1/master.m3u8?token=$good", 'https://evil.example');
ok(!exists $r->{headers}{'access-control-allow-origin'}, 'an origin not listed: no Access-Control-Allow-Origin');
is($r->{headers}{vary}, 'Origin', 'but Vary: Origin');
$r = $with_origin->("$cors/dash/cam1/manifest.mpd?token=$good", 'https://any.example');
is($r->{headers}{'access-control-allow-origin'}, '*', '"*" in a location overrides the server\'s list');

# Files planted in the stream's directory are not served; nor is a directory replaced by a link.
my $dir = "$media/cam1";
symlink('/etc/passwd', "$dir/chunk-0-99999.m4s") or die "symlink: $!";
symlink('/etc/passwd', "$dir/media_7.m3u8") or die "symlink: $!";
symlink('../../table.json', "$dir/init-5.m4s") or die "symlink: $!";
mkfifo("$dir/chunk-0-99998.m4s", 0666) or die "mkfifo: $!";
for my $f ('hls/cam1/chunk-0-99999.m4s', 'hls/cam1/media_7.m3u8', 'dash/cam1/init-5.m4s', 'hls/cam1/chunk-0-99998.m4s') {
	$r = HTTP::Tiny->new(timeout => 5)->get("$http/$f?token=$good");
	is($r->{status}, 404, "$f (planted): 404");
	unlike($r->{content}, qr/root:|viewer_secret/, "$f (planted): nothing of its target");
}
my @real = sort map { s{.*/}{}r } glob("$dir/chunk-1-*.m4s");
my $real = $real[-2] // $real[-1];
rename($dir, "$dir.real") or die "rename: $!";
symlink('cam1.real', $dir) or die "symlink: $!";
$r = HTTP::Tiny->new(timeout => 5)->get("$http/hls/cam1/$real?token=$good");
my $was_link = -l $dir;
unlink $dir;
rename("$dir.real", $dir) or die "rename back: $!";
ok($was_link, 'the stream directory was a symlink during the request');
is($r->{status}, 404, 'a segment through a symlinked stream directory: 404');
is($ua->get("$http/hls/cam1/$real?token=$good")->{status}, 200, 'the same segment, directory restored: 200');
unlink "$dir/chunk-0-99999.m4s", "$dir/media_7.m3u8", "$dir/init-5.m4s", "$dir/chunk-0-99998.m4s";

# Refused requests do not keep the transcode wanted: it stops when idle (4 s) all the same.
my $t0 = time;
my $stopped;
while (time - $t0 < 12) {
	$ua->get("$http/hls/cam1/$chunk");
	$ua->get("$http/hls/cam1/media_0.m3u8");
	$ua->get("$http/dash/cam1/init-0.m4s?token=$bad{expired}[0]");
	$ua->get("$http/hls/cam1/$chunk?token=$bad{'another stream'}[0]");
	last if $stopped = log_lines($t, qr/transcode of stream "cam1" stopping: idle/);
	sleep 0.25;
}
ok($stopped, sprintf('tokenless and bad-token requests every 0.25 s: the transcode stops when idle (%.1f s)', time - $t0));
ok(wait_until(sub { !transcoders() }, 6), 'idle: ffmpeg gone');
$ua->get("$http/hls/cam1/master.m3u8?token=$bad{expired}[0]");
$ua->get("$http/hls/cam1/master.m3u8");
sleep 1;
is(scalar(transcoders()), 0, 'refused entry requests do not start it again');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

# With a master and no viewer secret: the master's cached answer decides every request;
# playlists and segments never wait for an answer (without one: 503, and asked).
my $fake = Mesh::FakeMaster->new;
$fake->set_table('edge-1', { version => 1, role => 'relay',
	relay => { cam1 => [ { node_id => 'edge-1', node_url => 'rtmp://127.0.0.1:1/relay', node_key => 'k-r1-e1-cam1' } ] } });
$fake->set_auth('cam1', allow => JSON::PP::true, ttl_s => 300, credential => 'vtok');
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $fake,
	apps => 'application relay { mesh on; live on; }', hls => { mesh_rendition => 'source' });
$edge->run;
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) }, 10), 'edge under a master: table in force');
my $ehttp = 'http://127.0.0.1:' . $edge->port(2);
my $push = publish('rtmp://127.0.0.1:' . $edge->port(1) . '/relay/cam1?node=root-1&key=k-r1-e1-cam1', secs => 120);
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 10), 'stream pushed in');
$r = $ua->get("$ehttp/hls/cam1/master.m3u8?token=vtok");
is($r->{status}, 200, 'entry request: the master allows the token');
my ($v) = grep { /^media_0/ } split /\n/, $r->{content};
$r = $ua->get("$ehttp/hls/cam1/$v");
is($r->{status}, 200, 'media playlist with the allowed token (cached answer)');
my ($seg) = grep { /^chunk-/ } split /\n/, $r->{content};
like($seg, qr/\?token=vtok$/, 'its segments carry the token');
is($ua->get("$ehttp/hls/cam1/$seg")->{status}, 200, 'segment with the allowed token');
my ($bare) = $seg =~ /^([^?]+)/;
my $asked = scalar @{$fake->requests('auth')};
$t0 = time;
$r = $ua->get("$ehttp/hls/cam1/$bare?token=never-asked");
is($r->{status}, 503, 'segment with a token never asked about: 503 (players retry)');
like($r->{content}, qr/no answer for this token yet/, 'saying so');
cmp_ok(time - $t0, '<', 1, 'at once, not held');
is($ua->get("$ehttp/hls/cam1/$bare")->{status}, 401, 'segment with no token: 401');
sleep 0.5;
is(scalar @{$fake->requests('auth')}, $asked + 1, 'the segment asked the master (once)');
is($ua->get("$ehttp/hls/cam1/$bare?token=never-asked")->{status}, 403, "the retry finds the master's answer (a denial here)");
is($ua->get("$ehttp/hls/cam1/master.m3u8?token=wrong")->{status}, 403, 'entry request: the master denies another token');
$r = $ua->get("$ehttp/hls/cam1/$bare?token=wrong");
is($r->{status}, 403, 'segment with the denied token: 403');
like($r->{content}, qr/auth: wrong credential/, 'with the master\'s reason');
kill 'TERM', $push;
reap($push, 5);
ok(wait_until(sub { log_lines($edge, qr/transcode of stream "cam1" ended/) }, 10), 'push gone: transcode ended');
$edge->stop;
$fake->stop;

# Directive errors in nginx's wording.
my $c = Mesh::Test->new(name => 'media_auth_conf');
$c->write_file('table.json', '{}');
for my $case (
	[ 'mesh_allow_origin https://x.example/path;', qr/invalid value "https:\/\/x\.example\/path" in "mesh_allow_origin" directive, it must be .* in \S+nginx\.conf:\d+/ ],
	[ 'mesh_allow_origin * https://x.example;', qr/invalid value "\*" in "mesh_allow_origin" directive/ ],
	[ 'mesh_allow_origin ftp://x.example;', qr/invalid value "ftp:\/\/x\.example" in "mesh_allow_origin" directive/ ],
	[ 'mesh_allow_origin https://x.example:99999;', qr/invalid value "https:\/\/x\.example:99999" in "mesh_allow_origin" directive/ ],
	[ 'mesh_allow_origin https://a.example; mesh_allow_origin https://b.example;', qr/"mesh_allow_origin" directive is duplicate in \S+nginx\.conf:\d+/ ],
	[ 'mesh_manifest_wait_max lots;', qr/"mesh_manifest_wait_max" directive invalid number in \S+nginx\.conf:\d+/ ],
	[ 'mesh_manifest_wait_per_client -1;', qr/"mesh_manifest_wait_per_client" directive invalid number/ ],
) {
	my ($directive, $want) = @$case;
	$c->write_node_conf(http => "http { $directive server { listen 127.0.0.1:%%PORT_2%%; location /hls/ { mesh_media hls; } } }");
	my ($ok, $out) = $c->test_config;
	ok(!$ok, "nginx -t refuses: $directive");
	like($out, $want, "... in nginx's words") or diag($out);
}
$c->write_node_conf(http => "http { mesh_manifest_wait_max 64; mesh_manifest_wait_per_client 4; mesh_allow_origin https://a.example HTTP://[::1]:8080; server { listen 127.0.0.1:%%PORT_2%%; location /hls/ { mesh_media hls; } } }");
my ($ok, $out) = $c->test_config;
ok($ok, 'nginx -t takes the new directives') or diag($out);

done_testing();
