#!/usr/bin/perl

# Benchmark 9: failover as a watching viewer sees it. The reference master (heartbeat 1 s,
# node timeout 3 s), an ingest, two root relays and two edges (HLS at the edges); one stream;
# an RTMP player and an HLS player (ffprobe, through the master playlist with its token) keep
# reading at the edge the stream was placed on, each packet stamped with the wall clock
# (t/lib/Mesh/Watch.pm). Each round:
#   - root: the root relay feeding the stream dies (SIGKILL, the whole node), comes back after;
#   - master TERM / master KILL: the master restarts on its database;
#   - cut: the path ingest → root relay feeding the stream is frozen (t/lib/Mesh/Cut.pm: the root
#     relays are pushed to through paths the bench can cut; nothing forwarded, connections open,
#     the root relay alive and answering the master), thawed after.
#   - edge: the other edge, with a viewer of its own, dies (SIGKILL, the whole node).
# The gap is the longest time without a video packet from the failure on; an HLS player reads
# in segment bursts, so its quiet baseline (the same measure over a quiet stretch before the
# round) is printed too. A player that was disconnected is counted, and replaced at once (as a
# player reloads): the gap then runs until the new one has media.
#
#   perl bench/failover.pl [rounds]          (default 10)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Time::HiRes qw(time sleep);
use Test::More;
use Mesh::Test qw(publish wait_until reap);
use Mesh::Master;
use Mesh::Node;
use Mesh::Watch;
use Mesh::Cut;

my $rounds = shift // 10;
my @hb = qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3);
my $master = Mesh::Master->new(args => \@hb);
my $key = $master->stream_key('cam1');
my $token = $master->viewer_token('cam1');
my (%node, %cut);
for ([qw(ingest-1 ingest)], [qw(root-1 root_relay)], [qw(root-2 root_relay)], [qw(edge-1 relay)], [qw(edge-2 relay)]) {
	my ($id, $role) = @$_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_' . ($role eq 'root_relay' ? 3 : 1) . '%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { mesh_rendition => 'source', mesh_manifest_wait => '30s' }) : ()));
	$t->allow_alert(qr/exited on signal 9/);
	$cut{$id} = Mesh::Cut->new(listen => $t->port(3), to => $t->port(1)) if $role eq 'root_relay';
	$t->run;
	$node{$id} = $t;
}
wait_until(sub { 5 == grep { $_->{alive} } values %{$master->nodes} }, 10) or die 'nodes';
sub rtmp { 'rtmp://127.0.0.1:' . $node{$_[0]}->port(1) . ($_[0] eq 'ingest-1' ? '/live' : '/relay') }
my $pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 3600);
my $live;
wait_until(sub { $live = $master->live->{cam1}; $live && @{$live->{edges}} }, 15) or die 'not placed';
my $edge = $live->{edges}[0]{to};
# The players of each kind: a player that was disconnected is replaced at once by a new one (a
# real player reloads), and counted; the gaps are taken over all of a kind's players.
my %url = (rtmp => rtmp($edge) . "/cam1?token=$token",
	hls => 'http://127.0.0.1:' . $node{$edge}->port(2) . "/hls/cam1/master.m3u8?token=$token");
my %players = map { ($_ => [Mesh::Watch->new($url{$_})]) } qw(rtmp hls);
my %dropped;
sub player { $players{$_[0]}[-1] }
sub video_since { my ($kind, $t) = @_; my $n = 0; $n += $_->video_since($t) for @{$players{$kind}}; $n }
sub replace_ended {
	my ($round) = @_;
	for my $kind (qw(rtmp hls)) {
		next unless player($kind)->ended;
		$dropped{$round}{$kind}++;
		push @{$players{$kind}}, Mesh::Watch->new($url{$kind});
	}
}
sub gap {
	my ($kind, $from) = @_;
	my @t = sort { $a <=> $b } map { $_->[0] } grep { $_->[1] =~ /^video/ && $_->[0] >= $from }
		map { @{$_->stamps} } @{$players{$kind}};
	my ($gap, $prev) = (0, $from);
	for my $t (@t) {
		$gap = $t - $prev if $t - $prev > $gap;
		$prev = $t;
	}
	return $gap;
}
wait_until(sub { video_since(rtmp => 0) > 30 && video_since(hls => 0) > 30 }, 40) or die 'players';

sub kill_node {
	my ($t) = @_;
	my $pid = $t->pid;
	kill 'KILL', $pid, split(' ', `pgrep -P $pid`);
	$t->{running} = 0;
	wait_until(sub { !kill 0, $pid }, 5);
}

my %gaps;
my %ended;
sub round {
	my ($kind, $fail) = @_;
	sleep 3;
	replace_ended('before');
	my $quiet = time;
	sleep 4;
	my $base = gap(hls => $quiet);
	my $t0 = time;
	$fail->();
	my $ok = wait_until(sub {
		replace_ended($kind);
		video_since(rtmp => time - 1) > 5 && video_since(hls => time - 1) > 5
	}, 40);
	push @{$gaps{$kind}{rtmp}}, gap(rtmp => $t0);
	push @{$gaps{$kind}{hls}}, gap(hls => $t0);
	push @{$gaps{$kind}{base}}, $base;
	$ended{$kind}++ unless $ok;
}

# The path from the ingest to the root relay feeding the stream is cut; thawed once the stream
# moved and the players have media again.
sub cut {
	my $root;
	wait_until(sub { my $l = $master->live->{cam1}; $root = $l && $l->{roots}[0] && $l->{roots}[0]{to} }, 30)
		or die 'cam1 not placed again';
	round(cut => sub {
		$cut{$root}->freeze;
		wait_until(sub { my $l = $master->live->{cam1}; $l && $l->{roots}[0] && $l->{roots}[0]{to} ne $root }, 20);
		wait_until(sub { video_since(rtmp => time - 1) > 5 }, 30);
		$cut{$root}->thaw;
	});
}

# edge: the other edge, carrying the stream for a viewer of its own (routed there), dies
# (SIGKILL, the whole node) until the master has taken it off the stream; the players at the
# stream's edge should not notice. It comes back after.
sub edge_round {
	my ($other) = grep { $_ ne $edge } qw(edge-1 edge-2);
	my $v = Mesh::Watch->new(rtmp($other) . "/cam1?token=$token");
	wait_until(sub { $v->video_since(0) > 30 }, 20) or die "no viewer at $other";
	round(edge => sub {
		kill_node($node{$other});
		wait_until(sub { my $l = $master->live->{cam1}; $l && !grep { $_->{to} eq $other } @{$l->{edges}} }, 20);
	});
	$v->stop;
	$node{$other}->run;
	wait_until(sub { $master->nodes->{$other}{alive} }, 15) or die "$other not back";
}

for my $i (1 .. $rounds) {
	my $placed;
	wait_until(sub { my $l = $master->live->{cam1}; $placed = $l && $l->{roots}[0] && $l->{roots}[0]{to} }, 30)
		or die 'cam1 not placed again';
	round(root => sub {
		my $root = $placed;
		kill_node($node{$root});
		wait_until(sub { my $l = $master->live->{cam1}; $l && $l->{roots}[0] && $l->{roots}[0]{to} ne $root }, 20);
		# back for the next round, after the players have the stream again
		wait_until(sub { video_since(rtmp => time - 1) > 5 }, 30);
		$node{$root}->run;
	});
	wait_until(sub { 5 == grep { $_->{alive} } values %{$master->nodes} }, 15);
	round('master TERM' => sub { $master->stop; $master->start });
	round('master KILL' => sub { $master->stop(kill => 1); $master->start });
	cut();
	edge_round();
}

sub pct {
	my ($p, @v) = @_;
	@v = sort { $a <=> $b } @v;
	return $v[int($p * $#v + 0.5)];
}
print "| failure | rounds | RTMP gap p50 | RTMP gap max | HLS gap p50 | HLS gap max | HLS quiet baseline p50 | players disconnected (RTMP / HLS) | rounds without media |\n";
print "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for my $kind ('root', 'master TERM', 'master KILL', 'cut', 'edge') {
	my $g = $gaps{$kind};
	printf "| %s | %d | %.1f s | %.1f s | %.1f s | %.1f s | %.1f s | %d / %d | %d |\n", $kind, scalar @{$g->{rtmp}},
		pct(0.5, @{$g->{rtmp}}), pct(1, @{$g->{rtmp}}), pct(0.5, @{$g->{hls}}), pct(1, @{$g->{hls}}),
		pct(0.5, @{$g->{base}}), $dropped{$kind}{rtmp} // 0, $dropped{$kind}{hls} // 0, $ended{$kind} // 0;
}
$_->stop for map { @$_ } values %players;
kill 'TERM', $pub;
reap($pub, 5);
$node{$_}->stop for grep { $node{$_}{running} } sort keys %node;
$_->stop for values %cut;
$master->stop;
done_testing();
