#!/usr/bin/perl

# A stranger (no key) cannot make the master hold a MiB of body per connection: a node request
# body is read before its signature can be checked, so 300 connections that each declare a
# 1 MiB body, send all of it but its last byte and stall made the master hold 300 MiB for the
# 10 s body timeout (900 connections: 900 MiB, kept by the allocator afterwards; with
# --max-connections 10000, 10 GiB). Large bodies now share a budget (docs/master.md,
# "Limits"): past it `503 too many large bodies`; small bodies, a real node's heartbeat among
# them, are answered all the while.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Test qw(wait_until);
use Mesh::Master;

plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 30)]);
my $port = $master->port;
my $pid = $master->{pid};
# The master closes a refused connection while it is written to.
$SIG{PIPE} = "IGNORE";

sub rss_kib {
	open my $f, '<', "/proc/$pid/status" or return 0;
	while (<$f>) { return $1 if /^VmRSS:\s+(\d+)/ }
	return 0;
}

my $announce = { node_id => 'edge-1', role => 'relay', rtmp_url => 'rtmp://127.0.0.1:1935',
	http_url => '', version => 't', capabilities => { transcode => JSON::PP::false,
	hls => JSON::PP::false, dash => JSON::PP::false } };
is($master->node_call('POST', '/announce', 'edge-1', $announce)->{status}, 200, 'a real node announces');

my $before = rss_kib();
my $n = 300;
my $mib = 1 << 20;
my (@socks, %left);
for (1 .. $n) {
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or last;
	$s->blocking(0);
	syswrite $s, "POST /heartbeat HTTP/1.1\r\nHost: m\r\nX-Mesh-Node: edge-1\r\n"
		. "Content-Type: application/json\r\nContent-Length: $mib\r\n\r\n";
	push @socks, $s;
	$left{$s} = $mib - 1;
}
is(scalar @socks, $n, "$n stranger connections open");
my $chunk = 'x' x 65536;
my $deadline = time + 8;
while (time < $deadline) {
	my $busy = 0;
	for my $s (@socks) {
		next unless $left{$s} > 0;
		my $w = syswrite $s, $chunk, $left{$s} < 65536 ? $left{$s} : 65536;
		if (defined $w && $w > 0) { $left{$s} -= $w; $busy = 1 }
	}
	last unless $busy;
	sleep 0.005;
}
sleep 0.5;
my $held = rss_kib() - $before;
cmp_ok($held, '<', 100 * 1024, "the master holds under 100 MiB for $n stalled 1 MiB bodies (held ${held} KiB)");

my $hb = { node_id => 'edge-1', role => 'relay', table_version => 0, uptime_s => 1, streams => [],
	pushes => [], transcodes => [], load => { connections => 0, in_kbps => 0, out_kbps => 0 } };
my $r = $master->node_call('POST', '/heartbeat', 'edge-1', $hb);
is($r->{status}, 200, 'a real heartbeat is answered meanwhile');
ok($r->{sig_ok}, 'signed for it');

# A signed heartbeat of 80 KiB (JSON padded with spaces): a large body.
my $padded = JSON::PP->new->canonical->encode($hb) . (' ' x (80 * 1024));
my $big = $master->node_call('POST', '/heartbeat', 'edge-1', $padded);
is($big->{status}, 503, 'a large body past the budget waits its turn: 503');
like($big->{content}, qr/too many large bodies/, 'with the reason');
is($big->{headers}{'retry-after'}, '1', 'and Retry-After');
close $_ for @socks;

ok(wait_until(sub {
	$master->node_call('POST', '/heartbeat', 'edge-1', $padded)->{status} == 200 }, 15),
	'the budget is given back when the strangers go: the large heartbeat is answered');

done_testing();
