#!/usr/bin/perl

# The edge's HTTP side tried as an outsider would (issue 10 items 3, 4, 6, 7, 8).
#
# Node A (real ffmpeg): no media byte without a good token, whatever the path trick (`..`,
# encoded slashes and dots, `%00`, double slashes, case, trailing dots, HEAD, Range, the token
# twice or under another name, another stream's token); no CORS echo of `null` or look-alike
# origins; mesh_status refused to a non-loopback client, also through a reverse proxy on the
# same host (the proxy's connection comes from loopback, its request says whom it forwards).
# Node B (a transcoder that never writes a manifest): held requests die with their client
# (pipelined, HTTP/1.0, half-closed), the count comes back to zero, and a reload or a quit with
# requests held leaves no alert.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish wait_until log_lines reap viewer_token);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'rt-http-secret';
my $ext = (map { /inet (\d+\.\d+\.\d+\.\d+)/ && $1 !~ /^127\./ ? $1 : () } qx{ip -4 -o addr show 2>/dev/null})[0];

# One raw request; the response head and body (up to `secs` for the first byte).
sub raw {
	my ($port, $req, %o) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => ($o{to} // '127.0.0.1') . ":$port", LocalAddr => $o{from}, Timeout => 5)
		or die "connect: $!";
	print $s $req;
	my $got = '';
	return '' unless IO::Select->new($s)->can_read($o{secs} // 10);
	while (IO::Select->new($s)->can_read(1)) {
		my $n = sysread($s, my $buf, 65536);
		last unless $n;
		$got .= $buf;
	}
	return $got;
}
sub status_of { $_[0] =~ m{^HTTP/1\.[01] (\d+)} ? $1 : 0 }

# ---------------------------------------------------------------- node A
my $t = Mesh::Test->new(name => 'redteam_http');
my $media = $t->media_dir;
$t->write_file('table.json', qq({"role": "standalone", "viewer_secret": "$secret",
  "publish": {"cam1": {"key_sha256": "@{[sha256_hex('k1')]}"}, "cam2": {"key_sha256": "@{[sha256_hex('k2')]}"}}}));
$t->write_node_conf(http => <<CONF);
http {
    access_log off;
    mesh_media_root $media;
    mesh_rtmp_source rtmp://127.0.0.1:%%PORT_1%%/live;
    mesh_rendition source;
    mesh_segment 1s;
    mesh_transcode_idle 20s;
    server {
        listen %%PORT_2%%;
        mesh_allow_origin https://player.example;
        location /hls/ { mesh_media hls; }
        location /dash/ { mesh_media dash; }
        location = /status { mesh_status; }
    }
    # Behind a load balancer that speaks the PROXY protocol.
    server {
        listen 127.0.0.1:%%PORT_4%% proxy_protocol;
        location = /status { mesh_status; }
    }
    # A TLS terminator's stand-in on the same host: what it forwards comes from loopback.
    server {
        listen %%PORT_3%%;
        location / {
            proxy_pass http://127.0.0.1:%%PORT_2%%;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $port = $t->port(2);
my $http = "http://127.0.0.1:$port";
my $ua = HTTP::Tiny->new(timeout => 30);
my $good = viewer_token($secret, 'cam1', int(time) + 3600);
my $good2 = viewer_token($secret, 'cam2', int(time) + 3600);

my @pubs = (publish("$rtmp/cam1?key=k1", secs => 240), publish("$rtmp/cam2?key=k2", secs => 240));
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) && log_lines($t, qr/publish accepted: stream "cam1"/) }, 10), 'published cam1 and cam2');
my $r = $ua->get("$http/hls/cam1/master.m3u8?token=$good");
is($r->{status}, 200, 'cam1 master playlist with a good token');
is($ua->get("$http/hls/cam2/master.m3u8?token=$good2")->{status}, 200, 'cam2 master playlist with a good token');
my $pl = $ua->get("$http/hls/cam1/media_0.m3u8?token=$good")->{content} // '';
my ($chunk) = reverse($pl =~ /^(chunk-0-\d+\.m4s)/mg);
ok($chunk, "a segment to aim at ($chunk)") or diag($pl);
$chunk //= 'chunk-0-00001.m4s';
is(status_of(raw($port, "GET /hls/cam1/$chunk?token=$good HTTP/1.0\r\n\r\n")), 200, 'baseline: the segment with a good token');

# Path tricks without a token, or with a token not for the path's stream: never a 200.
my @tricks = (
	"/hls/cam1/$chunk", "/hls/cam1/init-0.m4s", "/hls/cam1/media_0.m3u8", "/dash/cam1/manifest.mpd",
	"/hls/cam2/../cam1/$chunk", "/hls/cam1/./$chunk", "/hls//cam1/$chunk", "/hls/cam1//$chunk",
	"/hls/cam1%2f$chunk", "/hls/cam1%2F$chunk", "/hls/cam1/%2e/$chunk", "/hls/x/%2e%2e/cam1/$chunk",
	"/hls/cam1/$chunk%00", "/hls/cam1/$chunk%00.m3u8", "/HLS/cam1/$chunk", "/hls/CAM1/$chunk",
	"/hls/cam1/" . uc($chunk), "/hls/cam1/$chunk.", "/hls/cam1/$chunk/", "/hls/cam1/$chunk%20",
	"/hls/cam1/$chunk.tmp", "/hls/cam1/manifest.mpd", "/dash/cam1/master.m3u8", "/hls/cam1/../../etc/passwd",
	"/dash/../hls/cam1/$chunk", "/hls/cam1/init-0.m4s;token=$good", "/hls/cam1/media_0.m3u8#token=$good",
);
for my $p (@tricks) {
	for my $q ('', "?Token=$good", "?tok=$good", "?token=$good2", "?token=x&token=$good", "?token%3D$good", "?token[]=$good") {
		for my $m ('GET', 'HEAD') {
			my $st = status_of(raw($port, "$m $p$q HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10\r\nConnection: close\r\n\r\n"));
			ok($st != 200 && $st != 206, "$m $p$q: not served ($st)");
		}
	}
}
# One spelling per token (each spelling would be another question and answer under a master).
my ($gexp, $gsig) = split /\./, $good;
for my $v ("0$gexp.$gsig", "$gexp." . uc($gsig), "$gexp." . ucfirst($gsig =~ s/^(\d*)([a-f])/$1\u$2/r)) {
	next if $v eq $good;
	is(status_of(raw($port, "GET /hls/cam1/$chunk?token=$v HTTP/1.0\r\n\r\n")), 403, "another spelling of the good token ($v): 403");
}
# The token for the path's stream opens only that stream.
is(status_of(raw($port, "GET /hls/cam2/media_0.m3u8?token=$good HTTP/1.0\r\n\r\n")), 403, "cam1's token on cam2's playlist: 403");
is(status_of(raw($port, "GET /hls/cam1/$chunk?token=$good&token=x HTTP/1.0\r\n\r\n")), 200, 'the first of two tokens counts (a good one)');
my $ranged = raw($port, "GET /hls/cam1/$chunk?token=$good HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10\r\nConnection: close\r\n\r\n");
is(status_of($ranged), 206, 'a Range request with a good token: 206 (nginx\'s static module)');
like($ranged, qr{\r\nContent-Range: bytes 0-10/\d+\r\n}i, 'a Range request: the range asked for, and no more');
is(status_of(raw($port, "GET /hls/cam1/$chunk?token=$good HTTP/1.1\r\nHost: x\r\nRange: bytes=999999999-\r\nConnection: close\r\n\r\n")), 416,
	'a Range past the end: 416');

# Manifests: the token echoed into URLs is percent-encoded; a request line that could inject
# headers or XML is refused before it gets there.
$r = $ua->get("$http/dash/cam1/manifest.mpd?token=$good");
is($r->{status}, 200, 'MPD with a good token');
my @vals = ($r->{content} // '') =~ /token=([^"]*)"/g;
ok(@vals && !grep({ $_ ne $good } @vals), 'every token= in the MPD is the token, then the attribute ends') or diag(join ' ', @vals);
for my $tok ("$good%0d%0aX-Injected:%201", "$good%22%3E%3Cx", "$good\"x", "$good%26amp;x") {
	my $got = raw($port, "GET /dash/cam1/manifest.mpd?token=$tok HTTP/1.0\r\n\r\n");
	ok(status_of($got) == 403 || status_of($got) == 400, "MPD with a decorated token ($tok): refused (" . status_of($got) . ')');
	unlike($got, qr/\r\nX-Injected:/i, 'no injected header');
}

# CORS: only the listed origin is echoed; `null`, a suffix, a prefix, another scheme or port
# never are.
for my $o ('null', 'https://player.example.evil', 'https://evil-player.example', 'http://player.example',
	'https://player.example:444', 'https://player.example/', 'https://PLAYER.example.') {
	my $got = raw($port, "GET /hls/cam1/$chunk?token=$good HTTP/1.1\r\nHost: x\r\nOrigin: $o\r\nConnection: close\r\n\r\n");
	unlike($got, qr/\r\nAccess-Control-Allow-Origin:/i, "Origin \"$o\": not echoed");
}
like(raw($port, "GET /hls/cam1/$chunk?token=$good HTTP/1.1\r\nHost: x\r\nOrigin: https://player.example\r\nConnection: close\r\n\r\n"),
	qr{\r\nAccess-Control-Allow-Origin: https://player\.example\r\n}i, 'the listed origin is echoed');

# mesh_status: loopback only.
is(status_of(raw($t->port(4), "PROXY TCP4 203.0.113.9 127.0.0.1 4444 80\r\nGET /status HTTP/1.0\r\n\r\n")), 403,
	'status for a stranger relayed with the PROXY protocol by a balancer on this host: 403');
is(status_of(raw($port, "GET /status HTTP/1.0\r\n\r\n")), 200, 'status from loopback: 200');
SKIP: {
	skip 'no non-loopback address on this host', 4 unless $ext;
	is(status_of(raw($port, "GET /status HTTP/1.0\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\r\n", to => $ext, from => $ext)), 403,
		"status from $ext, whatever X-Forwarded-For says: 403");
	is(status_of(raw($port, "PROXY TCP4 127.0.0.1 127.0.0.1 1 $port\r\nGET /status HTTP/1.0\r\n\r\n", to => $ext, from => $ext)) == 200 ? 200 : 0, 0,
		"status from $ext with a PROXY protocol line claiming loopback: not 200");
	my $via = raw($t->port(3), "GET /status HTTP/1.0\r\n\r\n", to => $ext, from => $ext);
	is(status_of($via), 403, "status from $ext through a reverse proxy on the same host: 403 (the request says it is forwarded)");
	is(status_of(raw($t->port(3), "GET /status HTTP/1.0\r\n\r\n")), 403, 'through the proxy even from loopback: 403 (forwarded is not local)');
}

kill 'TERM', @pubs;
reap($_, 5) for @pubs;
$t->stop;

# ---------------------------------------------------------------- node B
my $b = Mesh::Test->new(name => 'redteam_http_hold');
my $bmedia = $b->media_dir;
my $never = $b->write_file('never-ready', "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.2; done\n");
chmod 0755, $never;
$b->write_file('table.json', qq({"role": "standalone", "viewer_secret": "$secret",
  "publish": {"cam1": {"key_sha256": "@{[sha256_hex('k1')]}"}}}));
$b->write_node_conf(http => <<CONF);
http {
    access_log off;
    mesh_media_root $bmedia;
    mesh_ffmpeg $never;
    mesh_rtmp_source rtmp://127.0.0.1:%%PORT_1%%/live;
    mesh_manifest_wait 30s;
    mesh_manifest_wait_max 20;
    mesh_manifest_wait_per_client 4;
    server {
        listen 127.0.0.1:%%PORT_2%%;
        location /hls/ { mesh_media hls; }
        location = /status { mesh_status; }
    }
}
CONF
$b->run;
my $bport = $b->port(2);
my $brtmp = 'rtmp://127.0.0.1:' . $b->port(1) . '/live';
my $entry = "/hls/cam1/master.m3u8?token=$good";
my $pub = publish("$brtmp/cam1?key=k1", secs => 240);
ok(wait_until(sub { log_lines($b, qr/publish accepted: stream "cam1"/) }, 5), 'node B: published');
sub held_now {
	my $j = eval { decode_json((HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$bport/status")->{content}) // '{}') } // {};
	return $j->{held}{now} // -1;
}
sub open_held {
	my ($req) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$bport", Timeout => 5) or die "connect: $!";
	print $s $req;
	return $s;
}
my %ways = (
	'HTTP/1.1 keepalive' => "GET $entry HTTP/1.1\r\nHost: x\r\n\r\n",
	'HTTP/1.0' => "GET $entry HTTP/1.0\r\n\r\n",
	'pipelined' => "GET $entry HTTP/1.1\r\nHost: x\r\n\r\nGET $entry HTTP/1.1\r\nHost: x\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n",
	'HEAD' => "HEAD $entry HTTP/1.1\r\nHost: x\r\n\r\n",
	'with a body' => "GET $entry HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde",
	'chunked body' => "GET $entry HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
);
for my $w (sort keys %ways) {
	my @s = map { open_held($ways{$w}) } 1 .. 3;
	sleep 0.5;
	my $n = held_now();
	ok($n >= 0 && $n <= 4, "$w: held within the cap ($n)");
	close $_ for @s;
	ok(wait_until(sub { held_now() == 0 }, 3), "$w: the count is back to 0 once the clients closed");
}
# Half-closed clients (shutdown of their sending side) and a pipelined request after a held one.
my @half = map { open_held($ways{'HTTP/1.1 keepalive'}) } 1 .. 4;
shutdown($_, 1) for @half;
ok(wait_until(sub { held_now() == 0 }, 3), 'half-closed clients: nothing held');
close $_ for @half;
# Many streams, one client: the per-client cap holds across stream names.
my @many = map { open_held("GET /hls/s$_/master.m3u8?token=" . viewer_token($secret, "s$_", int(time) + 3600) . " HTTP/1.0\r\n\r\n") } 1 .. 10;
sleep 0.5;
cmp_ok(held_now(), '<=', 4, 'streams not live: none held (or within the cap)');
close $_ for @many;
ok(wait_until(sub { held_now() == 0 }, 3), 'and back to 0');

# A reload, then a quit, with requests held: no alert, no crash.
my @held = map { open_held($ways{'HTTP/1.1 keepalive'}) } 1 .. 4;
sleep 0.5;
is(held_now(), 4, 'four held before the reload');
$b->reload;
my @heads = map { my $s = $_; IO::Select->new($s)->can_read(5) ? do { sysread($s, my $buf, 4096); $buf } : '' } @held;
is(scalar(grep { status_of($_) == 503 } @heads), 4, 'a reload answers the held requests 503 (the old worker starts nothing more)');
close $_ for @held;
sleep 1;
@held = map { open_held($ways{'HTTP/1.1 keepalive'}) } 1 .. 4;
sleep 0.5;
kill 'TERM', $pub;
reap($pub, 5);
close $_ for @held[0, 1];
$b->stop;
close $_ for @held;

# ---------------------------------------------------------------- node C
# Under a master (no viewer secret) playlists and segments read the cached answer of their
# token. 4,100 entry requests with distinct tokens the master allows (a viewer collects them by
# reloading the site's page) fill the worker's answer cache: a playing viewer's answer must not
# be lost for good, or every playlist and segment of theirs is refused from then on (4xx: no
# player retries).
my $fake = Mesh::FakeMaster->new;
$fake->set_table('edge-1', { version => 1, role => 'relay',
	relay => { cam1 => [ { node_id => 'edge-1', node_url => 'rtmp://127.0.0.1:1/relay', node_key => 'k-r1-e1-cam1' } ] } });
$fake->set_auth('cam1', allow => JSON::PP::true, ttl_s => 300);
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $fake,
	apps => 'application relay { mesh on; live on; }',
	hls => { mesh_rendition => 'source', mesh_manifest_wait_per_client => 64, mesh_manifest_wait_max => 1024 });
$edge->run;
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) }, 10), 'node C: table in force');
my $eport = $edge->port(2);
my $push = publish('rtmp://127.0.0.1:' . $edge->port(1) . '/relay/cam1?node=root-1&key=k-r1-e1-cam1', secs => 200);
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 10), 'node C: stream pushed in');
my $eua = HTTP::Tiny->new(timeout => 30);
$r = $eua->get("http://127.0.0.1:$eport/hls/cam1/master.m3u8?token=vtok");
is($r->{status}, 200, 'node C: the viewer\'s entry request');
my ($variant) = grep { /^media_0/ } split /\n/, $r->{content} // '';
is($eua->get("http://127.0.0.1:$eport/hls/cam1/$variant")->{status}, 200, 'node C: the viewer plays (media playlist)');
my ($done, $t0) = (0, time);
while ($done < 4100 && time - $t0 < 150) {
	my @s = grep { defined } map {
		IO::Socket::INET->new(PeerAddr => "127.0.0.1:$eport", LocalAddr => '127.0.' . (1 + int($_ / 200)) . '.' . (2 + $_ % 200), Timeout => 5)
	} 0 .. 63;
	for my $i (0 .. $#s) { my $n = $done + $i; print { $s[$i] } "GET /hls/cam1/master.m3u8?token=junk$n HTTP/1.0\r\n\r\n" }
	for my $c (@s) { IO::Select->new($c)->can_read(10); close $c }
	$done += @s;
}
diag(sprintf('%d entry requests with distinct allowed tokens in %.1f s', $done, time - $t0));
my @st = map { sleep 0.3; $eua->get("http://127.0.0.1:$eport/hls/cam1/$variant")->{status} } 1 .. 5;
is($st[-1], 200, "afterwards the viewer still plays (media playlist: @st)");
ok(!grep({ $_ >= 400 && $_ < 500 } @st), 'and is never refused for good (no 4xx, which players do not retry)');
kill 'TERM', $push;
reap($push, 5);
$edge->stop;
$fake->stop;
done_testing();
