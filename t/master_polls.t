#!/usr/bin/perl

# One node's key cannot pin the master's connections with long polls: each poll holds its
# connection, which is never closed to make room, and the poll budget (30, then 5/s) let one
# key hold 30 at once and about 330 over a 60 s wait (a third of the default 1024 connections;
# three stolen keys, or one under a small open-file limit, shut every other node out). Now a
# node holds at most 4 polls at once: past that, `429 too many long polls`.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Master;

plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 60)]);
my $port = $master->port;

my $announce = { node_id => 'edge-1', role => 'relay', rtmp_url => 'rtmp://127.0.0.1:1935',
	http_url => '', version => 't', capabilities => { transcode => JSON::PP::false,
	hls => JSON::PP::false, dash => JSON::PP::false } };
is($master->node_call('POST', '/announce', 'edge-1', $announce)->{status}, 200, 'the node announces');

# A long poll signed as edge-1, sent on its own connection; the answer is read later.
sub poll {
	my $pq = '/streams?node_id=edge-1&since=9007199254740992&wait=20';
	my ($ts, $nonce) = (time =~ s/\..*//r, Mesh::Master::nonce());
	my $sig = hmac_sha256_hex(join("\n", 'mesh-request-v2', 'GET', $pq, $ts, $nonce, sha256_hex('')),
		$master->node_key('edge-1'));
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die "connect: $!";
	print $s "GET $pq HTTP/1.1\r\nHost: m\r\nX-Mesh-Node: edge-1\r\nX-Mesh-Timestamp: $ts\r\n"
		. "X-Mesh-Nonce: $nonce\r\nX-Mesh-Signature: $sig\r\n\r\n";
	return $s;
}

my @socks = map { poll() } 1 .. 20;
sleep 2;
my ($held, %refused) = (0);
for my $s (@socks) {
	$s->blocking(0);
	my $got = '';
	sysread $s, $got, 4096;
	if ($got eq '') {
		$held++;
	} else {
		my ($status) = $got =~ m{^HTTP/1.1 (\d+)};
		my ($why) = $got =~ /"error":"([^"]*)"/;
		$refused{"$status " . ($why // '')}++;
	}
}
cmp_ok($held, '<=', 4, "one node holds at most 4 long polls at once (held $held of 20)");
ok($refused{'429 too many long polls'}, 'the others get 429 too many long polls')
	or diag(explain(\%refused));
close $_ for @socks;
sleep 0.5;

my $hb = { node_id => 'edge-2', role => 'relay', table_version => 0, uptime_s => 1, streams => [],
	pushes => [], transcodes => [], load => { connections => 0, in_kbps => 0, out_kbps => 0 } };
is($master->node_call('POST', '/announce', 'edge-2', { %$announce, node_id => 'edge-2' })->{status}, 200,
	'another node is answered');
my $r = $master->node_call('GET', '/streams?node_id=edge-2&since=0&wait=0', 'edge-2');
is($r->{status}, 200, 'and gets its table');

done_testing();
