#!/usr/bin/perl

# Failover as a watching viewer sees it: the real master, an ingest, two root relays and two
# edges, a player that keeps reading at the edge the stream was placed on. The root relay
# feeding it dies (SIGKILL, the whole node): the edge keeps the stream, the master moves only
# its feed to the other root relay, and the player gets media again without being
# disconnected. The gap is recorded (bench/ measures it over many failovers).

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use File::Temp ();
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap);
use Mesh::Master;
use Mesh::Node;
use Mesh::Watch;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);
my $key = $master->stream_key('cam1');
my $token = $master->viewer_token('cam1');

my %node;
for ([qw(ingest-1 ingest)], [qw(root-1 root_relay)], [qw(root-2 root_relay)], [qw(edge-1 relay)], [qw(edge-2 relay)]) {
	my ($id, $role) = @$_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { mesh_rendition => 'source', mesh_manifest_wait => '30s' }) : ()));
	$t->run;
	$node{$id} = $t;
}
ok(wait_until(sub { 5 == grep { $_->{alive} } values %{$master->nodes} }, 10), 'five nodes alive');
# The largest step between consecutive video timestamps in a stream's segments on disk (its
# first rendition, init + chunks in order, the newest unbroken run), and when the oldest of
# them was written.
sub pts_jump {
	my ($dir) = @_;
	my $read = sub { open my $f, '<:raw', $_[0] or return; local $/; <$f> };
	my $init = $read->("$dir/init-0.m4s") // return (0, 0);
	my @n = sort { $a <=> $b } map { /chunk-0-(\d+)\.m4s$/ ? $1 : () } glob("$dir/chunk-0-*.m4s");
	my (@body, $oldest);
	for my $n (@n) {
		my $name = sprintf '%s/chunk-0-%05d.m4s', $dir, $n;
		my $mtime = (Time::HiRes::stat($name))[9];
		my $c = $read->($name);
		@body = () unless defined $c;    # removed meanwhile: only what follows is unbroken
		next unless defined $c;
		$oldest = $mtime unless @body;
		push @body, $c;
	}
	my ($fh, $file) = File::Temp::tempfile('mesh-pts-XXXXXX', TMPDIR => 1, UNLINK => 1);
	binmode $fh;
	print $fh $init, @body;
	close $fh;
	my @pts = map { chomp; $_ } `ffprobe -v error -select_streams v -show_entries packet=pts_time -of csv=p=0 $file`;
	my $jump = 0;
	for my $i (1 .. $#pts) {
		$jump = $pts[$i] - $pts[$i - 1] if $pts[$i] - $pts[$i - 1] > $jump;
	}
	return ($jump, $oldest // time);
}

# A node dies, all of it at once.
sub kill_node {
	my ($id) = @_;
	my $pid = $node{$id}->pid;
	kill 'KILL', $pid, split(' ', `pgrep -P $pid`);
	$node{$id}{running} = 0;
	wait_until(sub { !kill 0, $pid }, 5);
}
sub rtmp { 'rtmp://127.0.0.1:' . $node{$_[0]}->port(1) . ($_[0] eq 'ingest-1' ? '/live' : '/relay') }

my $pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 300);
my $live;
ok(wait_until(sub { $live = $master->live->{cam1}; $live && @{$live->{roots}} && @{$live->{edges}} }, 10), 'placed')
	or diag(explain($master->live));
my ($root, $edge) = ($live->{roots}[0]{to}, $live->{edges}[0]{to});
my ($other_root) = grep { $_ ne $root } qw(root-1 root-2);
note("cam1: ingest-1 → $root → $edge");

my $w = Mesh::Watch->new(rtmp($edge) . "/cam1?token=$token");
ok(wait_until(sub { $w->video_since(0) > 30 }, 20), "a viewer watches at $edge");
# And an HLS player there (its edge transcodes the stream).
my $hls = Mesh::Watch->new('http://127.0.0.1:' . $node{$edge}->port(2) . "/hls/cam1/master.m3u8?token=$token");
ok(wait_until(sub { $hls->video_since(0) > 30 }, 40), "an HLS player watches at $edge");

# The root relay dies, all of it at once.
kill_node($root);
my $killed = time;
ok(wait_until(sub { $w->video_since($killed + 0.5) > 30 }, 30), 'the watching viewer gets media again');
ok(!$w->ended, 'and was never disconnected');
# The edge's transcode rode through the gap in its feed: the playlist went on.
ok(wait_until(sub { $hls->video_since($killed + 0.5) > 30 }, 30), 'the HLS player gets media again');
ok(!$hls->ended, 'and was never disconnected (the transcode kept running)') or diag($node{$edge}->error_log);
note(sprintf('root relay death: %.1f s without video at the HLS player', $hls->longest_gap($killed)));
# Its output is continuous through the feed change: the new feed's timestamps (the
# broadcaster's, later by the gap) are brought back in line with the old ones
# (crates/mesh-core/src/media.rs, "-f live_flv -dts_delta_threshold"), so no segment holds a
# jump that hls.js or dash.js would stall on (a hole in the buffer, the playlist saying nothing).
my ($jump, $oldest) = pts_jump($node{$edge}->testdir . '/media/cam1');
note(sprintf('root relay death: the largest step between video timestamps in the segments since %.1f s before the death: %.2f s', $killed - $oldest, $jump));
cmp_ok($oldest, '<', $killed, 'the segments from before the feed change to now are on disk');
cmp_ok($jump, '<', 0.3, 'and their timestamps do not jump across the feed change');
$hls->stop;
my $gap = $w->longest_gap($killed);
note(sprintf('root relay death: %.1f s without video at the watching viewer', $gap));
# Seen by the data plane: the ingest's push to it failed, it asked for a heartbeat at once, and
# the master found the root relay's RTMP port closed (not three missed heartbeats).
like($master->log, qr/node dead: a peer's push to it failed.*node=$root|node=$root.*node dead: a peer's push to it failed/,
	'the master learnt of the death from the failed push');
$live = $master->live->{cam1};
is($live->{roots}[0]{to}, $other_root, "fed through $other_root");
ok((grep { $_->{to} eq $edge && !$_->{by_route} } @{$live->{edges}}), "$edge kept the stream (not routed there again)")
	or diag(explain($live));
ok(log_lines($node{$other_root}, qr/publish accepted: stream "cam1" from ingest-1/), "$other_root takes the push");
$w->stop;

# A viewer at the other edge routes the stream there; then the master restarts and forgets
# that route. The edge's table loses the stream while its viewer watches: the edge asks for a
# route again at once, and the viewer gets media back without reconnecting.
my ($routed) = grep { $_ ne $edge } qw(edge-1 edge-2);
my $w2 = Mesh::Watch->new(rtmp($routed) . "/cam1?token=$token");
ok(wait_until(sub { $w2->video_since(0) > 30 }, 20), "a viewer watches at $routed (routed there)");
# Every push into the nodes that carry cam1 now, counted: a restarted master hands each hop
# that survives the key it had (crates/mesh-master/src/hop_keys.rs), so none reconnects.
sub pushes_in { my ($id) = @_; scalar log_lines($node{$id}, qr/publish accepted: stream "cam1"/) }
my @carry = ($other_root, $edge, $routed);
my %pushed = map { ($_ => pushes_in($_)) } @carry;
# An HLS player there too (its transcode starts meanwhile; the edge death below uses it).
my $hls2 = Mesh::Watch->new('http://127.0.0.1:' . $node{$routed}->port(2) . "/hls/cam1/master.m3u8?token=$token");
$master->stop;
my $stopped = time;
$master->start;
ok(wait_until(sub { $w2->video_since(time - 1) > 10 && $w2->video_since($stopped + 1) > 30 }, 40),
	'after a master restart: the watching viewer has media') or diag($node{$routed}->error_log);
ok(!$w2->ended, 'and was never disconnected');
note(sprintf('master restart: %.1f s without video at the routed edge', $w2->longest_gap($stopped)));

# Killed this time: the restarted master learns from the edge's heartbeat (its viewer, its
# stream) that the stream is watched there, during the grace before any table goes out, so the
# table it hands the edge still carries it (crates/mesh-master's unit tests check that rule).
my $asked = () = $node{$routed}->error_log =~ /route for stream "cam1": routed/g;
$master->stop(kill => 1);
$stopped = time;
$master->start;
ok(wait_until(sub { $w2->video_since(time - 1) > 10 && $w2->video_since($stopped + 1) > 30 }, 40),
	'after a master KILL: the watching viewer has media') or diag($node{$routed}->error_log);
ok(!$w2->ended, 'and was never disconnected');
note(sprintf('master KILL: %.1f s without video at the routed edge', $w2->longest_gap($stopped)));
$live = $master->live->{cam1};
ok((grep { $_->{to} eq $routed } @{$live->{edges}}), "the new master has $routed on cam1")
	or diag(explain($live));
my $asked_after = () = $node{$routed}->error_log =~ /route for stream "cam1": routed/g;
note("$routed: $asked routes asked before the KILL, $asked_after after");
# A moment for a new table to reach the nodes (the grace is over): none of their pushes was
# taken again.
ok(wait_until(sub { my $n = $master->nodes; !grep { $n->{$_}{table_version} != $n->{$_}{table_version_sent} } @carry }, 10),
	'the nodes have the restarted master\'s tables');
is(pushes_in($_), $pushed{$_}, "$_: its push of cam1 was not reconnected across the master restarts") for @carry;

# An edge dies (SIGKILL, the whole node) with viewers at both edges. The viewers at the other
# edge (RTMP and HLS) never notice: their feed is another hop. The master takes the dead edge
# off the stream (the root relay's push to it failed: the suspect probe finds it closed), a new
# viewer at the surviving edge plays at once, and the edge, back, gets the stream on a play.
my $victim = $edge;
my $wv = Mesh::Watch->new(rtmp($victim) . "/cam1?token=$token");
my $start = time;
ok(wait_until(sub { $wv->video_since(0) > 10 }, 20), "a viewer watches at $victim too");
# The baseline of "at once": a new viewer at an edge that has the stream (ffprobe's own probe
# of the stream is most of it).
note(sprintf('a new viewer at %s (steady) has video after %.1f s', $victim, time - $start));
ok(wait_until(sub { $hls2->video_since(time - 2) > 10 }, 30), "the HLS player at $routed has media");
my $fed = log_lines($node{$routed}, qr/publish accepted: stream "cam1"/);
kill_node($victim);
$killed = time;
ok(wait_until(sub { my $l = $master->live->{cam1}; $l && !grep { $_->{to} eq $victim } @{$l->{edges}} }, 6),
	"the master takes $victim off cam1") or diag(explain($master->live));
note(sprintf('edge death: %s off cam1 after %.1f s', $victim, time - $killed));
my $fresh = Mesh::Watch->new(rtmp($routed) . "/cam1?token=$token");
my $asked_at = time;
ok(wait_until(sub { $fresh->video_since(0) > 10 }, 5), "a new viewer at $routed plays at once");
note(sprintf('edge death: a new viewer at %s has video after %.1f s', $routed, time - $asked_at));
$fresh->stop;
# The players at the surviving edge, a few seconds on: no gap beyond a bound, never disconnected.
ok(wait_until(sub { $w2->video_since($killed + 3) > 10 && $hls2->video_since($killed + 3) > 10 }, 20),
	"the players at $routed go on");
my ($rgap, $hgap) = ($w2->longest_gap($killed), $hls2->longest_gap($killed));
note(sprintf('edge death: %.1f s without video at the RTMP viewer of %s, %.1f s at its HLS player', $rgap, $routed, $hgap));
cmp_ok($rgap, '<', 1.5, "the RTMP viewer at $routed saw no gap");
cmp_ok($hgap, '<', 3, "the HLS player at $routed saw no gap beyond its segment bursts");
ok(!$w2->ended && !$hls2->ended, "and neither was disconnected") or diag($node{$routed}->error_log);
is(scalar(log_lines($node{$routed}, qr/publish accepted: stream "cam1"/)), $fed, "$routed: its feed was not replaced");
$wv->stop;
$node{$victim}->run;
ok(wait_until(sub { $master->nodes->{$victim}{alive} }, 10), "$victim is back");
my $again = Mesh::Watch->new(rtmp($victim) . "/cam1?token=$token");
ok(wait_until(sub { $again->video_since(0) > 30 }, 15), "a viewer at $victim, back, gets the stream")
	or diag(explain($master->live));
$again->stop;

# The broadcaster drops and comes back: the stream is placed anew, its fan-out on the other
# (idle) edge. The edge whose viewer still waits has nothing feeding it and asks for a route
# itself (every tick while starved), if the master did not keep it waiting from its last
# heartbeat: the viewer gets the stream back where it is.
my $routes = () = $node{$routed}->error_log =~ /route for stream "cam1": routed/g;
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { !$master->live->{cam1} }, 10), 'the broadcaster left: cam1 not live');
$pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 300);
my $back = time;
ok(wait_until(sub { $w2->video_since($back) > 30 }, 30), "the viewer waiting at $routed gets the stream again")
	or diag(explain($master->live));
ok(!$w2->ended, 'without reconnecting');
# Either it asked (starved, every tick), or the master had kept it waiting for the stream
# from its last heartbeat that showed the viewer (the same as a route request).
my $now = () = $node{$routed}->error_log =~ /route for stream "cam1": routed/g;
note("$routed: $routes routes asked before, $now after");
$w2->stop;
$hls2->stop;

kill 'TERM', $pub;
reap($pub, 5);
$node{$_}->stop for grep { $node{$_}{running} } sort keys %node;
$master->stop;
unlike($master->log, qr/panic/, 'master: no panic');
done_testing();
