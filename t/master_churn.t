#!/usr/bin/perl

# One node's key (an ingest's) stalls the master for everyone: a heartbeat that makes 10,000
# new streams live (a new set each time; 10 in a burst, then 3 per heartbeat interval are
# allowed) holds the master 0.25-0.63 s with 3 root relays and 100 relays, and another node's
# heartbeat sent meanwhile waits up to 0.35 s (measured with mesh-master at b61b1a9, 2 shared
# cores). Issue 13 item 8 wants heartbeats answered in milliseconds while placement runs.
# TODO until placement runs off the request path.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(reap);
use Mesh::Master;

plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 10 --node-timeout 60 --startup-grace 0)]);
sub announce {
	my ($id, $role, $url) = @_;
	return $master->node_call('POST', '/announce', $id, { node_id => $id, role => $role, rtmp_url => $url,
		http_url => '', version => 't', capabilities => { transcode => JSON::PP::false,
		hls => JSON::PP::false, dash => JSON::PP::false } })->{status};
}
sub beat {
	my ($id, $role, @streams) = @_;
	return $master->node_call('POST', '/heartbeat', $id, { node_id => $id, role => $role, table_version => 0,
		uptime_s => 1, pushes => [], transcodes => [], load => { connections => 0, in_kbps => 0, out_kbps => 0 },
		streams => [map { { stream => $_, source => 'broadcaster', viewers => 0, in_kbps => 1000 } } @streams] });
}

is(announce('ing-1', 'ingest', ''), 200, 'an ingest announces');
announce("root-$_", 'root_relay', "rtmp://10.0.1.$_:1935") for 1 .. 3;
announce("edge-$_", 'relay', "rtmp://10.0.2.$_:1935") for 1 .. 100;

my @lat;
for my $round (1 .. 3) {
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		beat('ing-1', 'ingest', map { "s$round-$_" } 1 .. 10_000);
		exit 0;
	}
	my $end = time + 1.5;
	while (time < $end) {
		my $t = time;
		beat('edge-7', 'relay');
		push @lat, time - $t;
		sleep 0.2;
	}
	reap($pid, 30);
}
my ($max) = sort { $b <=> $a } @lat;
TODO: {
	local $TODO = 'placement on the request path: one ingest heartbeat of 10,000 new streams holds the master';
	cmp_ok($max, '<', 0.05, sprintf('another node\'s heartbeat is answered within 50 ms meanwhile (max %.3f s)', $max));
}

done_testing();
