#!/usr/bin/perl

# The master while one node's key (an ingest's) makes 10,000 new streams live in one heartbeat
# (a new set each round): how long that heartbeat takes, and how long another node's heartbeats
# sent meanwhile (every 0.2 s for 1.5 s) wait. 3 root relays and 100 relays; the real
# mesh-master (dist/sbin, or TEST_MESH_MASTER). Was t/master_churn.t (a wall-clock TODO test):
# measured here, asserted nowhere. bench/README.md, 3e.
#
#   perl bench/master_churn.pl [rounds]

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::More;    # Mesh::Test reports through it
use Mesh::Test qw(reap);
use Mesh::Master;

my $rounds = shift // 3;
die "no mesh-master (make dist, or TEST_MESH_MASTER)\n" unless Mesh::Master::has_binary();
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

announce('ing-1', 'ingest', 'rtmp://10.0.0.1:1935') == 200 or die "the ingest cannot announce\n";
announce("root-$_", 'root_relay', "rtmp://10.0.1.$_:1935") for 1 .. 3;
announce("edge-$_", 'relay', "rtmp://10.0.2.$_:1935") for 1 .. 100;
sleep 1.1;    # past the master's first second (requests signed in it are refused)

my (@lat, @big);
for my $round (1 .. $rounds) {
	pipe(my $r, my $w) or die "pipe: $!";
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		close $r;
		my $t = time;
		my $res = beat('ing-1', 'ingest', map { "s$round-$_" } 1 .. 10_000);
		my $st = $res->{status};
		print STDERR "ingest heartbeat: $st $res->{content}\n" if $st != 200;
		printf $w "%d %.6f\n", $st, time - $t;
		close $w;
		POSIX::_exit(0);    # no destructors: the master belongs to the parent
	}
	close $w;
	my $end = time + 1.5;
	while (time < $end) {
		my $t = time;
		beat('edge-7', 'relay');
		push @lat, time - $t;
		sleep 0.2;
	}
	reap($pid, 60);
	my ($st, $secs) = split ' ', (<$r> // '0 0');
	die "the ingest's heartbeat got $st\n" unless $st == 200;
	push @big, $secs;
}
my $pct = sub { my ($p, @v) = @_; @v = sort { $a <=> $b } @v; $v[int($p * $#v + 0.5)] };
print "| rounds | the 10,000-stream heartbeat, p50 / max | another node's heartbeat meanwhile, p50 / max |\n|---:|---:|---:|\n";
printf "| %d | %.0f / %.0f ms | %.1f / %.1f ms |\n", $rounds, 1000 * $pct->(0.5, @big), 1000 * $pct->(1, @big),
	1000 * $pct->(0.5, @lat), 1000 * $pct->(1, @lat);
done_testing();
