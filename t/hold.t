#!/usr/bin/perl

# Held manifest requests are bounded and die with their client. A stream that is live but
# whose transcode never writes a manifest holds every entry request: 1,500
# connect-request-close loops with one good token leave the node answering HTTP and RTMP (a
# held request ends when its client closes, even with caps too high to help). The caps per
# client address and per worker give 503 with Retry-After, and a closed client gives its place
# back. A stream that is not live on a standalone node is a 404 at once; on a relay under a
# master the request is held while the route question is pending and ends at once when the
# master does not know the stream.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'hold-secret';
my $t = Mesh::Test->new(name => 'hold');
my $media = $t->media_dir;
# A transcoder that never writes a manifest (and stops cleanly on SIGTERM).
my $never = $t->write_file('never-ready', "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.2; done\n");
chmod 0755, $never;
$t->write_standalone_table($secret, cam1 => 'k1');
mkdir $t->testdir . '/static';
$t->write_file('static/page.html', "the player page\n");
sub conf {
	my (%d) = @_;
	$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => $never, renditions => [], mesh_segment => undef,
		mesh_manifest_wait => undef, locations => 'location /static/ { root %%TESTDIR%%; }', %d));
}
# Caps far above the worker's 512 connections: only noticing closed clients can save it.
conf(mesh_manifest_wait => '20s', mesh_manifest_wait_max => 100000, mesh_manifest_wait_per_client => 100000);
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $port = $t->port(2);
my $http = "http://127.0.0.1:$port";
my $tok = viewer_token($secret, 'cam1', int(time) + 3600);
my $entry = "/hls/cam1/master.m3u8?token=$tok";

my $pub = publish("$rtmp/cam1?key=k1", secs => 300);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');

# An entry request on its own socket; `from` picks the client address.
sub ask {
	my (%o) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", LocalAddr => $o{from} // '127.0.0.1', Timeout => 5)
		or die "connect: $!";
	print $s "GET $entry HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	return $s;
}
# What came back within `secs`: undef when nothing (held), else the response head.
sub answer {
	my ($s, $secs) = @_;
	return undef unless IO::Select->new($s)->can_read($secs);
	my $got = '';
	while (IO::Select->new($s)->can_read(1)) {
		my $n = sysread($s, my $buf, 4096);
		last unless $n;
		$got .= $buf;
		last if $got =~ /\r\n\r\n/;
	}
	return $got;
}

my $s = ask();
is(answer($s, 1), undef, 'a not-ready stream: the entry request is held');
close $s;
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" started/) }, 5), 'the (never ready) transcode runs');

# 1,500 connect-request-close loops with one token.
my $t0 = time;
my $sent = 0;
for (1 .. 1500) {
	my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5) or next;
	$sent++ if print $c "GET $entry HTTP/1.1\r\nHost: x\r\n\r\n";
	close $c;
}
my $spent = time - $t0;
is($sent, 1500, '1,500 requests sent');
cmp_ok($spent, '<', 60, sprintf('1,500 connect-request-close loops in %.1f s', $spent));
sleep 1;
my $ua = HTTP::Tiny->new(timeout => 5);
my $r = $ua->get("$http/static/page.html");
is($r->{status}, 200, 'afterwards the node serves the player page');
$t0 = time;
$r = $ua->get("$http/hls/ghost/master.m3u8?token=" . viewer_token($secret, 'ghost', int(time) + 3600));
is($r->{status}, 404, 'and answers a manifest request');
like($r->{content}, qr/stream not live here/, 'a stream not live on a standalone node: "stream not live here"');
cmp_ok(time - $t0, '<', 1, 'at once, not held');
ok(probe("$rtmp/cam1?token=$tok", secs => 1, timeout => 10)->{video} > 0, 'and an RTMP play');
is(scalar(log_lines($t, qr/worker_connections are not enough/)), 0, 'no "worker_connections are not enough"');
$s = ask();
is(answer($s, 1), undef, 'a new entry request is held as before');
close $s;

# The caps: 3 per client address, 5 in the worker; held requests end after 4 s.
sub unpublish {
	my $ended = () = log_lines($t, qr/transcode of stream "cam1" ended/);
	kill 'TERM', $pub;
	reap($pub, 5);
	wait_until(sub { log_lines($t, qr/transcode of stream "cam1" ended/) > $ended }, 5);
}
unpublish();
$t->stop;
conf(mesh_manifest_wait => '4s', mesh_manifest_wait_max => 5, mesh_manifest_wait_per_client => 3);
$t->run;
my $accepted = () = log_lines($t, qr/publish accepted: stream "cam1"/);
$pub = publish("$rtmp/cam1?key=k1", secs => 300);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) > $accepted }, 5), 'published again');
my @held = map { ask() } 1 .. 3;
is(scalar(grep { !defined answer($_, 0.5) } @held), 3, 'three requests from one address held');
$s = ask();
my $head = answer($s, 2) // '';
like($head, qr{^HTTP/1\.1 503}, 'the fourth from the same address: 503');
like($head, qr/\r\nRetry-After: \d+\r\n/i, 'with Retry-After');
close $s;
push @held, ask(from => '127.0.0.2'), ask(from => '127.0.0.2');
is(scalar(grep { !defined answer($_, 0.5) } @held[3, 4]), 2, 'two more from another address held (five in all)');
$s = ask(from => '127.0.0.3');
$head = answer($s, 2) // '';
like($head, qr{^HTTP/1\.1 503}, 'a sixth, from a third address: 503 (the worker\'s cap)');
like($head, qr/\r\nRetry-After: \d+\r\n/i, 'with Retry-After');
close $s;
close shift @held;
sleep 0.5;
$s = ask();
is(answer($s, 0.5), undef, 'a client that closed gave its place back: held again');
push @held, $s;
$t0 = time;
$head = answer($held[0], 8) // '';
like($head, qr{^HTTP/1\.1 504}, sprintf('a held request ends at mesh_manifest_wait: 504 after %.1f s more', time - $t0));
close $_ for @held;
unpublish();
$t->stop;

# A relay under a master: held while the route question is pending, ended by "unknown".
my $master = Mesh::FakeMaster->new;
$master->set_table('edge-1', { version => 1, role => 'relay', viewer_secret => $secret });
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $master,
	apps => 'application relay { mesh on; live on; }', hls => { mesh_manifest_wait => '20s' });
$edge->run;
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) }, 10), 'edge: table in force');
my $ghost = 'http://127.0.0.1:' . $edge->port(2) . '/hls/ghost/master.m3u8?token=' . viewer_token($secret, 'ghost', int(time) + 3600);
$master->fault('route', 'stall', 1.5);
$t0 = time;
$r = HTTP::Tiny->new(timeout => 30)->get($ghost);
my $took = time - $t0;
is($r->{status}, 404, 'a stream the master does not know: 404');
like($r->{content}, qr/unknown to the master/, 'saying so');
ok($took >= 1.4 && $took < 10, sprintf('held while the route question was pending, ended by the answer (%.1f s; the wait is 20 s)', $took));
$master->fault('route', 'ok');
$t0 = time;
$r = HTTP::Tiny->new(timeout => 30)->get($ghost);
is($r->{status}, 404, 'asked again at once: 404');
cmp_ok(time - $t0, '<', 1, 'not held: the answer stands');
is(scalar @{$master->requests('route')}, 1, 'one route question for both');
$edge->stop;
$master->stop;
done_testing();
