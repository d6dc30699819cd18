#!/usr/bin/perl

# A network cut of the ingest → root relay push, as a watching viewer sees it: the real master,
# an ingest, two root relays (each reached through a path the test can cut, t/lib/Mesh/Cut.pm:
# they announce the path's port) and two edges, an RTMP player and an HLS player at the edge
# the stream was placed on. The path to the root relay feeding the stream is frozen (nothing
# forwarded, every connection left open, the root relay alive and answering the master): the
# ingest's push hears nothing any more (mesh_push_timeout), is closed and reported `stalled` at
# once; the master probes the root relay, which answers, so only that stream's hop moves to the
# other root relay. The players are never disconnected and get media again; the gap is recorded.
# Then the path root relay → edge is cut (the open push into the edge black-holed, the edge
# alive and reachable by new connections): the root relay's push stalls and is reported, the
# master probes the edge, which answers, so the edge's feed of the stream moves to another root
# relay (placed on the stream for it). The watching RTMP player is never disconnected.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap);
use Mesh::Master;
use Mesh::Node;
use Mesh::Watch;
use Mesh::Cut;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);
my $key = $master->stream_key('cam1');
my $token = $master->viewer_token('cam1');

my (%node, %cut);
for ([qw(ingest-1 ingest)], [qw(root-1 root_relay)], [qw(root-2 root_relay)], [qw(edge-1 relay)], [qw(edge-2 relay)]) {
	my ($id, $role) = @$_;
	# A root relay or an edge is pushed to through its path (PORT_3 → PORT_1).
	my $cut = $role ne 'ingest';
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_' . ($cut ? 3 : 1) . '%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { mesh_rendition => 'source', mesh_manifest_wait => '30s' }) : ()));
	$cut{$id} = Mesh::Cut->new(listen => $t->port(3), to => $t->port(1)) if $cut;
	$t->run;
	$node{$id} = $t;
}
ok(wait_until(sub { 5 == grep { $_->{alive} } values %{$master->nodes} }, 10), 'five nodes alive');
sub rtmp { 'rtmp://127.0.0.1:' . $node{$_[0]}->port(1) . ($_[0] eq 'ingest-1' ? '/live' : '/relay') }

my $pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 300);
my $live;
ok(wait_until(sub { $live = $master->live->{cam1}; $live && @{$live->{roots}} && @{$live->{edges}} }, 10), 'placed')
	or diag(explain($master->live));
my ($root, $edge) = ($live->{roots}[0]{to}, $live->{edges}[0]{to});
my ($other_root) = grep { $_ ne $root } qw(root-1 root-2);
note("cam1: ingest-1 → (path) → $root → $edge");
ok(wait_until(sub { log_lines($node{$root}, qr/publish accepted: stream "cam1" from ingest-1/) }, 10),
	"$root takes the push through its path");

my $w = Mesh::Watch->new(rtmp($edge) . "/cam1?token=$token");
my $hls = Mesh::Watch->new('http://127.0.0.1:' . $node{$edge}->port(2) . "/hls/cam1/master.m3u8?token=$token");
ok(wait_until(sub { $w->video_since(0) > 30 }, 20), "a viewer watches at $edge");
ok(wait_until(sub { $hls->video_since(0) > 30 }, 40), "an HLS player watches at $edge");

# The path ingest → root relay is cut: packets dropped, connections open, the root relay alive.
$cut{$root}->freeze;
my $cut_at = time;
ok(wait_until(sub { $w->video_since($cut_at + 0.5) > 30 }, 20), 'the watching viewer gets media again')
	or diag(explain($master->live), $node{'ingest-1'}->error_log);
my $back = time - $cut_at;
ok(!$w->ended, 'and was never disconnected');
ok(wait_until(sub { $hls->video_since($cut_at + 0.5) > 30 }, 20), 'the HLS player gets media again');
ok(!$hls->ended, 'and was never disconnected') or diag($node{$edge}->error_log);
my $gap = $w->longest_gap($cut_at);
note(sprintf('ingest → root cut: %.1f s without video at the watching viewer (media back %.1f s after the cut)', $gap, $back));
note(sprintf('ingest → root cut: %.1f s without video at the HLS player', $hls->longest_gap($cut_at)));
ok($w->video_since($cut_at + 0.5) > 30 && $gap < 8, 'media back within 8 s of the cut');

# Seen by the data plane (the push stalled), the root relay kept (it answers), only the hop moved.
ok(log_lines($node{'ingest-1'}, qr/push of stream "cam1" to node "$root" stalled/), 'the ingest saw its push stall');
like($master->log, qr/path dead.*(node=$root.*to=$other_root|to=$other_root.*node=$root)/, 'the master moved the hop');
unlike($master->log, qr/node dead.*node=$root|node=$root.*node dead/, "and never declared $root dead");
ok($master->nodes->{$root}{alive}, "$root alive");
$live = $master->live->{cam1};
is($live->{roots}[0]{to}, $other_root, "fed through $other_root");
ok((grep { $_->{to} eq $edge && $_->{from} eq $other_root && !$_->{by_route} } @{$live->{edges}}),
	"$edge kept the stream, fed by $other_root") or diag(explain($live));
ok(log_lines($node{$other_root}, qr/publish accepted: stream "cam1" from ingest-1/), "$other_root takes the push");
$hls->stop;

# The path root relay → edge is cut (the first root relay's path healed). The push into the
# edge is read by no one and stays open; new connections (the probe, another push) get through.
$cut{$root}->thaw;
$cut{$edge}->freeze_open;
$cut_at = time;
ok(wait_until(sub { $w->video_since($cut_at + 0.5) > 30 }, 20), 'root → edge cut: the watching viewer gets media again')
	or diag(explain($master->live), $node{$edge}->error_log);
$back = time - $cut_at;
ok(!$w->ended, 'and was never disconnected');
$gap = $w->longest_gap($cut_at);
note(sprintf('root → edge cut: %.1f s without video at the watching viewer (media back %.1f s after the cut)', $gap, $back));
ok($w->video_since($cut_at + 0.5) > 30 && $gap < 8, 'media back within 8 s of the cut');
ok(log_lines($node{$other_root}, qr/push of stream "cam1" to node "$edge" stalled/), "$other_root saw its push stall");
like($master->log, qr/path dead.*(node=$edge.*to=$root|to=$root.*node=$edge)/, "the master moved the feed of $edge");
unlike($master->log, qr/node dead.*node=$edge|node=$edge.*node dead/, "and never declared $edge dead");
$live = $master->live->{cam1};
ok((grep { $_->{to} eq $edge && $_->{from} eq $root } @{$live->{edges}}), "$edge kept the stream, fed by $root")
	or diag(explain($live));
$w->stop;

kill 'TERM', $pub;
reap($pub, 5);
$cut{$_}->stop for sort keys %cut;
$node{$_}->stop for grep { $node{$_}{running} } sort keys %node;
$master->stop;
unlike($master->log, qr/panic/, 'master: no panic');
done_testing();
